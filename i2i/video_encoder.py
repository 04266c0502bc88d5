"""Encoding translated frames: through ffmpeg (on PATH or from the ``imageio-ffmpeg`` package), with the input's
audio muxed in for exactly as long as the frames last, or silently through OpenCV where ffmpeg is missing."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import I2IError

#: output extension -> (ffmpeg video codec args, ffmpeg audio codec, OpenCV fourcc). AVI gets PCM audio: it cannot
#: signal an encoder's delay, so MP3 started late, ran past the last frame and had a negative first timestamp, for
#: which ffmpeg shifted the copied video (time base: one frame) by a whole frame (frame 0 shown twice)
CONTAINERS = {
    ".mp4": (["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"], "aac", "mp4v"),
    ".mov": (["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"], "aac", "mp4v"),
    ".mkv": (["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"], "aac", "XVID"),
    ".avi": (["-c:v", "mpeg4", "-q:v", "2"], "pcm_s16le", "MJPG"),
}



def ffmpeg_path() -> str | None:
    """ffmpeg on PATH, else the static binary of the ``imageio-ffmpeg`` package, else None."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # not installed, or its binary is missing
        return None


def has_audio(ffmpeg: str, path: Path) -> bool:
    """Whether ffmpeg sees an audio stream in ``path``."""
    try:
        res = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"Audio:" in res.stderr



def needs_even_size(suffix: str) -> bool:
    """Whether video written as ``suffix`` must have even sides: H.264 in 4:2:0 stores even sizes only, and OpenCV's
    writer (without ffmpeg) crops odd ones."""
    video_args = CONTAINERS.get(suffix.lower(), CONTAINERS[".mp4"])[0]
    return ffmpeg_path() is None or "libx264" in video_args


class Encoder:
    """Encodes RGB frames to ``tmp`` through ffmpeg or OpenCV (silent). With the source's audio, ffmpeg encodes the
    frames alone first, then adds the audio from ``start`` on, trimmed to the frames' exact length: ``-shortest``
    cuts it at an audio packet (or, in older ffmpeg, late). ``stopping()`` (Ctrl-C) cuts that second step short."""

    def __init__(self, tmp: Path, src: Path, size: tuple[int, int], fps: float, start: float, audio: bool,
                 stopping: Callable[[], bool]) -> None:
        video_args, self.audio_codec, fourcc = CONTAINERS.get(tmp.suffix.lower(), CONTAINERS[".mp4"])
        self.tmp, self.src, self.fps, self.start, self.stopping, self.frames = tmp, src, fps, start, stopping, 0
        self.ffmpeg = ffmpeg_path()
        # odd-sized frames get their last column / row repeated (not black bars)
        self.pad = (size[1] % 2, size[0] % 2) if needs_even_size(tmp.suffix) else (0, 0)  # rows, columns added
        self.size = w, h = size[0] + self.pad[1], size[1] + self.pad[0]
        self.audio = audio and self.ffmpeg is not None and has_audio(self.ffmpeg, src)
        # the frames alone, while the audio waits for their count
        self.video = tmp.with_name(f"{tmp.stem}.video{tmp.suffix}") if self.audio else tmp
        if self.ffmpeg is not None:
            cmd = [self.ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                   "-s", f"{w}x{h}", "-r", f"{fps:.6f}", "-i", "pipe:0"]
            cmd += [*video_args, str(self.video)]
            # ffmpeg's messages go to a file, not a pipe: a flood of decoder errors must not stall it
            self.log = tempfile.TemporaryFile()  # noqa: SIM115 (open as long as the encoder; closed in close())
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=self.log)
            self.writer = None
        else:
            self.proc = None
            self.writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
            if not self.writer.isOpened():
                raise I2IError(f"OpenCV cannot write {tmp.suffix} video here; install ffmpeg (pip install "
                               f"imageio-ffmpeg) or choose .avi")

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[2] == 1:
            frame = np.repeat(frame, 3, axis=2)
        frame = np.ascontiguousarray(frame[:, :, :3])
        if any(self.pad):
            frame = np.pad(frame, ((0, self.pad[0]), (0, self.pad[1]), (0, 0)), mode="edge")
        if self.proc is not None:
            try:
                self.proc.stdin.write(frame.tobytes())
            except BrokenPipeError:
                raise I2IError(f"ffmpeg stopped while encoding: {self._stderr()}") from None
        else:
            self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def _stderr(self) -> str:
        if self.proc is None:
            return "no message"
        self.proc.wait()
        return _last_line(self.log)

    def close(self, ok: bool) -> None:
        """Finish the file, or (not ``ok``) stop ffmpeg at once. Errors while stopping are not reported: the
        interruption outranks them (ffmpeg may have got the Ctrl-C too)."""
        if self.proc is None:
            self.writer.release()
            return
        try:
            if not ok:
                self.proc.kill()
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
            code = self.proc.wait()
            if ok and code != 0 and not self.stopping():
                raise I2IError(f"ffmpeg failed to encode the video: {self._stderr()}")
            if ok and code == 0 and self.audio and self.frames and not self.stopping():
                self._add_audio()
        finally:
            if self.proc.poll() is None:  # a second Ctrl-C while waiting
                self.proc.kill()
                self.proc.wait()
            self.log.close()
            if self.video != self.tmp:
                self.video.unlink(missing_ok=True)

    def _add_audio(self) -> None:
        """Write ``tmp``: the encoded frames and the source's audio for exactly as long as they last."""
        cmd = [self.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(self.video),
               "-err_detect", "ignore_err", *(["-ss", f"{self.start:.3f}"] if self.start > 0 else []),
               "-t", f"{self.frames / self.fps:.6f}", "-i", str(self.src), "-map", "0:v:0", "-map", "1:a:0?",
               "-c:v", "copy", "-c:a", self.audio_codec, str(self.tmp)]
        # no -ss at 0 (above): seeking there can skip audio stored ahead of the first video frame
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=log)
            try:
                while (code := _wait(proc, 0.1)) is None:
                    if self.stopping():
                        return
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if code != 0 and not self.stopping():
                raise I2IError(f"ffmpeg failed to add the input's audio: {_last_line(log)}")


def _wait(proc: subprocess.Popen, seconds: float) -> int | None:
    """``proc``'s exit status, or None if it is still running after ``seconds``."""
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def _last_line(log: Any) -> str:
    """The last line ffmpeg wrote to the file ``log``."""
    log.seek(0)
    text = log.read().decode(errors="replace").strip().splitlines()
    return text[-1] if text else "no message"

