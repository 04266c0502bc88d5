"""Finding and reading image files (every format OpenCV decodes), and converting to and from tensors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from .errors import I2IError
from .files import atomic_write

IMAGE_EXTENSIONS = frozenset(
    [".bmp", ".dib", ".jpg", ".jpeg", ".jpe", ".jp2", ".png", ".webp", ".avif", ".pbm", ".pgm", ".ppm", ".pxm",
     ".pnm", ".sr", ".ras", ".tif", ".tiff", ".exr", ".hdr", ".pic"]
)


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def readable(path: Path) -> bool:
    """Whether ``path`` has an image extension and a header OpenCV can decode (the file is not decoded)."""
    return is_image_name(path) and cv2.haveImageReader(str(path))


def scan_folder(folder: Path, recursive: bool = True) -> tuple[list[Path], list[Path]]:
    """(images, rejected): files under ``folder`` that OpenCV can decode by signature, and the other files.

    Hidden files (``.DS_Store``, ...) are ignored. The check reads only each file's header, so it stays fast on
    large folders; a file truncated after its header is caught when it is read.
    """
    if not folder.is_dir():
        raise I2IError(f"folder not found: {folder}")
    files = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir())
                   if p.is_file() and not p.name.startswith("."))
    good, bad = [], []
    for p in files:
        (good if readable(p) else bad).append(p)
    return good, bad


def read_image(path: Path, channels: int | None = None) -> np.ndarray | None:
    """HWC uint8/uint16 image in RGB (or gray when ``channels == 1``); None if it cannot be decoded.

    ``channels=None`` keeps the file's own channels (gray, RGB or RGBA) and bit depth.
    """
    flag = cv2.IMREAD_UNCHANGED if channels is None else cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
        img = cv2.imdecode(data, flag) if data.size else None
    except (OSError, cv2.error):
        return None
    if img is None:
        return None
    if img.ndim == 2:
        img = img[:, :, None]
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    if channels is not None and img.dtype != np.uint8:
        img = (img / (np.iinfo(img.dtype).max / 255.0)).round().astype(np.uint8)
    return img


def write_image(path: Path, img: np.ndarray) -> None:
    """Write an HWC RGB/RGBA/gray image, format by extension, atomically (temporary file, then rename)."""
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
    try:
        ok, buf = cv2.imencode(path.suffix or ".png", img)
    except cv2.error:
        ok = False
    if not ok:
        raise I2IError(f"cannot encode a {img.dtype} image with {img.shape[-1]} channel(s) as {path.suffix or '.png'}"
                       f" for {path}; use an output format that supports it (e.g. .png)")
    atomic_write(path, lambda tmp: buf.tofile(str(tmp)))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HWC uint8/uint16 array -> CHW float tensor in [-1, 1]."""
    scale = float(np.iinfo(img.dtype).max) if img.dtype.kind == "u" else 1.0
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()
    return t.div_(scale / 2).sub_(1.0)


def to_image(t: torch.Tensor, dtype: np.dtype = np.uint8) -> np.ndarray:
    """CHW tensor in [-1, 1] -> HWC array of ``dtype`` (uint8 or uint16)."""
    scale = float(np.iinfo(dtype).max)
    arr = ((t.detach().float().clamp(-1, 1) + 1) * (scale / 2)).round().cpu().numpy().transpose(1, 2, 0)
    return arr.astype(dtype)
