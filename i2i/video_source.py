"""Reading videos: probing a file, and decoding its frames with their times from any start (seekable or not)."""

from __future__ import annotations

import math
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import I2IError
from .video_encoder import ffmpeg_path


def quiet_native_logs() -> None:
    """Silence FFmpeg's own log lines (``[mov,mp4,... @ 0x..] moov atom not found``) that OpenCV's decoder prints
    for a broken input, which is then reported in one line instead. OpenCV reads ``OPENCV_FFMPEG_LOGLEVEL`` once,
    when the process opens its first capture: call this before that. A value the user set is kept."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET



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



def stated_frames(src: Path, fps: float) -> int | None:
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




class Frames:
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


def open_at(src: Path, start: float, length: float) -> tuple[Frames, np.ndarray | None, float]:
    """The frames of ``src`` after its picture at ``start`` seconds, that picture (None if there is none) and its
    time in ms.

    Where seeking fails (AVIs whose index holds empty frames, e.g.), frames are decoded from the beginning, once: the
    picture shown at ``start`` is the last one that began at or before it (if ``start`` is within the ``length``
    the container announces, in seconds), and it counts from ``start``."""
    cap = cv2.VideoCapture(str(src))
    if start > 0:
        cap.set(cv2.CAP_PROP_POS_MSEC, start * 1000.0)
    frames = Frames(cap)
    got = frames.read()
    if got is not None or start <= 0:
        return (frames, *got) if got is not None else (frames, None, cap.get(cv2.CAP_PROP_POS_MSEC))
    cap.release()
    frames, shown = Frames(cv2.VideoCapture(str(src))), None  # shown: the last picture that began by start
    while (got := frames.read()) is not None and got[1] <= start * 1000.0 + 0.5:
        shown = got
    if got is None and (shown is None or start >= length):  # no picture after start, and none on screen at it
        frames.release()
        return Frames(cv2.VideoCapture()), None, 0.0
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

