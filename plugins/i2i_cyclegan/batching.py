"""Whether a network runs a step's two inputs (e.g. G(a) and the identity G(b)) as one batch.

One call on both inputs computes exactly what two calls compute when the network has no batch statistics, and on a
GPU it is the faster way. On a CPU it is faster only while the pair's feature maps stay in the cache: on 2 cores of
an AMD EPYC (32 MiB L3, torch 2.14) one batch made the CycleGAN step 4–10 % faster at 128² (ngf 32 and 64) and at
256² with ngf 32, where a pair's largest activation is 4.2–16.8 MiB, but 5 % slower at 256² with ngf 64 (33.5 MiB):
oneDNN then gives each thread one image, and the two images' feature maps evict each other from the cache.
The automatic choice therefore batches on a CPU only up to ``CPU_PAIR_BYTES``, measured once per network from its
largest activation per input pixel on the meta device (no memory, no arithmetic).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

CPU_PAIR_BYTES = 24 * 2**20
PROBE_SIZE = 256  # a side every built-in generator and discriminator accepts

BatchedChoice = bool | Literal["auto"]


def has_batch_norm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def activation_bytes_per_pixel(net: nn.Module, channels: int) -> float | None:
    """Bytes of ``net``'s largest intermediate output per input pixel, from a forward pass of a copy on the meta
    device; ``None`` when the network cannot run there."""
    meta = copy.deepcopy(net).to("meta")
    largest = 0

    def record(_module: nn.Module, _inputs: tuple, out: object) -> None:
        nonlocal largest
        if isinstance(out, torch.Tensor):
            largest = max(largest, out.numel() * out.element_size())

    for m in meta.modules():
        m.register_forward_hook(record)
    try:
        with torch.no_grad():
            meta(torch.empty(1, channels, PROBE_SIZE, PROBE_SIZE, device="meta"))
    except Exception:  # any network a plugin brings; the choice then falls back to batching
        return None
    return largest / PROBE_SIZE**2


class Batching:
    """The choice for one network: ``True``/``False`` as configured, ``False`` with batch norm (not exact), and for
    ``"auto"``: always on a GPU, on a CPU while a pair's largest activation is at most ``CPU_PAIR_BYTES``."""

    def __init__(self, choice: BatchedChoice, net: nn.Module, channels: int, device: torch.device) -> None:
        self.per_pixel: float | None = None
        if has_batch_norm(net):
            self.value: bool | None = False
        elif choice != "auto":
            self.value = bool(choice)
        elif device.type != "cpu":
            self.value = True
        else:
            self.per_pixel = activation_bytes_per_pixel(net, channels)
            self.value = None if self.per_pixel is not None else True

    def decide(self, batch_size: int, height: int, width: int) -> bool:
        """The choice for training batches of ``batch_size`` images of ``height`` × ``width`` (fixed once made)."""
        if self.value is None:
            self.value = 2 * batch_size * height * width * self.per_pixel <= CPU_PAIR_BYTES
        return self.value

    def __call__(self, x: torch.Tensor) -> bool:
        """The choice for a pair of inputs shaped like ``x``."""
        return self.decide(x.shape[0], x.shape[-2], x.shape[-1])
