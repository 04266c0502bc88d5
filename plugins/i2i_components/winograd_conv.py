"""A 3×3 convolution computed by Winograd's minimal filtering F(4×4, 3×3) on the CPU (Lavin & Gray, CVPR 2016).

A CycleGAN ResNet generator spends ~90 % of its arithmetic in its residual blocks' 3×3, 4·ngf → 4·ngf convolutions.
Winograd's algorithm computes each 4×4 output tile from a 6×6 input tile with 36 multiplications per channel pair
instead of 144: the input and kernel are transformed (Bᵀ d B, G g Gᵀ), multiplied as 36 independent matrix
products over the channels, and transformed back (Aᵀ m A). cuDNN picks the same algorithm on GPUs; PyTorch's CPU
convolution (oneDNN) does not. The transforms are exact linear maps, so the result is the same convolution up to
rounding: equal to ``conv2d`` to 1e-11 in float64; in fp32 one layer is within ~1e-5 of the output's scale, and a
ResNet generator's weight gradients within ~3e-3 of float64 norm-wise at ngf 64 and 256 px, where stock fp32 is
within ~1e-3 (the order of the TF32 convolutions PyTorch uses by default on recent GPUs;
``tests/test_performance_options.py``).

The transforms and their copies cost memory traffic per channel, the products arithmetic per channel pair, and small
tile counts make small matrix products, so the algorithm pays off only for wide layers at 64×64 and above: a 256 px
training step with ngf 64 runs 0.70–0.78× the reference loop's time with it against 0.93–0.96× without
(``benchmarks/train_step.py``), while 128 channels, or 256 channels at 32×32, train slower (``benchmarks/winograd.py``).
Its cost is memory: the step's peak RSS is 1.25–1.32× the reference's, the allocator keeping freed transform buffers.
``WinogradConv2d`` therefore takes the Winograd path only for such layers on contiguous fp32 CPU tensors outside
autocast, export and compilation, and works on bands of tile rows small enough to stay in the processor's cache; the
backward pass saves what ``conv2d`` saves and recomputes the transforms. It is an ``nn.Conv2d``: same parameters,
same state-dict keys.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.autograd import forward_ad

#: narrowest layer (input and output channels) that takes the Winograd path
MIN_CHANNELS = 192
#: fewest 4×4 output tiles per image (a 64×64 output) that take the Winograd path
MIN_TILES = 256
#: largest transformed band held at once, in elements (36 · channels · tiles): ~9 MB in fp32
BAND_ELEMENTS = 36 * 256 * 256

_BT = torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                    [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=torch.float64)
_G = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                   [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64)
_AT = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                   dtype=torch.float64)
#: the 2-D transforms as Kronecker products acting on row-major flattened tiles: input 36×36, kernel 36×9,
#: output 16×36 (constants, cast per call)
_KRON = tuple(torch.kron(m, m) for m in (_BT, _G, _AT))


def _transforms(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    kb, kg, ka = (m.to(like, copy=True) for m in _KRON)
    return kb, kg, ka


def _bands(tile_rows: int, tile_cols: int, channels: int) -> list[tuple[int, int]]:
    """Split tile rows into bands whose transformed tiles fit ``BAND_ELEMENTS``."""
    rows = max(1, BAND_ELEMENTS // (36 * channels * tile_cols))
    return [(r, min(r + rows, tile_rows)) for r in range(0, tile_rows, rows)]


def _pad_to(t: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``t`` zero-padded at the bottom and right to ``height × width`` (itself when it has that size)."""
    if (height, width) == tuple(t.shape[2:]):
        return t
    return nn.functional.pad(t, (0, width - t.shape[3], 0, height - t.shape[2]))


def _tiled(x: torch.Tensor, th: int, tw: int) -> torch.Tensor:
    """``x`` contiguous and padded to ``th × tw`` whole input tiles (4·t + 2 pixels)."""
    return _pad_to(x.contiguous(), th * 4 + 2, tw * 4 + 2)


def _tile_transform(x: torch.Tensor, kb: torch.Tensor, r0: int, r1: int, tw: int) -> torch.Tensor:
    """Bᵀ d B of the 6×6 input tiles in tile rows ``r0:r1`` of one image ``x`` (C×H×W, contiguous): 36×C×tiles."""
    c, _, row = x.shape
    tiles = x[:, 4 * r0:].as_strided((6, 6, c, r1 - r0, tw), (row, 1, x.stride(0), 4 * row, 4))
    return torch.mm(kb, tiles.reshape(36, -1)).view(36, c, -1)


def _kernel_transform(weight: torch.Tensor, kg: torch.Tensor) -> torch.Tensor:
    """G g Gᵀ of every 3×3 kernel: 36×C_out×C_in."""
    c_out, c_in = weight.shape[:2]
    return torch.mm(kg, weight.reshape(c_out * c_in, 9).t()).view(36, c_out, c_in)


class _Winograd(torch.autograd.Function):
    """``conv2d(x, weight, bias)`` for a 3×3 kernel, stride 1, no padding, via F(4×4, 3×3); input N×C×H×W.

    Saves what ``conv2d`` saves (input and weight) and recomputes the transforms band by band in the backward pass,
    so memory matches the stock convolution's. A backward pass that builds a graph (``create_graph=True``, e.g. a
    gradient penalty) gets ``conv2d``'s differentiable gradients instead."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight, bias)
        n, c, h_in, w_in = x.shape
        c_out = weight.shape[0]
        h, w = h_in - 2, w_in - 2
        th, tw = math.ceil(h / 4), math.ceil(w / 4)
        x = _tiled(x, th, tw)
        kb, kg, ka = _transforms(x)
        u = _kernel_transform(weight, kg)
        y = x.new_empty(n, c_out, th * 4, tw * 4)
        bands = _bands(th, tw, max(c, c_out))
        for i in range(n):
            for r0, r1 in bands:
                m = torch.bmm(u, _tile_transform(x[i], kb, r0, r1, tw))          # 36 products over channels
                out = torch.mm(ka, m.view(36, -1)).view(4, 4, c_out, r1 - r0, tw)
                y[i, :, 4 * r0:4 * r1].view(c_out, r1 - r0, 4, tw, 4).copy_(out.permute(2, 3, 0, 4, 1))
        if (th * 4, tw * 4) != (h, w):
            y = y[:, :, :h, :w].contiguous()
        if bias is not None:
            y += bias.view(1, -1, 1, 1)
        ctx.geometry = (h_in, w_in, th, tw, bands)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        x, weight, bias = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: gradients that are themselves differentiable
            inputs = [t for t, need in zip((x, weight, bias), ctx.needs_input_grad, strict=True) if need]
            with torch.enable_grad():
                grads = iter(torch.autograd.grad(nn.functional.conv2d(x, weight, bias), inputs, grad,
                                                 create_graph=True))
            return tuple(next(grads) if need else None for need in ctx.needs_input_grad)  # type: ignore[return-value]
        h_in, w_in, th, tw, bands = ctx.geometry
        n, c = x.shape[:2]
        c_out = weight.shape[0]
        need_x, need_w, need_b = ctx.needs_input_grad
        x = _tiled(x, th, tw)
        kb, kg, ka = _transforms(grad)
        u = _kernel_transform(weight, kg) if need_x else None
        grad_bias = grad.sum((0, 2, 3)) if bias is not None and need_b else None
        grad = _pad_to(grad, th * 4, tw * 4)
        grad_u = grad.new_zeros(36, c_out, c) if need_w else None
        grad_x = grad.new_zeros(n, c, th * 4 + 4, tw * 4 + 4) if need_x else None
        for i in range(n if need_x or need_w else 0):
            for r0, r1 in bands:
                rb = r1 - r0
                g = grad[i, :, 4 * r0:4 * r1].reshape(c_out, rb, 4, tw, 4).permute(2, 4, 0, 1, 3)
                gm = torch.mm(ka.t(), g.reshape(16, -1)).view(36, c_out, rb * tw)
                if grad_u is not None:
                    grad_u.baddbmm_(gm, _tile_transform(x[i], kb, r0, r1, tw).transpose(1, 2))
                if grad_x is not None and u is not None:
                    gd = torch.mm(kb.t(), torch.bmm(u.transpose(1, 2), gm).view(36, -1))
                    gd = gd.view(6, 6, c, rb, tw).permute(2, 3, 0, 4, 1)
                    # overlap-add the 6×6 tile gradients (stride 4) into the input gradient
                    acc = grad_x[i].view(c, th + 1, 4, tw + 1, 4)
                    acc[:, r0:r1, :, :tw, :] += gd[:, :, :4, :, :4]
                    acc[:, r0 + 1:r1 + 1, :2, :tw, :] += gd[:, :, 4:, :, :4]
                    acc[:, r0:r1, :, 1:, :2] += gd[:, :, :4, :, 4:]
                    acc[:, r0 + 1:r1 + 1, :2, 1:, :2] += gd[:, :, 4:, :, 4:]
        grad_weight = None
        if grad_u is not None:
            grad_weight = torch.mm(kg.t(), grad_u.view(36, -1)).view(3, 3, c_out, c).permute(2, 3, 0, 1).contiguous()
        if grad_x is not None:
            grad_x = grad_x[:, :, :h_in, :w_in]
        return grad_x, grad_weight, grad_bias


def winograd_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` for 3×3 kernels, stride 1, no padding, computed by F(4×4, 3×3)."""
    if (x.dim() != 4 or weight.dim() != 4 or weight.shape[1:] != (x.shape[1], 3, 3) or min(x.shape[2:]) < 3
            or 0 in (x.shape[1], weight.shape[0]) or (bias is not None and bias.shape != (weight.shape[0],))):
        raise ValueError(f"winograd_conv2d needs an N×C×H×W input with H, W >= 3, a C_out×C×3×3 weight and a "
                         f"C_out bias; got {tuple(x.shape)}, {tuple(weight.shape)}, "
                         f"{None if bias is None else tuple(bias.shape)}")
    return _Winograd.apply(x, weight, bias)


class WinogradConv2d(nn.Conv2d):
    """``nn.Conv2d`` (3×3, stride 1, unpadded) that runs wide fp32 CPU layers through ``winograd_conv2d``;
    ``winograd = False`` on an instance keeps it on ``conv2d`` (``enable_winograd``)."""

    winograd = True

    def _winograd(self, x: torch.Tensor) -> bool:
        return (self.winograd and x.device.type == "cpu" and x.dtype == torch.float32
                and self.weight.dtype == torch.float32 and (self.bias is None or self.bias.dtype == torch.float32)
                and x.dim() == 4 and x.is_contiguous()
                and min(self.in_channels, self.out_channels) >= MIN_CHANNELS
                and math.ceil((x.shape[2] - 2) / 4) * math.ceil((x.shape[3] - 2) / 4) >= MIN_TILES
                and self.kernel_size == (3, 3) and self.stride == (1, 1) and self.padding == (0, 0)
                and self.dilation == (1, 1) and self.groups == 1 and not torch.is_autocast_enabled("cpu")
                and not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
                         or torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()
                         or any(forward_ad.unpack_dual(t).tangent is not None for t in (x, self.weight))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._winograd(x):
            return super().forward(x)
        return winograd_conv2d(x, self.weight, self.bias)


def enable_winograd(net: nn.Module, enabled: bool) -> None:
    """Let ``net``'s ``WinogradConv2d`` layers take the Winograd path where it pays (``True``), or never."""
    for m in net.modules():
        if isinstance(m, WinogradConv2d):
            m.winograd = enabled


@contextmanager
def winograd_census(net: nn.Module) -> Iterator[set[str]]:
    """The names of ``net``'s ``WinogradConv2d`` layers that take the Winograd path in forward passes inside the block
    (under the autocast, grad mode and device the block runs them with)."""
    taken: set[str] = set()

    def hook(name: str):
        def record(module: WinogradConv2d, args: tuple, kwargs: dict) -> None:
            if module._winograd(args[0] if args else kwargs["input"]):
                taken.add(name)
        return record

    handles = [m.register_forward_pre_hook(hook(name), with_kwargs=True) for name, m in net.named_modules()
               if isinstance(m, WinogradConv2d)]
    try:
        yield taken
    finally:
        for h in handles:
            h.remove()
