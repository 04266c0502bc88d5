"""What one probe pass through a generator shows, by forward hooks on its layers: the radius of its receptive field
(the sum of every layer's reach, an upper bound whatever the branches and skips) and its peak activation memory per
input pixel (for :mod:`i2i.tiling`)."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def reach(module: nn.Module) -> float | None:
    """How many of its input's pixels beyond an output pixel's own a leaf module's output depends on, on either side
    (an upper bound); 0 for pointwise layers and padding; None where unknown (adaptive pooling, attention, types this
    does not know). A plugin's layer may say it as ``receptive_reach``."""
    own = getattr(module, "receptive_reach", None)
    if own is not None:
        return float(own)
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.ConvTranspose2d)):
        k, s = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
        d = _pair(getattr(module, "dilation", 1))
        spans_ = [(ki - 1) * di for ki, di in zip(k, d, strict=True)]
        if isinstance(module, nn.ConvTranspose2d):  # output o reads inputs (o + p - j·d) / s
            p = _pair(module.padding)
            return max(max(pi, span - pi + 1 - si) / si for span, si, pi in zip(spans_, s, p, strict=True))
        # padding taken as centred (a pad layer before the convolution supplies it): an output pixel reads p px
        # before its footprint's first input pixel, plus up to s - 1 px of rounding, and span - p px after it
        return float(max(max(span - span // 2, span // 2 + si - 1) for span, si in zip(spans_, s, strict=True)))
    if isinstance(module, nn.Upsample):
        return {"nearest": 0.5, "bicubic": 2.0}.get(module.mode, 1.0)
    kind = type(module).__module__
    if isinstance(module, nn.MultiheadAttention) or (isinstance(module, (nn.Softmax, nn.LogSoftmax, nn.Softmin))
                                                     and module.dim not in (1, -3)):
        return None
    if kind in ("torch.nn.modules.activation", "torch.nn.modules.padding", "torch.nn.modules.dropout") or isinstance(
            module, (nn.Identity, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
                     nn.GroupNorm, nn.LocalResponseNorm)):
        return 0.0
    return None


@dataclass
class Profile:
    """What one probe pass through a generator shows."""

    radius: int | None  # receptive-field radius, image px: the sum of every layer's reach (an upper bound)
    unknown: str | None  # the first layer whose reach is unknown (then radius is None)
    bytes_per_pixel: float  # peak activation memory per input pixel of one image


def profile(model: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Profile:
    """Run ``x`` (one square image) through ``model`` by ``run`` with forward hooks on every module: each leaf layer's
    reach scaled to image pixels, and the memory the tensors still referenced hold after each layer (plus a
    temporary of the layer's output size)."""
    side, total, unknown, peak = x.shape[-1], 0.0, None, 0
    live: dict[int, tuple[weakref.ref, int]] = {}  # storage address -> (its storage, bytes): freed ones die

    def tensors(value: object) -> list[torch.Tensor]:
        items = value if isinstance(value, (tuple, list)) else [value]
        return [t for t in items if torch.is_tensor(t)]

    def hold(module: nn.Module, inputs: tuple) -> None:
        for t in tensors(inputs):
            s = t.untyped_storage()
            live[s.data_ptr()] = (weakref.ref(s), s.nbytes())

    def after(module: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal total, unknown, peak
        outs = tensors(output)
        hold(module, (*tensors(inputs), *outs))
        peak = max(peak, sum(n for ref, n in live.values() if ref() is not None) + sum(t.nbytes for t in outs))
        if any(module.children()) or unknown is not None or not outs:
            return
        r = reach(module)
        if r is None:
            unknown = type(module).__name__
        elif r:  # image px per pixel of the layer's input; a conv's output is unpadded, so measure on it
            s = _pair(getattr(module, "stride", 1))[1]
            out_w = outs[0].shape[-1]
            scale = (side / out_w / s if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))
                     else side / out_w * s if isinstance(module, nn.ConvTranspose2d)
                     else side / tensors(inputs)[0].shape[-1])
            total += r * scale

    handles = [model.register_forward_pre_hook(hold)] + [m.register_forward_hook(after) for m in model.modules()]
    try:
        run(x)
    finally:
        for h in handles:
            h.remove()
    return Profile(None if unknown else math.ceil(total - 1e-6), unknown, peak / side**2)


def smooth_probe(channels: int, side: int) -> torch.Tensor:
    """A smooth random image in [-1, 1] (the same every call): a 6×6 random pattern upsampled bicubically."""
    low = torch.rand(1, channels, 6, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return F.interpolate(low, size=(side, side), mode="bicubic", align_corners=False).clamp(-1, 1)
