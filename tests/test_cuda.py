"""CUDA checks, run by benchmarks/gpu_check.sh on a GPU machine (skipped elsewhere)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import psnr8, run_settings
from i2i import load_generator
from i2i.images import read_image
from i2i.translate import Translator

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

GPU = ["generator=resnet_6blocks", "generator.ngf=16", "discriminator.ndf=16", "--size", "64", "--load-size", "72",
       "train.log_every=1", "--device", "cuda"]


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_training_on_cuda(cli, small_data, tmp_path, precision):
    out = tmp_path / precision
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "4", *GPU,
              "--precision", precision)
    assert res.exit_code == 0, res.stderr
    lines = [json.loads(li) for li in (out / "log.jsonl").read_text().splitlines()]
    settings = lines[0]["settings"]
    assert settings["precision"] == precision and settings["channels_last"] and settings["fused_adam"]
    assert all(np.isfinite(list(r["losses"].values())).all() for r in lines if "losses" in r)
    G = load_generator(out / "G_AB.pt")  # exported weights load on the CPU
    assert G(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_auto_precision_is_bf16_on_cuda(cli, small_data, tmp_path):
    out = tmp_path / "auto"
    assert cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "1", *GPU).exit_code == 0
    settings = run_settings(out)
    assert settings["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")


def test_cpu_run_continues_on_cuda(cli, small_data, tmp_path):
    """A run started on the CPU (contiguous, foreach Adam) resumes on a GPU (channels_last, fused Adam)."""
    out = tmp_path / "run"
    cpu = [a if a != "cuda" else "cpu" for a in GPU]
    assert cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "2", *cpu).exit_code == 0
    res = cli("train", "--out", out, "--resume", "--max-steps", "4", "--device", "cuda")
    assert res.exit_code == 0, res.stderr
    lines = [json.loads(li) for li in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "losses" in r][-2:] == [3, 4]
    assert all(np.isfinite(list(r["losses"].values())).all() for r in lines if "losses" in r)


def test_cuda_resume_is_exact(cli, small_data, tmp_path):
    """Resuming on a GPU continues bit for bit (up to float noise) with deterministic kernels. The U-Net is used
    because ReflectionPad2d's CUDA backward accumulates with atomics, which no flag makes deterministic, and Adam's
    first steps turn gradient noise on the biases before instance norm into ±lr updates."""
    gpu = [a for a in GPU if not a.startswith("generator=")]  # a second generator= would be refused
    common = ["--data", small_data, *gpu, "generator=unet_128", "--size", "128", "--load-size", "136",
              "--precision", "fp32", "train.cudnn_benchmark=false"]
    a, b = tmp_path / "a", tmp_path / "b"
    flags = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic = True
    try:
        assert cli("train", "-m", "cyclegan", "--out", a, "--max-steps", "4", *common).exit_code == 0
        assert cli("train", "-m", "cyclegan", "--out", b, "--max-steps", "2", *common).exit_code == 0
        assert cli("train", "--out", b, "--resume", "--max-steps", "4", "--device", "cuda").exit_code == 0
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags
    na = torch.load(a / "checkpoints" / "last.pt", weights_only=True)["nets"]
    nb = torch.load(b / "checkpoints" / "last.pt", weights_only=True)["nets"]
    for net in na:
        for key in na[net]:
            assert torch.allclose(na[net][key], nb[net][key], atol=1e-6), (net, key)


def test_half_precision_translation_preserves_output(make_ckpt, demo_data):
    G = load_generator(make_ckpt())
    img = read_image(sorted((demo_data / "testA").iterdir())[0], 3)
    full = next(Translator(G, "cuda", precision="fp32").translate_arrays([img]))
    auto = Translator(load_generator(make_ckpt()), "cuda")
    assert auto.precision == "fp16" and auto.memory_format == torch.channels_last
    half = next(auto.translate_arrays([img]))
    assert psnr8(half, full) > 35


def test_images_of_their_own_sizes_on_cuda(cli, small_data, tmp_path):
    """data.preprocess=none on a GPU (channels_last, bf16): A and B of different sizes train, and an image too small
    for the networks is refused up front by name (the size check runs meta copies of networks that live on the GPU)."""
    import cv2

    for f in (small_data / "trainB").iterdir():
        cv2.imwrite(str(f), cv2.resize(cv2.imread(str(f)), (96, 64)))
    out = tmp_path / "r"
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, "--max-steps", "3", *GPU,
              "data.preprocess=none")
    assert res.exit_code == 0, res.stderr
    tiny = small_data / "trainB" / "zz_tiny.png"
    cv2.imwrite(str(tiny), cv2.resize(cv2.imread(str(sorted((small_data / "trainB").iterdir())[0])), (6, 6)))
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", tmp_path / "r2", "--max-steps", "2", *GPU,
              "data.preprocess=none")
    assert res.exit_code == 2 and f"training image {tiny} is too small for the networks" in res.stderr, res.stderr
    assert not (tmp_path / "r2").exists()
