"""The pix2pix demo dataset: the bundled photos cut into paired tiles, A = a faded, desaturated print of the photo
and B = the photo, so pix2pix learns "faded print → photo" and the truth of every held-out tile is known.

Layout (the official ``aligned`` one, built once into the cache, atomically): ``train/``, ``val/``, ``test/`` of
72 px tiles stored as A|B side by side (144 × 72 PNG). Train tiles overlap and come from the upper part of each
photo; val and test tiles come from its bottom strip (alternately), which no train tile touches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from i2i.images import read_image, write_image
from i2i_components.demo import PHOTOS, build_folder, cache_dir

VERSION = 1
TILE = 72
STRIDE = 28  # 282 train tiles from the four photos: a 64 px, ngf 16 demo trains in minutes on a CPU
DESCRIPTION = "paired photo tiles; A = faded desaturated print, B = the photo"

Box = tuple[int, int]  # (y, x) of a TILE × TILE tile

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_TINT = np.array([1.0, 0.94, 0.82], np.float32)


def true_transform(img: np.ndarray) -> np.ndarray:
    """The A-from-photo mapping on an HWC RGB uint8 image: a faded print. Saturation down to 40% (luma kept),
    gamma 1.4, contrast compressed to [0.1, 0.85], a warm tint. Each step is per pixel and invertible, so B is
    (up to rounding) a function of A that pix2pix can learn; A itself, as the answer, scores about 18 dB PSNR
    against the photo on the test tiles (the bar a trained model must beat)."""
    x = img.astype(np.float32) / 255
    lum = (x @ _LUMA)[..., None]
    x = np.clip(lum + 0.4 * (x - lum), 0, 1) ** 1.4
    x = (0.1 + 0.75 * x) * _TINT
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def tile_boxes(h: int, w: int) -> dict[str, list[Box]]:
    """Split -> the tiles of an ``h`` × ``w`` photo: overlapping train tiles above the bottom TILE rows, and the
    bottom strip's non-overlapping tiles, alternately val and test."""
    train = [(y, x) for y in range(0, h - 2 * TILE + 1, STRIDE) for x in range(0, w - TILE + 1, STRIDE)]
    strip = [(h - TILE, x) for x in range(0, w - TILE + 1, TILE)]
    return {"train": train, "val": strip[0::2], "test": strip[1::2]}


def build(target: Path) -> Path:
    """Write the demo dataset to ``target`` (atomically: a partial build is never seen)."""

    def write(tmp: Path) -> None:
        for photo in sorted(PHOTOS.glob("*.jpg")):
            img = read_image(photo, 3)
            for split, boxes in tile_boxes(*img.shape[:2]).items():
                (tmp / split).mkdir(exist_ok=True)
                for i, (y, x) in enumerate(boxes):
                    b = img[y : y + TILE, x : x + TILE]
                    write_image(tmp / split / f"{photo.stem}_{i:03d}.png", np.concatenate([true_transform(b), b], 1))

    return build_folder(target, write)


def demo_root() -> Path:
    """The pix2pix demo dataset folder, built on first use."""
    target = cache_dir() / f"pix2pix-demo-v{VERSION}"
    return target if (target / "test").is_dir() else build(target)
