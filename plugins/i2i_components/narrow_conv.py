"""A convolution with few output channels (a generator's RGB output, a PatchGAN's logit map), fast to train on a CPU.

oneDNN's CPU convolution vectorizes over output channels, so a 64→3 7×7 convolution runs at a tenth of the rate of
the 3×3 convolutions around it, and its backward pass is slower still. A stride-1 convolution equals the transposed
convolution of the flipped, transposed kernel, which oneDNN vectorizes over the wide side instead: at 256 px the
generator's output layer trains 2.5× faster that way (forward + backward, measured in ``benchmarks/``). The module
is an ``nn.Conv2d`` (same parameters, same state-dict keys); only the CPU training path changes, and its result
equals the plain convolution's up to fp32 rounding (``tests/test_performance_options.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NarrowConv2d(nn.Conv2d):
    """``nn.Conv2d`` that trains on the CPU as the equivalent transposed convolution where that is exact."""

    def _transposable(self, x: torch.Tensor) -> bool:
        return (x.device.type == "cpu" and torch.is_grad_enabled() and self.stride == (1, 1)
                and self.dilation == (1, 1) and self.groups == 1 and self.padding_mode == "zeros"
                and not isinstance(self.padding, str)
                and all(p < k for p, k in zip(self.padding, self.kernel_size, strict=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._transposable(x):
            return super().forward(x)
        padding = tuple(k - 1 - p for p, k in zip(self.padding, self.kernel_size, strict=True))
        return F.conv_transpose2d(x, self.weight.flip(2, 3).transpose(0, 1), self.bias, padding=padding)
