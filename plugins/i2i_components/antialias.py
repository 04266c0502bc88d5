"""Anti-aliased down- and up-sampling (Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019), as
CUT's networks use them.

Down-sampling low-pass filters before it subsamples (a fixed binomial blur applied with stride 2), so a shifted input
gives a shifted, not a different, feature map; up-sampling interpolates with the matching filter. Both filters are
persistent buffers named ``filt``, one copy per channel, so that official CUT state dicts (which store them) load
strictly. The modules are not ``nn.Conv2d`` subclasses: weight initialization and optimizers leave the filters alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def binomial_filter(size: int) -> torch.Tensor:
    """The ``size × size`` outer product of the binomial row ``C(size-1, k)``, normalized to sum 1."""
    if not 1 <= size <= 7:
        raise ValueError(f"filter size must be in 1..7, got {size}")
    row = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float64)
    kernel = torch.outer(row, row)
    return (kernel / kernel.sum()).float()


class BlurDownsample(nn.Module):
    """Blur-pool: pad, then a depthwise convolution with a normalized binomial filter at stride ``stride``."""

    def __init__(self, channels: int, filt_size: int = 3, stride: int = 2, pad: str = "reflect") -> None:
        super().__init__()
        if pad not in ("reflect", "replicate", "zeros"):
            raise ValueError(f"pad must be reflect, replicate or zeros, got {pad!r}")
        self.stride = stride
        self.pad_mode = "constant" if pad == "zeros" else pad
        before, after = (filt_size - 1) // 2, filt_size // 2  # the extra pixel of an even filter goes right/below
        self.padding = (before, after, before, after)
        self.register_buffer("filt", binomial_filter(filt_size)[None, None].repeat(channels, 1, 1, 1))

    @property
    def receptive_reach(self) -> int:
        """Input pixels beyond an output pixel's own that it depends on, either side (for tiling, i2i.tiling)."""
        return max(self.padding) + self.stride - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.padding):
            x = F.pad(x, self.padding, mode=self.pad_mode)
        return F.conv2d(x, self.filt, stride=self.stride, groups=x.shape[1])


class BlurUpsample(nn.Module):
    """Up-sampling by ``stride``: replicate-pad 1, a depthwise transposed convolution with the binomial filter
    scaled by ``stride²`` (so a constant image stays constant), cropped to ``stride`` × the input size. With the
    default [1, 3, 3, 1] filter this is bilinear ×2 up-sampling (``align_corners=False``), computed as CUT does."""

    def __init__(self, channels: int, filt_size: int = 4, stride: int = 2) -> None:
        super().__init__()
        self.stride = stride
        self.odd = filt_size % 2 == 1
        self.crop_padding = 1 + (filt_size - 1) // 2
        self.register_buffer("filt", binomial_filter(filt_size)[None, None].repeat(channels, 1, 1, 1) * stride**2)

    @property
    def receptive_reach(self) -> int:
        """Input pixels beyond an output pixel's own that it depends on, either side (for tiling, i2i.tiling)."""
        return 1 + self.crop_padding // self.stride  # the replicate pad's pixel, then the filter's span

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.filt, stride=self.stride,
                               padding=self.crop_padding, groups=x.shape[1])
        y = y[:, :, 1:, 1:]
        return y if self.odd else y[:, :, :-1, :-1]
