"""pix2pix end to end with the CycleGAN plugin blocked (the engine needs nothing of it): the demo and an aligned
folder train, resume bit for bit, export, translate, and `i2i eval --data DIR --split test` scores the held-out
pairs beside identity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import one_line_error
from i2i import load_generator
from i2i.plugins import BLOCK_ENV
from i2i_pix2pix import demo

#: tiny official-shaped networks at 32 px (a U-Net of 5 levels takes multiples of 32)
TINY_P2P = ["generator=unet", "generator.num_downs=5", "generator.ngf=8", "discriminator.ndf=8", "--size", "32",
            "--load-size", "36", "--device", "cpu", "train.log_every=1"]


@pytest.fixture(scope="module")
def aligned_data(tmp_path_factory) -> Path:
    """A small aligned dataset (A|B side by side) cut from the pix2pix demo: 6 train and 3 test pairs."""
    full = demo.build(tmp_path_factory.mktemp("p2p") / "demo")
    root = tmp_path_factory.mktemp("aligned")
    for split, n in (("train", 6), ("test", 3)):
        (root / split).mkdir()
        for src in sorted((full / split).iterdir())[:n]:
            shutil.copy(src, root / split / src.name)
    return root


@pytest.fixture(autouse=True)
def no_cyclegan(monkeypatch, tmp_path_factory):
    monkeypatch.setenv(BLOCK_ENV, "cyclegan")
    monkeypatch.setenv("I2I_HOME", str(tmp_path_factory.getbasetemp() / "home"))


def _nets(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    return torch.load(path / "checkpoints" / "last.pt", weights_only=True)["nets"]


def test_demo_trains_without_the_cyclegan_plugin(cli, tmp_path):
    res = cli("train", "--method", "pix2pix", "--out", tmp_path / "run", "--max-steps", "3", "--device", "cpu",
              "validation.every=3", "train.log_every=1")
    assert res.exit_code == 0, res.stderr
    assert "No --data given: training on the demo of pix2pix" in res.stderr
    assert "validation at step 3: psnr" in res.stderr and "(identity" in res.stderr
    out = tmp_path / "run"
    assert (out / "G.pt").is_file() and (out / "G_best.pt").is_file() and not list(out.glob("G_*B.pt"))
    record = torch.load(out / "G.pt", weights_only=True)
    assert record["component"]["name"] == "unet" and record["provenance"]["generator_plugin"] == "components"
    assert record["provenance"]["network"] == "G" and record["provenance"]["domains"] == ["A", "B"]
    assert str(out / "G.pt") in res.stdout


def test_aligned_folder_trains_resumes_exactly_exports_translates_and_evals(cli, aligned_data, tmp_path):
    args = ["train", "--method", "pix2pix", "--data", aligned_data, *TINY_P2P]
    assert cli(*args, "--out", tmp_path / "whole", "--max-steps", "4").exit_code == 0
    res = cli(*args, "--out", tmp_path / "half", "--max-steps", "2")
    assert res.exit_code == 0, res.stderr
    res = cli("train", "--out", tmp_path / "half", "--resume", "--max-steps", "4")
    assert res.exit_code == 0, res.stderr
    whole, half = _nets(tmp_path / "whole"), _nets(tmp_path / "half")
    assert set(whole) == {"G", "D"}
    for net in whole:  # batch norm's running statistics and dropout's draws included
        for key, value in whole[net].items():
            assert torch.equal(value, half[net][key]), f"{net}.{key}"

    G = load_generator(tmp_path / "whole" / "G.pt")
    assert not G.training  # exports run in eval mode: dropout off, batch norm's running statistics
    out = tmp_path / "translated"
    res = cli("translate", aligned_data / "test", "--ckpt", tmp_path / "whole" / "G.pt", "--out", out)
    assert res.exit_code == 0, res.stderr
    assert len(list(out.iterdir())) == 3

    report = tmp_path / "report.json"
    res = cli("eval", "--ckpt", tmp_path / "whole" / "G.pt", "--data", aligned_data, "--split", "test",
              "--json", report)
    assert res.exit_code == 0, res.stderr
    scores = json.loads(report.read_text())["scores"]
    assert set(scores) == {"psnr", "ssim", "mae"}
    assert scores["psnr"]["identity"] == pytest.approx(scores["psnr"]["identity"]) and scores["psnr"]["identity"] < 40
    assert "on 3 image(s)" in res.stdout and "identity" in res.stdout


def test_direction_btoa_swaps_the_input(cli, aligned_data, tmp_path):
    res = cli("train", "--method", "pix2pix", "--data", aligned_data, *TINY_P2P, "--out", tmp_path / "r",
              "--max-steps", "1", "method.direction=BtoA")
    assert res.exit_code == 0, res.stderr
    assert torch.load(tmp_path / "r" / "G.pt", weights_only=True)["provenance"]["domains"] == ["B", "A"]


def test_paired_data_errors_are_one_line(cli, aligned_data, tmp_path):
    one_line_error(cli("train", "--method", "pix2pix", "--data", aligned_data, *TINY_P2P, "--out", tmp_path / "u",
                       "data=unaligned"), "pix2pix learns from pairs", "data=aligned")
    one_line_error(cli("eval", "--ckpt", tmp_path / "none.pt", "--data", aligned_data, "--source", aligned_data),
                   "give one or the other")
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    one_line_error(cli("train", "--method", "pix2pix", "--data", empty, *TINY_P2P, "--out", tmp_path / "e"),
                   str(empty / "train"))


def test_cyclegan_validates_and_evals_on_the_unaligned_test_split(cli, demo_data, tmp_path, monkeypatch):
    """The unaligned dataset's held-out pairs are testA/testB matched by name, each way round."""
    monkeypatch.delenv(BLOCK_ENV)
    out = tmp_path / "r"
    res = cli("train", "--method", "cyclegan", "--data", demo_data, "--out", out, "--max-steps", "2",
              "generator=resnet_6blocks", "generator.ngf=8", "discriminator.ndf=8", "--size", "32", "--load-size",
              "36", "--device", "cpu", "validation.every=2", "validation.source=null", "validation.split=test",
              "validation.max_images=3")
    assert res.exit_code == 0, res.stderr
    assert "validation at step 2: psnr" in res.stderr
    for name in ("G_AB", "G_BA"):
        report = tmp_path / f"{name}.json"
        res = cli("eval", "--ckpt", out / f"{name}.pt", "--data", demo_data, "--split", "test", "--json", report)
        assert res.exit_code == 0, res.stderr
        assert json.loads(report.read_text())["counts"]["truth"] == len(list((demo_data / "testA").iterdir()))
    one_line_error(cli("train", "--method", "cyclegan", "--data", demo_data, "--out", tmp_path / "x",
                       "validation.every=2", "validation.split=test", "validation.source=testA"),
                   "validation.split and validation.source (testA) both say what to validate on")


def test_more_user_errors_are_one_line(cli, aligned_data, tmp_path):
    train = ["train", "--method", "pix2pix", "--data", aligned_data, *TINY_P2P, "--out", tmp_path / "r"]
    one_line_error(cli(*train, "losses.l1=lsgan"), "losses.l1: 'lsgan' is not a loss between two images")
    one_line_error(cli(*train, "--batch-size", "2", "data.preprocess=none"), "needs images of one size")
    ckpt = tmp_path / "G.pt"
    assert cli(*train[:-2], "--out", tmp_path / "ok", "--max-steps", "1").exit_code == 0
    record = torch.load(tmp_path / "ok" / "G.pt", weights_only=True)
    one_line_error(cli("eval", "--ckpt", tmp_path / "ok" / "G.pt", "--source", aligned_data / "test", "--truth",
                       aligned_data / "test2", "--dataset", "paired"), "--dataset chooses among", "needs --data")
    one_line_error(cli("eval", "--ckpt", tmp_path / "ok" / "G.pt", "--data", aligned_data, "--direction", "BtoA"),
                   "maps A→B, not BtoA")
    del record["provenance"]["domains"]  # as an imported generator: which way it maps is not recorded
    torch.save(record, ckpt)
    one_line_error(cli("eval", "--ckpt", ckpt, "--data", aligned_data), "say it with --direction AtoB")
    res = cli("eval", "--ckpt", ckpt, "--data", aligned_data, "--direction", "AtoB")
    assert res.exit_code == 0, res.stderr
