"""Normalization layers as the official implementation configures them."""

from __future__ import annotations

from typing import Literal

from torch import nn

Norm = Literal["instance", "batch", "none"]


def norm_layer(norm: Norm, channels: int) -> nn.Module:
    """Instance norm without affine or running stats; batch norm with both; or nothing."""
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    return nn.Identity()


def uses_bias(norm: Norm) -> bool:
    """Convolutions before batch norm need no bias (its affine shift replaces it)."""
    return norm != "batch"
