"""Translating videos: decode, translate and encode run concurrently, with bounded queues between them.

A reader thread decodes and prepares frames, the calling thread runs the generator on batches, and a writer thread
converts and encodes them, so the generator does not wait for I/O and memory does not grow with the video's length.
With ffmpeg available (on PATH or from the ``imageio-ffmpeg`` package) frames are encoded with it and the input's
audio track is muxed in, for as long as the output lasts; otherwise OpenCV writes a silent video and a warning says
so. A picture the input holds for several frame times (empty frames in an AVI) is repeated, so timing is kept. The
output is written to a temporary file and renamed once complete; Ctrl-C / SIGTERM remove it.

H.264 (.mp4, .mov, .mkv) stores even sizes only: odd-sized frames get their last column / row repeated (and a warning
says so); .avi (MPEG-4 Part 2) keeps any size.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .errors import I2IError, warn
from .files import cannot_create, file_in_the_way, publish, temp_beside
from .interrupts import Interrupted, stop_requests
from .translate import Prepared, Translator
from .translate import side_by_side as compare

_END = object()

#: output extension -> (ffmpeg video codec args, ffmpeg audio codec, OpenCV fourcc). AVI gets PCM audio: it cannot
#: signal an encoder's delay, so MP3 started late, ran past the last frame and had a negative first timestamp, for
#: which ffmpeg shifted the copied video (time base: one frame) by a whole frame (frame 0 shown twice)
CONTAINERS = {
    ".mp4": (["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"], "aac", "mp4v"),
    ".mov": (["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"], "aac", "mp4v"),
    ".mkv": (["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"], "aac", "XVID"),
    ".avi": (["-c:v", "mpeg4", "-q:v", "2"], "pcm_s16le", "MJPG"),
}


def quiet_native_logs() -> None:
    """Silence FFmpeg's own log lines (``[mov,mp4,... @ 0x..] moov atom not found``) that OpenCV's decoder prints
    for a broken input, which is then reported in one line instead. OpenCV reads ``OPENCV_FFMPEG_LOGLEVEL`` once,
    when the process opens its first capture: call this before that. A value the user set is kept."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


def output_path(src: Path, dst: Path) -> Path:
    """The file to write for ``-o dst``: in a folder (one that exists, or a name without extension), ``<input
    stem>.mp4``. Checked before any work: not the input, a known format, a place where files can be created (tried
    with a temporary file, removed at once; missing folders are made later)."""
    src, dst = Path(src), Path(dst)
    if dst.is_dir() or not (dst.suffix or dst.exists()):
        name = f"{src.stem}.mp4"
        dst = dst / (name if (dst / name).resolve() != src.resolve() else f"{src.stem}_i2i.mp4")
    if src.resolve() == dst.resolve():
        raise I2IError(f"the output {dst} is the input video; choose another -o")
    if dst.suffix.lower() not in CONTAINERS:
        raise I2IError(f"unsupported output format '{dst.suffix}'; use one of {', '.join(CONTAINERS)}")
    blocker = file_in_the_way(dst)
    if blocker is not None:
        raise I2IError(f"cannot write {dst}: {blocker} is a file, not a folder; choose another -o")
    refused = cannot_create(dst)
    if refused is not None:
        raise I2IError(f"cannot write {dst}: no files can be created in {refused[0]} ({refused[1]}); choose "
                       f"another -o")
    return dst


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
    if path.is_dir():
        raise I2IError(f"{path} is a folder, not a video; give a video file (translate a folder of images with "
                       f"`i2i translate`)")
    if not path.is_file():
        raise I2IError(f"video not found: {path}")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise I2IError(f"cannot open {path} as a video (unreadable or unsupported format)")
        # FFmpeg opens a picture (whatever its extension) as a one-frame video; a video in a picture format (an
        # animated GIF, a raw MJPEG stream) has a second frame
        if cv2.haveImageReader(str(path)) and not (cap.grab() and cap.grab()):
            raise I2IError(f"{path} is a still image, not a video; use i2i translate")
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
    """Encodes RGB frames to ``tmp`` through ffmpeg or OpenCV (silent). With the source's audio, ffmpeg encodes the
    frames alone first, then adds the audio from ``start`` on, trimmed to the frames' exact length: ``-shortest``
    cuts it at an audio packet (or, in older ffmpeg, late). ``stopping()`` (Ctrl-C) cuts that second step short."""

    def __init__(self, tmp: Path, src: Path, size: tuple[int, int], fps: float, start: float, audio: bool,
                 stopping: Callable[[], bool]) -> None:
        video_args, self.audio_codec, fourcc = CONTAINERS.get(tmp.suffix.lower(), CONTAINERS[".mp4"])
        self.tmp, self.src, self.fps, self.start, self.stopping, self.frames = tmp, src, fps, start, stopping, 0
        self.ffmpeg = ffmpeg_path()
        # H.264 in 4:2:0 stores even sizes only, and OpenCV's writer crops odd ones: such frames get their last
        # column / row repeated (not black bars)
        even = self.ffmpeg is None or "libx264" in video_args
        self.pad = (size[1] % 2, size[0] % 2) if even else (0, 0)  # rows, columns added
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


def _stated_frames(src: Path, fps: float) -> int | None:
    """The video stream's frame count as ``src``'s own tags state it (``NUMBER_OF_FRAMES``, else ``DURATION``, as
    mkvmerge and ffmpeg write them into Matroska files), or None where it states none (or ffmpeg is missing)."""
    ffmpeg = ffmpeg_path()
    if ffmpeg is None:
        return None
    try:
        res = subprocess.run([ffmpeg, "-hide_banner", "-i", str(src)], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    # the first video stream's lines, up to the next stream
    video = re.search(r"Stream #[^\n]*: Video:.*?(?=\n\s*Stream #|\Z)", res.stderr.decode(errors="replace"), re.S)
    if video is None:
        return None
    if m := re.search(r"^\s*NUMBER_OF_FRAMES(?:-\w+)?\s*:\s*(\d+)\s*$", video.group(0), re.M):
        return int(m.group(1))
    if m := re.search(r"^\s*DURATION(?:-\w+)?\s*:\s*(\d+):(\d+):([\d.]+)\s*$", video.group(0), re.M):
        return round((int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))) * fps)
    return None


@dataclass
class VideoResult:
    frames: int  # translated
    seconds: float
    audio: bool
    output: Path
    written: int = 0  # in the output: more than translated where the input holds a picture for several frame times


class _Frames:
    """A capture's decoded frames with their times in ms, after ``ahead``: frames already decoded from it."""

    def __init__(self, cap: cv2.VideoCapture) -> None:
        self.cap = cap
        self.ahead: list[tuple[np.ndarray, float]] = []

    def read(self) -> tuple[np.ndarray, float] | None:
        """The next frame and its time in ms; None at the end."""
        if self.ahead:
            return self.ahead.pop(0)
        ok, frame = self.cap.read()
        return (frame, self.cap.get(cv2.CAP_PROP_POS_MSEC)) if ok else None

    def release(self) -> None:
        self.cap.release()


def _open_at(src: Path, start: float, length: float) -> tuple[_Frames, np.ndarray | None, float]:
    """The frames of ``src`` after its picture at ``start`` seconds, that picture (None if there is none) and its
    time in ms.

    Where seeking fails (AVIs whose index holds empty frames, e.g.), frames are decoded from the beginning, once: the
    picture shown at ``start`` is the last one that began at or before it (if ``start`` is within the ``length``
    the container announces, in seconds), and it counts from ``start``."""
    cap = cv2.VideoCapture(str(src))
    if start > 0:
        cap.set(cv2.CAP_PROP_POS_MSEC, start * 1000.0)
    frames = _Frames(cap)
    got = frames.read()
    if got is not None or start <= 0:
        return (frames, *got) if got is not None else (frames, None, cap.get(cv2.CAP_PROP_POS_MSEC))
    cap.release()
    frames, shown = _Frames(cv2.VideoCapture(str(src))), None  # shown: the last picture that began by start
    while (got := frames.read()) is not None and got[1] <= start * 1000.0 + 0.5:
        shown = got
    if got is None and (shown is None or start >= length):  # no picture after start, and none on screen at it
        frames.release()
        return _Frames(cv2.VideoCapture()), None, 0.0
    if shown is None:  # the first picture begins after start
        return (frames, *got)
    if got is not None:  # the first picture after start comes next
        frames.ahead.append(got)
    return frames, shown[0], max(shown[1], start * 1000.0)


def check_part(start: float, duration: float | None) -> None:
    """The part of a video to translate is one that can exist."""
    if not (0 <= start < math.inf) or (duration is not None and not 0 < duration < math.inf):  # NaN too
        raise I2IError(f"--start must be >= 0 and --duration > 0, in seconds (got --start {start:g}"
                       f"{'' if duration is None else f' --duration {duration:g}'})")


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
    on_warning: Callable[[str], None] = warn,
) -> VideoResult:
    """Translate ``src`` into ``dst`` (same frame rate, size and frame timing); ``on_frames(n)`` reports progress in
    output frames. Ctrl-C / SIGTERM stop it, remove the unfinished output and raise ``Interrupted``."""
    import time

    info = probe(src)
    dst = output_path(src, dst)
    check_part(start, duration)
    limit = round(duration * info.fps) if duration else None
    # output frames the container announces from --start on (0: unknown); frames are repeated to keep the input's
    # timing (a picture held for several frame times, as in AVIs with empty frames) only up to this count
    announced = max(0, info.frames - round(start * info.fps)) if info.frames else 0
    expected = min(announced, limit) if limit else announced

    source, first, first_ms = _open_at(src, start, info.frames / info.fps if info.frames else 0.0)
    if first is None:
        source.release()
        where = f" after --start {start:g}s" if start > 0 else ""
        raise I2IError(f"{src} has no decodable frames{where}")

    def rgb(frame: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    decoded: queue.Queue[Any] = queue.Queue(maxsize=2 * batch_size)
    encoded: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()
    # output frames read so far; whether the input ran out; frames left out (they came faster than the frame rate)
    counts = {"slots": 0, "ended": False, "dropped": 0}

    aborted = f"interrupted again: stopped at once and removed the partial output; {dst} was not written"
    with stop_requests(aborted) as signalled:

        def stopping() -> bool:
            """Whether the run is stopping: an error anywhere, or Ctrl-C / SIGTERM."""
            if signalled["stop"]:
                stop.set()
            return stop.is_set()

        def put(q: queue.Queue, item: Any) -> bool:
            """Put unless the run is stopping; False when it gave up."""
            while not stopping():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def get(q: queue.Queue) -> Any:
            """The next item, or ``_END`` once the run is stopping."""
            while not stopping():
                with contextlib.suppress(queue.Empty):
                    return q.get(timeout=0.1)
            return _END

        def read() -> None:
            def slot(ms: float) -> int:  # the output frame a picture shown at ``ms`` belongs to
                return round((ms - first_ms) / 1000 * info.fps) if math.isfinite(ms) else 0

            try:
                (frame, ms), ahead = (first, first_ms), source.read()
                while frame is not None and (limit is None or counts["slots"] < limit):
                    at = slot(ms)
                    if expected and ahead is not None and ahead[1] > ms and slot(ahead[1]) <= at:
                        # the next picture falls into the same output frame: this one takes the one before if it
                        # is free (a late timestamp), else it is left out (a variable rate, faster here than the
                        # average; the next one is the nearer to show); with no frame count, nothing is repeated
                        # either, and every picture is kept
                        if at - 1 < counts["slots"]:
                            counts["dropped"] += counts["slots"] > 0  # not the picture on screen at --start
                            (frame, ms), ahead = ahead, source.read()
                            continue
                        at -= 1
                    # frames before this one's time slot repeat the previous picture
                    gap = max(0, min(at, (expected or 1) - 1) - counts["slots"])
                    image = rgb(frame)
                    if not put(decoded, (translator.prepare(image), image if side_by_side else None, gap)):
                        return
                    counts["slots"] += gap + 1
                    (frame, ms), ahead = (ahead or (None, ms)), source.read() if ahead is not None else None
                counts["ended"] = frame is None
            finally:
                source.release()
                put(decoded, _END)

        def write() -> None:
            last = None
            while (item := get(encoded)) is not _END:
                out, items = item
                n = 0
                for o, (prep, image, gap) in zip(out, items, strict=True):
                    result = translator.finish(o, prep)
                    for _ in range(gap):
                        encoder.write(last)
                    last = compare(image, result) if image is not None else result
                    encoder.write(last)
                    n += gap + 1
                if on_frames:
                    on_frames(n)

        tmp: Path | None = None
        try:
            first_prep = translator.prepare(rgb(first))
            out_w = first_prep.width * (2 if side_by_side else 1)
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_beside(dst, "partial")  # this run's own: another run writing dst never shares it
            encoder = _Encoder(tmp, src, (out_w, first_prep.height), info.fps, start, audio,
                               lambda: signalled["stop"])
        except BaseException:
            source.release()
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise
        if any(encoder.pad):
            why = (f"H.264 ({dst.suffix}) needs even sizes; .avi keeps the size" if encoder.proc is not None
                   else "OpenCV's video writer needs even sizes; with ffmpeg, .avi keeps the size")
            on_warning(f"the output is {encoder.size[0]}×{encoder.size[1]}, 1 px more than the {out_w}×"
                       f"{first_prep.height} frames (the edge pixels repeated): {why}")
        reader, writer = _Thread(read, stop.set), _Thread(write, stop.set)
        t0 = time.perf_counter()
        reader.start()
        writer.start()
        frames, ok = 0, False
        try:
            done = False
            while not done and not stopping():
                batch: list[tuple[Prepared, np.ndarray | None, int]] = []
                while len(batch) < batch_size:
                    item = get(decoded)
                    if item is _END:
                        done = True
                        break
                    if (item[0].height, item[0].width) != (first_prep.height, first_prep.width):
                        raise I2IError(f"{src} changes frame size mid-stream ({first_prep.width}×"
                                       f"{first_prep.height} to {item[0].width}×{item[0].height}); re-encode it "
                                       f"with one size (e.g. ffmpeg -i {src.name} -vf scale={first_prep.width}:"
                                       f"{first_prep.height} fixed{src.suffix})")
                    batch.append(item)
                if batch and not stopping():
                    tensors = [p.tensor for p, _, _ in batch]
                    if len({t.shape for t in tensors}) > 1:  # padded before and after the generator's least size
                        tensors = [t[..., :first_prep.height, :first_prep.width] for t in tensors]  # was learnt
                    out = translator.forward(torch.stack(tensors)).cpu()
                    frames += len(batch)
                    put(encoded, (out, batch))
            put(encoded, _END)
            writer.join()
            reader.join()
            if not signalled["stop"]:  # an interruption outranks the errors it may cause (ffmpeg got Ctrl-C too)
                writer.join_checked()
                reader.join_checked()
                ok = True
        finally:
            stop.set()
            reader.join(timeout=5)
            writer.join(timeout=5)
            try:
                encoder.close(ok)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            if not ok or signalled["stop"]:
                tmp.unlink(missing_ok=True)
        if signalled["stop"]:
            raise Interrupted(f"interrupted after {frames} frames; {dst} was not written")
        if frames == 0:
            tmp.unlink(missing_ok=True)
            raise I2IError(f"no frames of {src} were translated (is --duration shorter than one frame?)")
        try:
            publish(tmp, dst)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
    written = encoder.frames
    if counts["dropped"]:
        on_warning(f"{src} has a variable frame rate: it was written at a constant {info.fps:.4g} frames/s (its "
                   f"average), leaving out {counts['dropped']} frame(s) that came faster, so that every picture and "
                   f"the audio keep their time")
    if counts["ended"] and written < expected - max(2, expected // 50):
        # a stream duration the file states (Matroska tags) outranks OpenCV's count, estimated from the longest
        # stream's: a video shorter than its audio is not truncated
        stated = _stated_frames(src, info.fps)
        if stated is not None:
            expected = min(expected, max(0, stated - round(start * info.fps)))
        if written < expected - max(2, expected // 50):
            on_warning(f"{src} ended after {written} of {expected} frames (truncated or corrupt?)")
    return VideoResult(frames, time.perf_counter() - t0, encoder.audio, dst, written)
