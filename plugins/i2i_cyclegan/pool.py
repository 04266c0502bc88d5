"""The image history pool (Shrivastava et al.): D sees a mix of current and earlier generated images."""

from __future__ import annotations

import random
from typing import Any

import torch


class ImagePool:
    """Holds up to ``size`` generated images; each query returns, per image, the new one or (p = 0.5, once
    full) a stored one that the new image replaces. ``size = 0`` disables it. Own RNG, so resume is exact."""

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        images = images.detach()
        for k in range(images.shape[0]):
            # a slice keeps channels_last strides (unsqueeze would not); the pool keeps a copy, not the whole batch
            image = images[k : k + 1]
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif self.rng.uniform(0, 1) > 0.5:
                i = self.rng.randint(0, self.size - 1)
                out.append(self.images[i])
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict[str, Any]:
        return {"images": [t.cpu() for t in self.images], "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        self.images = [t.to(device) for t in state["images"]]
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
