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
import queue
import threading
import time
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
from .temporal import Temporal, TemporalOptions
from .translate import Prepared, Translator
from .translate import side_by_side as compare
from .video_encoder import CONTAINERS, Encoder, needs_even_size
from .video_source import VideoInfo, check_part, open_at, probe, stated_frames

_END = object()


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


@dataclass
class VideoResult:
    frames: int  # translated
    seconds: float
    audio: bool
    output: Path
    written: int = 0  # in the output: more than translated where the input holds a picture for several frame times
    report: dict[str, float | None] | None = None  # the warping errors (``TemporalOptions.report``)

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


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
    temporal: TemporalOptions | None = None,
) -> VideoResult:
    """Translate ``src`` into ``dst`` (same frame rate, size and frame timing); ``on_frames(n)`` reports progress in
    output frames; ``temporal``: stabilisation and the warping-error report (:mod:`i2i.temporal`). Ctrl-C / SIGTERM
    stop it, remove the unfinished output and raise ``Interrupted``."""
    over_time = Temporal(temporal or TemporalOptions(), translator.G, translator.device, on_warning)
    info = probe(src)
    dst = output_path(src, dst)
    even = translator.even_sizes
    # a --size that would give an odd side takes the nearest even one where the container needs it (not a pad)
    translator.even_sizes = even or (translator.size is not None and needs_even_size(dst.suffix))
    try:
        return _translate_video(src, dst, info, translator, over_time, batch_size, start, duration, side_by_side,
                                audio, on_frames, on_warning)
    finally:
        translator.even_sizes = even


def _translate_video(src: Path, dst: Path, info: VideoInfo, translator: Translator, over_time: Temporal,
                     batch_size: int, start: float, duration: float | None, side_by_side: bool, audio: bool,
                     on_frames: Callable[[int], None] | None, on_warning: Callable[[str], None]) -> VideoResult:
    check_part(start, duration)
    limit = round(duration * info.fps) if duration else None
    # output frames the container announces from --start on (0: unknown); frames are repeated to keep the input's
    # timing (a picture held for several frame times, as in AVIs with empty frames) only up to this count
    announced = max(0, info.frames - round(start * info.fps)) if info.frames else 0
    expected = min(announced, limit) if limit else announced

    source, first, first_ms = open_at(src, start, info.frames / info.fps if info.frames else 0.0)
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
                    prep = translator.prepare(image)
                    seen = over_time.on_read(network_frame(prep)) if over_time.active else None
                    if not put(decoded, (prep, image if side_by_side else None, gap, seen)):
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
                for o, (prep, image, gap, seen) in zip(out, items, strict=True):
                    result = over_time.on_result(translator.finish(o, prep), seen)
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
            encoder = Encoder(tmp, src, (out_w, first_prep.height), info.fps, start, audio,
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
                batch: list[tuple[Prepared, np.ndarray | None, int, Any]] = []
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
                    tensors = [item[0].tensor for item in batch]
                    if len({t.shape for t in tensors}) > 1:  # padded before and after the generator's least size
                        tensors = [t[..., :first_prep.height, :first_prep.width] for t in tensors]  # was learnt
                    over_time.before_batch(item[3] for item in batch)
                    with over_time.generating(translator.G):
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
        stated = stated_frames(src, info.fps)
        if stated is not None:
            expected = min(expected, max(0, stated - round(start * info.fps)))
        if written < expected - max(2, expected // 50):
            on_warning(f"{src} ended after {written} of {expected} frames (truncated or corrupt?)")
    return VideoResult(frames, time.perf_counter() - t0, encoder.audio, dst, written, over_time.report())


def network_frame(prep: Prepared) -> np.ndarray:
    """The frame as the generator sees it (resized, converted; not padded), H×W×C uint8."""
    t = prep.tensor[:, :prep.height, :prep.width]
    return ((t.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
