"""Preprocessing as the official options name it: resize_and_crop, crop, scale_width(_and_crop), none."""

from __future__ import annotations

import random
from typing import Literal

import cv2
import numpy as np

from i2i import I2IError

Preprocess = Literal["resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none"]


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    out = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC if w * h > img.shape[0] * img.shape[1]
                     else cv2.INTER_AREA)
    return out[:, :, None] if out.ndim == 2 else out


def _multiple_of_4(h: int, w: int) -> tuple[int, int]:
    """The size an uncropped image is resized to: each side rounded to a multiple of 4 (at least 4)."""
    return max(4, round(h / 4) * 4), max(4, round(w / 4) * 4)


def check_batch(batch_size: int, preprocess: str) -> None:
    """Images of one batch must have one size: only a cropping preprocess guarantees it (for any method)."""
    if batch_size > 1 and not str(preprocess).endswith("crop"):
        raise I2IError(f"--batch-size {batch_size} needs images of one size: use a cropping preprocess "
                       f"(data.preprocess=resize_and_crop, crop or scale_width_and_crop)")


class Transform:
    """Resize/crop/flip an HWC image; random choices use ``random`` (seeded per sample by the engine)."""

    def __init__(self, preprocess: str, load_size: int, crop_size: int, flip: bool, random_crop: bool) -> None:
        self.preprocess, self.load_size, self.crop_size = preprocess, load_size, crop_size
        self.flip, self.random_crop = flip, random_crop

    @classmethod
    def for_phase(cls, phase: str, preprocess: str, load_size: int, crop_size: int, flip: bool) -> Transform:
        """A dataset's transform for ``phase``: random crops and flips (when ``flip``) in training, a centre crop
        and no flip in held-out splits."""
        return cls(preprocess, load_size, crop_size, flip and phase == "train", phase == "train")

    @property
    def fixed_size(self) -> bool:
        """Whether every image comes out ``crop_size`` square (a cropping preprocess)."""
        return self.preprocess.endswith("crop")

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """The (height, width) ``__call__`` gives an ``h`` × ``w`` image, computed without the pixels."""
        if self.fixed_size:
            return self.crop_size, self.crop_size
        if self.preprocess.startswith("scale_width") and w != self.load_size:
            h, w = max(self.crop_size, round(self.load_size * h / w)), self.load_size
        return _multiple_of_4(h, w)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        if self.preprocess.startswith("resize"):
            img = _resize(img, self.load_size, self.load_size)
        elif self.preprocess.startswith("scale_width") and w != self.load_size:
            img = _resize(img, self.load_size, max(self.crop_size, round(self.load_size * h / w)))
        if self.preprocess.endswith("crop"):
            img = self._crop(img)
        elif self.preprocess == "none" or self.preprocess == "scale_width":
            h, w = img.shape[:2]
            nh, nw = _multiple_of_4(h, w)
            if (nh, nw) != (h, w):
                img = _resize(img, nw, nh)
        if self.flip and random.random() < 0.5:
            img = img[:, ::-1]
        return img

    def _crop(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        c = self.crop_size
        if h < c or w < c:  # smaller than the crop: upscale the short side first
            s = c / min(h, w)
            img = _resize(img, max(c, round(w * s)), max(c, round(h * s)))
            h, w = img.shape[:2]
        if self.random_crop:
            y, x = random.randint(0, h - c), random.randint(0, w - c)
        else:
            y, x = (h - c) // 2, (w - c) // 2
        return img[y : y + c, x : x + c]
