"""Translating videos: decode, translate and encode run concurrently, with bounded queues between them.

A reader thread decodes and prepares frames, the calling thread runs the generator on batches, and a writer thread
converts and encodes them, so the generator does not wait for I/O and memory does not grow with the video's length.
With ffmpeg available (on PATH or from the ``imageio-ffmpeg`` package) frames are encoded with it and the input's
audio track is muxed in; otherwise OpenCV writes a silent video and a warning says so. The output is written to a
temporary file and renamed once complete.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .errors import I2IError
from .translate import Prepared, Translator
from .translate import side_by_side as compare

_END = object()

#: output extension -> (ffmpeg video codec args, ffmpeg audio codec, OpenCV fourcc)
CONTAINERS = {
    ".mp4": (["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"], "aac", "mp4v"),
    ".mov": (["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"], "aac", "mp4v"),
    ".mkv": (["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"], "aac", "XVID"),
    ".avi": (["-c:v", "mpeg4", "-q:v", "2"], "libmp3lame", "MJPG"),
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


@dataclass
class VideoInfo:
    fps: float
    width: int
    height: int
    frames: int  # as the container reports it (may be approximate; 0 when unknown)


def probe(path: Path) -> VideoInfo:
    if not path.is_file():
        raise I2IError(f"video not found: {path}")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise I2IError(f"cannot open {path} as a video (unreadable or unsupported format)")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        info = VideoInfo(fps if 0 < fps < 1000 else 25.0, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                         int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))))
    finally:
        cap.release()
    if info.width <= 0 or info.height <= 0:
        raise I2IError(f"{path} has no decodable video stream")
    return info


class _Thread(threading.Thread):
    """A worker whose exception is re-raised in the caller by ``join_checked``."""

    def __init__(self, target: Callable[[], None], on_error: Callable[[], None] | None = None) -> None:
        super().__init__(daemon=True)
        self._target_fn, self.error, self.on_error = target, None, on_error

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # handed to the main thread
            self.error = exc
            if self.on_error is not None:
                self.on_error()

    def join_checked(self) -> None:
        self.join()
        if self.error is not None:
            raise self.error


class _Encoder:
    """Encodes RGB frames to ``tmp`` through ffmpeg (with the source's audio) or OpenCV (silent)."""

    def __init__(self, tmp: Path, src: Path, size: tuple[int, int], fps: float, start: float,
                 duration: float | None, audio: bool) -> None:
        w, h = size
        video_args, audio_codec, fourcc = CONTAINERS.get(tmp.suffix.lower(), CONTAINERS[".mp4"])
        self.ffmpeg = ffmpeg_path()
        self.audio = audio and self.ffmpeg is not None and has_audio(self.ffmpeg, src)
        if self.ffmpeg is not None:
            cmd = [self.ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                   "-s", f"{w}x{h}", "-r", f"{fps:.6f}", "-i", "pipe:0"]
            if self.audio:
                cmd += ["-err_detect", "ignore_err", "-ss", f"{start:.3f}"]
                cmd += ["-t", f"{duration:.3f}"] if duration else []
                cmd += ["-i", str(src), "-map", "0:v:0", "-map", "1:a:0?", "-c:a", audio_codec]
            if w % 2 or h % 2:
                cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]
            cmd += [*video_args, str(tmp)]
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
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
        if self.proc is not None:
            try:
                self.proc.stdin.write(frame.tobytes())
            except BrokenPipeError:
                raise I2IError(f"ffmpeg stopped while encoding: {self._stderr()}") from None
        else:
            self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def _stderr(self) -> str:
        text = self.proc.stderr.read().decode(errors="replace").strip().splitlines() if self.proc else []
        return text[-1] if text else "no message"

    def close(self, ok: bool) -> None:
        if self.proc is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
            code = self.proc.wait()
            if ok and code != 0:
                raise I2IError(f"ffmpeg failed to encode the video: {self._stderr()}")
        else:
            self.writer.release()


@dataclass
class VideoResult:
    frames: int
    seconds: float
    audio: bool
    output: Path


def translate_video(
    src: Path,
    dst: Path,
    translator: Translator,
    batch_size: int = 4,
    start: float = 0.0,
    duration: float | None = None,
    side_by_side: bool = False,
    audio: bool = True,
    on_frames: Callable[[int], None] | None = None,
) -> VideoResult:
    """Translate ``src`` into ``dst`` (same frame rate and size); ``on_frames(n)`` reports progress."""
    import time

    info = probe(src)
    if src.resolve() == dst.resolve():
        raise I2IError(f"the output {dst} is the input video; choose another -o")
    if dst.suffix.lower() not in CONTAINERS:
        raise I2IError(f"unsupported output format '{dst.suffix}'; use one of {', '.join(CONTAINERS)}")
    if start < 0 or (duration is not None and duration <= 0):
        raise I2IError("--start must be >= 0 and --duration > 0")
    limit = round(duration * info.fps) if duration else None

    cap = cv2.VideoCapture(str(src))
    if start > 0:
        cap.set(cv2.CAP_PROP_POS_MSEC, start * 1000.0)
    ok, first = cap.read()
    if not ok or first is None:
        cap.release()
        where = f" after --start {start:g}s" if start > 0 else ""
        raise I2IError(f"{src} has no decodable frames{where}")

    def rgb(frame: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    first_prep = translator.prepare(rgb(first))
    out_w = first_prep.width * (2 if side_by_side else 1)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
    encoder = _Encoder(tmp, src, (out_w, first_prep.height), info.fps, start, duration, audio)
    decoded: queue.Queue[Any] = queue.Queue(maxsize=2 * batch_size)
    encoded: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def put(q: queue.Queue, item: Any) -> bool:
        """Put unless the run is stopping (an error anywhere sets ``stop``); False when it gave up."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            frame, n = first, 0
            while frame is not None and (limit is None or n < limit):
                image = rgb(frame)
                if not put(decoded, (translator.prepare(image), image if side_by_side else None)):
                    return
                n += 1
                ok, frame = cap.read()
                frame = frame if ok else None
        finally:
            cap.release()
            put(decoded, _END)

    def write() -> None:
        while True:
            item = encoded.get()
            if item is _END:
                return
            out, preps = item
            for o, (prep, image) in zip(out, preps, strict=True):
                result = translator.finish(o, prep)
                encoder.write(compare(image, result) if image is not None else result)
            if on_frames:
                on_frames(len(preps))

    reader, writer = _Thread(read, stop.set), _Thread(write, stop.set)
    t0 = time.perf_counter()
    reader.start()
    writer.start()
    frames, ok = 0, False
    try:
        done = False
        while not done:
            batch: list[tuple[Prepared, np.ndarray | None]] = []
            while len(batch) < batch_size:
                item = decoded.get()
                if item is _END:
                    done = True
                    break
                if batch and item[0].tensor.shape != batch[0][0].tensor.shape:
                    raise I2IError(f"{src} changes frame size mid-stream; re-encode it with a fixed size")
                batch.append(item)
            if batch:
                out = translator.forward(torch.stack([p.tensor for p, _ in batch])).cpu()
                frames += len(batch)
                if not put(encoded, (out, batch)):
                    break
            if stop.is_set():
                break
        put(encoded, _END)
        writer.join_checked()
        reader.join_checked()
        ok = True
    finally:
        stop.set()
        if not ok:
            put_nowait_end(encoded)
        reader.join(timeout=5)
        writer.join(timeout=5)
        try:
            encoder.close(ok)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if not ok:
            tmp.unlink(missing_ok=True)
    if frames == 0:
        tmp.unlink(missing_ok=True)
        raise I2IError(f"no frames of {src} were translated (is --duration shorter than one frame?)")
    tmp.replace(dst)
    return VideoResult(frames, time.perf_counter() - t0, encoder.audio, dst)


def put_nowait_end(q: queue.Queue) -> None:
    """Wake a consumer blocked on ``q`` so it can exit."""
    with contextlib.suppress(queue.Full):
        q.put_nowait(_END)
