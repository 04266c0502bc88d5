"""Sample grids: the method's sample rows of the fixed sample batch, as one PNG per save."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from ..files import atomic_write
from .preflight import checked_rows


def _padded(images: list[torch.Tensor]) -> torch.Tensor:
    """CHW images in [-1, 1] as one batch, each padded at its right and bottom with black (-1) to the largest height
    and width among them (domains differ in size with ``data.preprocess=none`` or ``scale_width``)."""
    h, w = max(t.shape[-2] for t in images), max(t.shape[-1] for t in images)
    return torch.stack([torch.nn.functional.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]), value=-1.0)
                        for t in images])


class Samples:
    """Saving sample grids."""

    def save_samples(self) -> Path:
        # e.g. [[real A, fake B, rec A], [real B, fake A, rec B]]
        with self._aside():
            rows = checked_rows(self._method_label, self.method.samples(self.sample_batch))
        images = [t[i] for i in range(rows[0][0].shape[0]) for row in rows for t in row]
        images = [t.expand(3, *t.shape[1:]) if t.shape[0] == 1 else t[:3] for t in images]
        cols = sum(len(row) for row in rows)
        grid = make_grid(_padded(images).float().cpu(), nrow=cols, normalize=True, value_range=(-1, 1))
        return atomic_write(self.out / "samples" / f"step_{self.step:07d}.png", lambda tmp: save_image(grid, tmp))
