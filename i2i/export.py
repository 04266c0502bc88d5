"""Exporting a generator to ONNX or TorchScript with dynamic batch, height and width."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import I2IError, first_line
from .files import atomic_write

FORMATS = ("onnx", "torchscript")


def example_input(net: nn.Module, batch: int = 1, scale: int = 1) -> torch.Tensor:
    io = getattr(net, "i2i_info", {}).get("io", {})
    m = int(io.get("size_multiple", getattr(net, "size_multiple", 1)))
    side = m * max(1, 64 // m) * scale
    return torch.rand(batch, int(io.get("in_channels", 3)), side, side + m) * 2 - 1


def export(net: nn.Module, path: Path, fmt: str, opset: int = 17) -> Path:
    """Write ``net`` (eval mode, CPU) as ``fmt`` to ``path`` atomically."""
    if fmt not in FORMATS:
        raise I2IError(f"unknown export format '{fmt}'; use {' or '.join(FORMATS)}")
    net = net.eval().cpu()
    x = example_input(net)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if fmt == "torchscript":
                buf = io.BytesIO()  # torch.jit.save aborts the process when a write fails (a full disk)
                torch.jit.save(torch.jit.trace(net, x, check_trace=False), buf)
                tmp.write_bytes(buf.getvalue())
            else:
                axes = {0: "batch", 2: "height", 3: "width"}
                torch.onnx.export(net, (x,), str(tmp), dynamo=False, input_names=["input"], output_names=["output"],
                                  dynamic_axes={"input": axes, "output": axes}, opset_version=opset)

    try:
        return atomic_write(path, write)
    except I2IError:
        raise
    except Exception as exc:
        raise I2IError(f"could not export to {fmt}: {type(exc).__name__}: {first_line(exc, 200)}") from exc
