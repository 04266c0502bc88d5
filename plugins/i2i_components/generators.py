"""CycleGAN and CUT generators: the ResNet and U-Net generators, layer for layer as in the official implementations.

Modules keep the official structure (``model.N`` indices), so official state dicts load unchanged. Two departures
change speed, not results: activations after a normalization are not in-place (instance norm returns a view, and an
in-place ReLU on it makes autograd copy the whole activation back in the backward pass), and the output convolution
is a ``NarrowConv2d``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from i2i import I2IError

from .antialias import BlurDownsample, BlurUpsample
from .narrow_conv import NarrowConv2d
from .norms import Norm, norm_layer, uses_bias
from .winograd_conv import WinogradConv2d


class ResnetBlock(nn.Module):
    """Two 3×3 convolutions with reflection padding and a skip connection."""

    def __init__(self, dim: int, norm: Norm, dropout: bool, bias: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), WinogradConv2d(dim, dim, 3, bias=bias), norm_layer(norm, dim),
                                   nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), WinogradConv2d(dim, dim, 3, bias=bias), norm_layer(norm, dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _downsample(c_in: int, c_out: int, mode: str, norm: Norm, bias: bool) -> list[nn.Module]:
    if mode == "stride":
        return [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=bias), norm_layer(norm, c_out), nn.ReLU()]
    # CUT's anti-aliased down-sampling: the convolution at full resolution, then blur-pool
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias), norm_layer(norm, c_out), nn.ReLU(),
            BlurDownsample(c_out)]


def _upsample(c_in: int, c_out: int, mode: str, bias: bool) -> list[nn.Module]:
    if mode == "transpose":
        return [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=bias)]
    if mode == "blur":  # CUT's anti-aliased up-sampling, then a 3×3 conv (zero padding, as the official one)
        return [BlurUpsample(c_in), nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)]
    # resize-convolution (Odena et al. 2016): nearest upsampling then a 3×3 conv, free of checkerboard artifacts
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3, bias=bias)]


def encode_sequential(model: nn.Sequential, x: torch.Tensor, layers: Sequence[int], where: str) -> list[torch.Tensor]:
    """The outputs of ``model[i]`` for each ``i`` in ``layers`` (in that order), running ``model`` only up to the
    last layer asked for: the ``encode`` protocol for networks that are one ``nn.Sequential``."""
    wanted = [int(i) for i in layers]
    bad = [i for i in wanted if not 0 <= i < len(model)]
    if bad:
        raise I2IError(f"{where}: encode layer {bad[0]} does not exist; layers index its {len(model)} modules, "
                       f"0..{len(model) - 1}")
    found: dict[int, torch.Tensor] = {}
    last = max(wanted, default=-1)
    for i, module in enumerate(model):
        if i > last:
            break
        x = module(x)
        if i in wanted:
            found[i] = x
    return [found[i] for i in wanted]


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d2ngf, d4ngf, n_blocks × R4ngf, u2ngf, ungf, c7s1-out (Johnson et al.), tanh output.

    ``downsampling``: ``stride`` (a stride-2 3×3 conv, CycleGAN) or ``blur`` (a 3×3 conv, norm, ReLU, then blur-pool:
    CUT's anti-aliased layers). ``upsampling``: ``transpose`` (a stride-2 transposed conv, CycleGAN), ``resize``
    (nearest then a 3×3 conv) or ``blur`` (CUT's blur up-sampling then a 3×3 conv). The ``model`` indices follow
    the official CycleGAN and CUT generators, so their state dicts load strictly.
    """

    size_multiple = 4

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        n_blocks: int = 9,
        ngf: int = 64,
        norm: Norm = "instance",
        dropout: bool = False,
        upsampling: Literal["transpose", "resize", "blur"] = "transpose",
        downsampling: Literal["stride", "blur"] = "stride",
    ) -> None:
        super().__init__()
        if n_blocks < 0 or ngf < 1:
            raise ValueError("n_blocks must be >= 0 and ngf >= 1")
        bias = uses_bias(norm)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=bias),
                                   norm_layer(norm, ngf), nn.ReLU()]
        for i in range(2):
            c = ngf * 2**i
            layers += _downsample(c, c * 2, downsampling, norm, bias)
        layers += [ResnetBlock(ngf * 4, norm, dropout, bias) for _ in range(n_blocks)]
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            layers += [*_upsample(c, c // 2, upsampling, bias), norm_layer(norm, c // 2), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), NarrowConv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def encode(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """The outputs of ``model[i]`` for ``i`` in ``layers`` (CUT's ``nce_layers``), computing no further than the
        last of them: e.g. [0, 4, 8, 12, 16] for CUT's 6- and 9-block generators."""
        return encode_sequential(self.model, x, layers, "generator ResnetGenerator")


def cut_resnet_generator(
    in_channels: int,
    out_channels: int,
    n_blocks: int = 9,
    ngf: int = 64,
    norm: Norm = "instance",
    dropout: bool = False,
    upsampling: Literal["transpose", "resize", "blur"] = "blur",
    downsampling: Literal["stride", "blur"] = "blur",
) -> ResnetGenerator:
    """CUT's generator: :class:`ResnetGenerator` with anti-aliased sampling by default. A factory of its own (not a
    partial fixing the sampling) so that users can still choose ``downsampling=stride upsampling=transpose``."""
    return ResnetGenerator(in_channels, out_channels, n_blocks, ngf, norm, dropout, upsampling, downsampling)


class UnetSkipBlock(nn.Module):
    """One U-Net level: down, the inner levels, up, concatenated with its input (except the outermost)."""

    def __init__(
        self,
        outer: int,
        inner: int,
        in_channels: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: Norm = "instance",
        dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        bias = uses_bias(norm)
        down = nn.Conv2d(in_channels or outer, inner, 4, stride=2, padding=1, bias=bias)
        if outermost:
            up = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1)
            layers = [down, submodule, nn.ReLU(True), up, nn.Tanh()]
        elif innermost:
            up = nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), up, norm_layer(norm, outer)]
        else:
            up = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1, bias=bias)
            layers = [nn.LeakyReLU(0.2, True), down, norm_layer(norm, inner), submodule, nn.ReLU(True), up,
                      norm_layer(norm, outer)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net with ``num_downs`` stride-2 levels (Isola et al.): input sides must be multiples of 2**num_downs."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_downs: int = 8,
        ngf: int = 64,
        norm: Norm = "instance",
        dropout: bool = False,
    ) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError("num_downs must be >= 5")
        self.size_multiple = 2**num_downs
        block = UnetSkipBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = UnetSkipBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, dropout=dropout)
        for mult in (4, 2, 1):
            block = UnetSkipBlock(ngf * mult, ngf * mult * 2, submodule=block, norm=norm)
        self.model = UnetSkipBlock(out_channels, ngf, in_channels, block, outermost=True, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
