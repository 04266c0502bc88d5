"""CycleGAN discriminators: PatchGAN (70×70 for three layers) and the 1×1 pixel discriminator."""

from __future__ import annotations

import torch
from torch import nn

from .antialias import BlurDownsample
from .narrow_conv import NarrowConv2d
from .norms import Norm, norm_layer, uses_bias


class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 4×4 convs, one stride-1, then a 1-channel map of patch logits.

    ``antialias`` (CUT's default): each stride-2 convolution runs at stride 1 and is followed, after its activation,
    by a blur-pool, as in the official CUT discriminator (whose state dicts then load strictly).
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: Norm = "instance",
                 antialias: bool = False) -> None:
        super().__init__()
        if n_layers < 1 or ndf < 1:
            raise ValueError("n_layers and ndf must be >= 1")
        bias = uses_bias(norm)

        def down(channels: int) -> list[nn.Module]:
            return [BlurDownsample(channels)] if antialias else []

        step = 1 if antialias else 2
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=step, padding=1), nn.LeakyReLU(0.2, True),
                                   *down(ndf)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            last = n == n_layers
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1 if last else step, padding=1, bias=bias),
                       norm_layer(norm, ndf * mult), nn.LeakyReLU(0.2)]  # not in-place: see generators.py
            if not last:
                layers += down(ndf * mult)
        layers.append(NarrowConv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1×1 PatchGAN: classifies every pixel independently."""

    def __init__(self, in_channels: int, ndf: int = 64, norm: Norm = "instance") -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, ndf, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 1, bias=uses_bias(norm)), norm_layer(norm, ndf * 2), nn.LeakyReLU(0.2),
            nn.Conv2d(ndf * 2, 1, 1, bias=uses_bias(norm)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
