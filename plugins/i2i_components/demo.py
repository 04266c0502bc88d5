"""The built-in demo dataset: real photos cut into tiles; domain B is the same kind of photo as a film negative
(every channel inverted), so the true A→B mapping of the held-out tiles is known and a translation can be scored.

Layout (built once into the cache, atomically): ``trainA/``, ``trainB/`` (unpaired: disjoint tiles),
``testA/`` (held-out tiles) and ``testB/`` (the same tiles transformed, i.e. the ground truth for ``testA``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from i2i.images import read_image, write_image

VERSION = 2
TILE = 72
STRIDE = 36
DESCRIPTION = "photo tiles; domain B = film negatives of other tiles"
PHOTOS = Path(__file__).parent / "data" / "demo"


def cache_dir() -> Path:
    """``$I2I_HOME``, else ``$XDG_CACHE_HOME/i2i``, else ``~/.cache/i2i``."""
    if os.environ.get("I2I_HOME"):
        return Path(os.environ["I2I_HOME"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "i2i"


def true_transform(img: np.ndarray) -> np.ndarray:
    """The demo's A→B mapping on an HWC uint8 image: the film negative."""
    return cv2.bitwise_not(img)


def _tiles(img: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(train, test): overlapping tiles above the bottom strip; the bottom strip's tiles are held out."""
    h, w = img.shape[:2]
    top = img[: h - TILE]
    train = [top[y : y + TILE, x : x + TILE] for y in range(0, top.shape[0] - TILE + 1, STRIDE)
             for x in range(0, w - TILE + 1, STRIDE)]
    test = [img[h - TILE :, x : x + TILE] for x in range(0, w - TILE + 1, TILE)]
    return train, test


def build_folder(target: Path, write: Callable[[Path], None]) -> Path:
    """Make the folder ``target`` by ``write(tmp)`` into a temporary folder beside it, renamed when complete: a
    partial build is never seen, and of two processes building at once the first one's is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        try:
            tmp.rename(target)
        except OSError:  # built concurrently by another process: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def build(target: Path) -> Path:
    """Write the demo dataset to ``target`` (atomically: :func:`build_folder`)."""

    def write(tmp: Path) -> None:
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

    return build_folder(target, write)


def demo_root() -> Path:
    """The demo dataset folder, built on first use."""
    target = cache_dir() / f"demo-v{VERSION}"
    return target if (target / "testB").is_dir() else build(target)
