"""The `i2i train` command line: what it refuses before anything runs, where a run's data folder is recorded, what
resuming keeps of a hand-edited config.yaml; and every command's help (-h, usage lines)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY, one_line_error
from i2i.checkpoint import safe_load


def _root(out: Path) -> str:
    return yaml.safe_load((out / "config.yaml").read_text())["data"]["root"]


def test_a_relative_data_folder_is_recorded_absolute_and_a_moved_one_asks_for_data(cli, small_data, tmp_path,
                                                                                   monkeypatch):
    """--data relative to the current folder is stored absolute, so the run resumes from anywhere; when its data
    folder is gone, resuming says to pass --data DIR, and does so with it."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    res = cli("train", "-m", "cyclegan", "--data", "data", "--out", "run", "--max-steps", "1", *TINY)
    assert res.exit_code == 0, res.stderr
    assert _root(out) == str(small_data)
    assert safe_load(out / "checkpoints" / "last.pt")["config"]["data"]["root"] == str(small_data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = cli("train", "--out", out, "--resume", "--max-steps", "2")
    assert res.exit_code == 0, res.stderr
    moved = tmp_path / "moved"
    shutil.move(small_data, moved)
    res = cli("train", "--out", out, "--resume", "--max-steps", "3")
    one_line_error(res, f"this run's data folder {small_data} does not exist; pass --data DIR")
    assert safe_load(out / "checkpoints" / "last.pt")["step"] == 2
    res = cli("train", "--out", out, "--resume", "--max-steps", "3", "--data", "../moved")
    assert res.exit_code == 0, res.stderr
    assert _root(out) == str(moved) and safe_load(out / "checkpoints" / "last.pt")["step"] == 3


@pytest.mark.parametrize("how", ["config file", "override"])
def test_data_root_is_relative_to_its_config_file_or_to_the_current_folder(cli, small_data, tmp_path, monkeypatch,
                                                                           how):
    """A relative data.root in a --config file is relative to that file's folder; data.root=DIR on the command
    line, to the current folder. Either way the run records it absolute."""
    (tmp_path / "configs" / "sub").mkdir(parents=True)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    if how == "config file":  # from the current folder, ../../data would be another folder
        (tmp_path / "configs" / "sub" / "mine.yaml").write_text("method: cyclegan\ndata: {root: ../../data}\n")
        args = ["--config", "../configs/sub/mine.yaml"]
    else:
        args = ["-m", "cyclegan", "data.root=../data"]
    res = cli("train", *args, "--out", tmp_path / "run", "--max-steps", "1", *TINY)
    assert res.exit_code == 0, res.stderr
    assert _root(tmp_path / "run") == str(small_data)
    assert "6 images/epoch" in res.stderr  # small_data's count, not the demo's


def test_resume_keeps_a_hand_edited_config_yaml_for_a_new_run(cli, small_data, tmp_path):
    """Resuming rewrites config.yaml with what the run uses: the edited file is kept as config.edited.yaml, and the
    advice to start a new run from the edits points at that copy, which does start one."""
    out = tmp_path / "run"
    assert cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "1", *TINY).exit_code == 0
    path, kept = out / "config.yaml", out / "config.edited.yaml"
    edited = path.read_text().replace("ngf: 8", "ngf: 16")
    path.write_text(edited)
    res = cli("train", "--out", out, "--resume", "--max-steps", "2")
    assert res.exit_code == 0, res.stderr
    warnings = [li for li in res.stderr.splitlines() if li.startswith("warning: ")]
    assert len(warnings) == 1, res.stderr
    assert f"{path} was edited (generator.params.ngf)" in warnings[0]
    assert f"kept as {kept}" in warnings[0]
    assert f"start a new run from the kept file (--config {kept} --out NEW_DIR)" in warnings[0]  # data.root absolute
    assert kept.read_text() == edited
    assert "ngf: 8" in path.read_text()  # rewritten with what the run uses
    new = tmp_path / "new"
    res = cli("train", "--config", kept, "--out", new, "--max-steps", "1")
    assert res.exit_code == 0, res.stderr
    assert safe_load(new / "checkpoints" / "last.pt")["config"]["networks"]["generator"]["params"]["ngf"] == 16
    assert "6 images/epoch" in res.stderr
    res = cli("train", "--out", out, "--resume", "--max-steps", "3")  # nothing edited since: no warning, copy kept
    assert res.exit_code == 0 and "warning" not in res.stderr, res.stderr
    assert kept.read_text() == edited


@pytest.mark.parametrize(
    "pair, message",
    [
        (["--max-steps", "1", "train.max_steps=3"], "--max-steps 1 and train.max_steps=3 both set train.max_steps"),
        (["--data", "DATA", "data.root=ds2"], "--data DATA and data.root=ds2 both set data.root"),
        (["--device", "cpu", "train.device=cuda"], "--device cpu and train.device=cuda both set train.device"),
        (["--size", "32", "data.crop_size=64"], "--size 32 and data.crop_size=64 both set data.params.crop_size"),
        (["--seed", "1", "train={seed: 2}"], "--seed 1 and train={seed: 2} both set train.seed"),
        (["--no-compile", "train.compile=true"], "--no-compile and train.compile=true both set train.compile"),
        (["--strict", "data.params.strict=false"], "--strict and data.params.strict=false both set data.params.strict"),
        (["-m", "cyclegan", "method=other"], "--method cyclegan and method=other both set method.name"),
    ],
)
def test_an_option_and_an_override_of_the_same_key_are_refused(cli, small_data, tmp_path, pair, message):
    out = tmp_path / "run"
    pair = [str(small_data) if a == "DATA" else a for a in pair]
    message = message.replace("DATA", str(small_data))
    base = [*([] if "-m" in pair else ["-m", "cyclegan"]), *([] if "--data" in pair else ["--data", small_data])]
    one_line_error(cli("train", *base, "--out", out, *pair), message, "keep one of them")
    assert not out.exists()


@pytest.mark.parametrize("nproc", ["0", "-1"])
def test_nproc_below_one_is_refused(cli, small_data, tmp_path, nproc):
    out = tmp_path / "run"
    one_line_error(cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--nproc", nproc),
                   "--nproc must be at least 1", f"got {nproc}")
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("nproc", [[], ["--nproc", "2"]])
def test_cuda_without_cuda_is_said_so_also_under_nproc(cli, small_data, tmp_path, nproc):
    out = tmp_path / "run"
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--device", "cuda", *nproc)
    one_line_error(res, "device 'cuda' requested but CUDA is not available; use --device cpu")
    assert "local rank" not in res.stderr and not out.exists()


def test_a_torchrun_rank_asked_for_cuda_without_cuda_says_so(monkeypatch):
    from i2i import I2IError
    from i2i.distributed import setup

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(I2IError, match="CUDA is not available"):
        setup("cuda")


@pytest.mark.parametrize("device", ["mps", "xpu", "meta"])
def test_a_device_torch_cannot_use_here_is_refused_before_the_run(cli, small_data, tmp_path, monkeypatch, device):
    backend = torch.backends.mps if device == "mps" else getattr(torch, device, None)
    if getattr(backend, "is_available", lambda: False)():
        pytest.skip(f"{device} is available here")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--device", device)
    one_line_error(res, f"device '{device}' is not available here; use auto or cpu")
    assert not out.exists()


@pytest.mark.parametrize("option", ["--out", "--data"])
def test_an_empty_out_or_data_is_refused(cli, small_data, tmp_path, monkeypatch, option):
    """--out "" would train into the current folder (and --data "" read it): refused, nothing written."""
    monkeypatch.chdir(tmp_path)
    args = {"--out": ["--data", small_data], "--data": ["--out", tmp_path / "run"]}[option]
    one_line_error(cli("train", "-m", "cyclegan", *args, option, "", "--max-steps", "1", *TINY),
                   f"{option} is empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


COMMANDS = ["train", "list", "plugins", "translate", "video", "import-official", "export", "inspect", "eval"]


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_dash_h_shows_the_help_of_every_command(cli, command):
    short, long = cli(*command, "-h"), cli(*command, "--help")
    assert short.exit_code == 0 and short.stdout.startswith("Usage: "), short.stdout + short.stderr
    assert short.stdout == long.stdout


@pytest.mark.parametrize(
    "command, usage, rows",
    [
        ("translate", "[OPTIONS] INPUTS...", ["INPUTS...  image files"]),
        ("video", "[OPTIONS] SRC", ["SRC  input video"]),
        ("import-official", "[OPTIONS] SRC", ["SRC  official generator weights"]),
        ("inspect", "[OPTIONS] CKPT", ["CKPT  exported generator"]),
        ("list", "[OPTIONS] [KIND]", ["KIND  one of"]),
        ("train", "[OPTIONS] [KEY=VALUE]...", ["KEY=VALUE...  config overrides", "--data DIR", "-o, --out DIR"]),
        ("export", "[OPTIONS]", []),
    ],
)
def test_usage_lines_name_arguments_as_users_write_them(cli, command, usage, rows):
    text = cli(command, "--help").stdout
    assert re.match(rf"Usage: \S+ {re.escape(command)} {re.escape(usage)}\n", text), text
    for row in rows:
        assert re.search(rf"^ +{re.escape(row)}", text, re.M), (row, text)
    assert not re.search(r"\{\w+\}|<list\[", text), text


def test_a_missing_argument_is_named_as_in_the_usage_line(cli):
    res = cli("translate")
    assert res.exit_code == 2 and "Missing argument 'INPUTS...'" in res.stderr, res.stderr
