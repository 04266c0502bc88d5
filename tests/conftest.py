"""Shared fixtures: real photo tiles (the demo data), tiny-network settings, an in-process CLI runner."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from i2i import load_registry
from i2i.cli import app
from i2i.video_encoder import ffmpeg_path
from i2i_components import demo

SHARED = Path(__file__).resolve().parents[2] / "shared"

#: tiny networks at 32 px: a training step takes milliseconds on a CPU (TINY_NETS: the same, device left open)
TINY_NETS = ["generator=resnet_6blocks", "generator.ngf=8", "discriminator.ndf=8", "--size", "32", "--load-size", "36",
             "train.log_every=1"]
TINY = [*TINY_NETS, "--device", "cpu"]

torch.set_num_threads(2)

FFMPEG = ffmpeg_path()
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg (imageio-ffmpeg) not installed")


def streams(path: Path) -> dict[str, str]:
    """{'video': 'h264 ... 66x50 ... 10 fps', 'audio': '...'} as ffmpeg reports them."""
    res = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    found = {}
    for line in res.stderr.splitlines():
        m = re.search(r"Stream #\S+.*?: (Video|Audio): (.*)", line)
        if m:
            found.setdefault(m.group(1).lower(), m.group(2))
    return found


def ffmpeg(*args: str | Path) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *map(str, args)], check=True)


def sparse_avi(tmp_path: Path) -> tuple[Path, list[int]]:
    """An AVI of 30 frame slots at 10 fps holding pictures in the slots listed (the others are empty chunks:
    "repeat the last one"), like Debian's tree.avi; OpenCV cannot seek in it."""
    raw, src = tmp_path / "noise.rgb", tmp_path / "sparse.avi"
    raw.write_bytes(np.random.default_rng(0).integers(0, 256, (30, 24, 32, 3), dtype=np.uint8).tobytes())
    shown = [0, 1, 7, 8, 20, 29]
    pick = "+".join(f"eq(n\\,{i})" for i in shown)
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "32x24", "-r", "10", "-i", raw, "-vf", f"select='{pick}'",
           "-fps_mode", "passthrough", "-c:v", "mjpeg", src)
    assert frames_of(src)[0] == len(shown)
    return src, shown


def frames_of(path: Path) -> tuple[int, float, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    n = 0
    size = None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        size = frame.shape[:2]
        n += 1
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return n, fps, size


def psnr8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two 8-bit images (capped where they are equal)."""
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 10 * np.log10(255**2 / max(mse, 1e-12))


def run_settings(out: Path) -> dict:
    """The settings line a training run wrote first into ``out/log.jsonl``."""
    return json.loads((out / "log.jsonl").read_text().splitlines()[0])["settings"]


def force_winograd(monkeypatch) -> None:
    """Lower ``WinogradConv2d``'s width and size rule so that tiny test networks take the Winograd path."""
    import i2i_components.winograd_conv as wc

    monkeypatch.setattr(wc, "MIN_CHANNELS", 1)
    monkeypatch.setattr(wc, "MIN_TILES", 1)


def count_winograd_calls(monkeypatch) -> list:
    """A list that gains an entry for every ``winograd_conv2d`` call ``WinogradConv2d`` makes."""
    import i2i_components.winograd_conv as wc

    calls: list = []
    monkeypatch.setattr(wc, "winograd_conv2d", lambda *a, f=wc.winograd_conv2d: calls.append(1) or f(*a))
    return calls


def one_line_error(res, *fragments: str, alone: bool = True) -> None:
    """Exit 2 and one ``error:`` line holding ``fragments``, last on stderr (and the only line unless ``alone`` is
    False, e.g. once training has started or after a warning), with no traceback anywhere."""
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    lines = [li for li in res.stderr.splitlines() if li.strip()]
    errors = [li for li in lines if li.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.stderr
    assert len(lines) == 1 or not alone, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    for f in fragments:
        assert f in errors[0], errors[0]


@pytest.fixture(scope="session")
def registry():
    return load_registry()


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """The built-in demo dataset (real photo tiles), built once into a temporary cache."""
    return demo.build(tmp_path_factory.mktemp("cache") / "demo")


@pytest.fixture()
def small_data(tmp_path, demo_data) -> Path:
    """A copy of a few demo tiles: 6 in trainA, 5 in trainB (so epochs are short and uneven)."""
    root = tmp_path / "data"
    for domain, n in (("trainA", 6), ("trainB", 5)):
        (root / domain).mkdir(parents=True)
        for src in sorted((demo_data / domain).iterdir())[:n]:
            (root / domain / src.name).write_bytes(src.read_bytes())
    return root


@pytest.fixture()
def cli():
    """Run the CLI in-process: ``cli(args) -> Result`` (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def invoke(*args: str | Path):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def make_ckpt(tmp_path_factory, registry):
    """``make_ckpt(in_channels=3, out_channels=3, name=..., **params) -> Path`` of an exported generator."""
    from i2i.checkpoint import atomic_save, generator_record

    def make(in_channels: int = 3, out_channels: int = 3, name: str = "resnet_6blocks", **params) -> Path:
        torch.manual_seed(0)
        entry = registry.get("generator", name)
        params = entry.validate({"ngf": 8, **params})
        net = entry.build(in_channels, out_channels, **params)
        path = tmp_path_factory.mktemp("ckpt") / "G.pt"
        atomic_save(generator_record(net, name, params, in_channels, out_channels,
                                     {"generator_plugin": entry.plugin}), path)
        return path

    return make


@pytest.fixture(scope="session")
def resnet18_weights(tmp_path_factory):
    """A small local feature extractor: timm resnet18 with weights we make (no download)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("feat") / "r18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict(), path)
    return path


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright (no browser download); skips where either is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    if not CHROMIUM.is_file():
        pytest.skip("chromium not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh browser page; JavaScript errors on it fail the test."""
    context = browser.new_context()
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, errors
