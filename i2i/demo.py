"""The built-in demo dataset: real photos cut into tiles; domain B is the same kind of photo after a known colour
transform (a 90° hue rotation, SVG ``feColorMatrix`` style), so the true A→B mapping of held-out tiles is known.

Layout (built once into the cache, atomically): ``trainA/``, ``trainB/`` (unpaired: disjoint tiles),
``testA/`` (held-out tiles) and ``testB/`` (the same tiles transformed, i.e. the ground truth for ``testA``).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from .images import read_image, write_image

VERSION = 1
TILE = 72
STRIDE = 36
HUE_DEGREES = 90.0
PHOTOS = Path(__file__).parent / "data" / "demo"


def cache_dir() -> Path:
    """``$I2I_HOME``, else ``$XDG_CACHE_HOME/i2i``, else ``~/.cache/i2i``."""
    if os.environ.get("I2I_HOME"):
        return Path(os.environ["I2I_HOME"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "i2i"


def hue_matrix(degrees: float) -> np.ndarray:
    """3×3 RGB matrix rotating hue by ``degrees`` while keeping luminance (Rec. 709 weights)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    lum = np.array([0.213, 0.715, 0.072])
    return (np.tile(lum, (3, 1)) + c * (np.eye(3) - np.tile(lum, (3, 1)))
            + s * np.array([[-0.213, -0.715, 0.928], [0.143, 0.140, -0.283], [-0.787, 0.715, 0.072]]))


def true_transform(img: np.ndarray) -> np.ndarray:
    """The demo's A→B mapping on an HWC uint8 RGB image."""
    out = cv2.transform(img.astype(np.float32), hue_matrix(HUE_DEGREES))
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def _tiles(img: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(train, test): overlapping tiles above the bottom strip; the bottom strip's tiles are held out."""
    h, w = img.shape[:2]
    top = img[: h - TILE]
    train = [top[y : y + TILE, x : x + TILE] for y in range(0, top.shape[0] - TILE + 1, STRIDE)
             for x in range(0, w - TILE + 1, STRIDE)]
    test = [img[h - TILE :, x : x + TILE] for x in range(0, w - TILE + 1, TILE)]
    return train, test


def build(target: Path) -> Path:
    """Write the demo dataset to ``target`` (via a temporary folder, so a partial build is never seen)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=target.parent))
    try:
        for sub in ("trainA", "trainB", "testA", "testB"):
            (tmp / sub).mkdir()
        for photo in sorted(PHOTOS.glob("*.jpg")):
            img = read_image(photo, 3)
            train, test = _tiles(img)
            for i, tile in enumerate(train):
                domain = "trainA" if i % 2 == 0 else "trainB"
                write_image(tmp / domain / f"{photo.stem}_{i:03d}.png",
                            tile if domain == "trainA" else true_transform(tile))
            for i, tile in enumerate(test):
                write_image(tmp / "testA" / f"{photo.stem}_{i:02d}.png", tile)
                write_image(tmp / "testB" / f"{photo.stem}_{i:02d}.png", true_transform(tile))
        try:
            tmp.rename(target)
        except OSError:  # built concurrently by another process: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def demo_root() -> Path:
    """The demo dataset folder, built on first use."""
    target = cache_dir() / f"demo-v{VERSION}"
    return target if (target / "testB").is_dir() else build(target)
