"""Normalization layers as the official implementation configures them."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Norm = Literal["instance", "batch", "none"]


class InstanceNorm(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` without affine parameters or running statistics, computed on the CPU as a group norm
    with one channel per group — the same function (per-sample, per-channel mean and biased variance, same eps).

    PyTorch's CPU instance norm reshapes to a batch norm over ``N·C`` channels, whose kernels run ~5× slower than
    group norm's on a CycleGAN activation and whose contiguous backward strays from float64 by up to ~2 % of the
    largest gradient; group norm's stays within ~1e-5 (``tests/test_performance_options.py``). Other devices,
    channels_last tensors and ONNX/TorchScript export take the stock path.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=False, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous() or torch.jit.is_tracing()
                or torch.onnx.is_in_onnx_export()):
            return super().forward(x)  # exported graphs keep ONNX's InstanceNormalization
        return F.group_norm(x, self.num_features, eps=self.eps)


def norm_layer(norm: Norm, channels: int) -> nn.Module:
    """Instance norm without affine or running stats; batch norm with both; or nothing."""
    if norm == "instance":
        return InstanceNorm(channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    return nn.Identity()


def uses_bias(norm: Norm) -> bool:
    """Convolutions before batch norm need no bias (its affine shift replaces it)."""
    return norm != "batch"
