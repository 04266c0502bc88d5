"""Exporting a generator to ONNX or TorchScript with dynamic batch, height and width."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .errors import I2IError, first_line
from .files import atomic_write

FORMATS = ("onnx", "torchscript")


def supported_opsets() -> range:
    """The ONNX opsets that this PyTorch's (TorchScript-based) ONNX exporter supports."""
    try:
        from torch.onnx import _constants as c

        low = int(c.ONNX_MIN_OPSET)
        high = int(getattr(c, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", c.ONNX_MAX_OPSET))
    except (ImportError, AttributeError):  # the private constants moved: the range of PyTorch 2.x
        low, high = 7, 17
    return range(low, high + 1)


#: the format an output file's suffix implies when --format is not given
SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".pts": "torchscript", ".ts": "torchscript",
            ".torchscript": "torchscript"}
DEFAULT_OPSET = 17


def check_export(fmt: str | None, opset: int | None, out: Path) -> tuple[str, int | None]:
    """The format and opset to export ``out`` with, checked before any work: ``fmt`` (else implied by ``out``'s
    suffix) must be known, and ``opset`` (ONNX only; default 17) one this PyTorch's exporter supports."""
    if fmt is None:
        fmt = SUFFIXES.get(out.suffix.lower())
        if fmt is None:
            raise I2IError(f"cannot tell the export format from {out.name}; pass --format onnx or --format torchscript "
                           f"(or name the file .onnx or .pt)")
    if fmt not in FORMATS:
        raise I2IError(f"unknown export format '{fmt}'; use {' or '.join(FORMATS)}")
    if fmt != "onnx":
        if opset is not None:
            raise I2IError(f"--opset applies to ONNX only; drop it for {fmt}")
        return fmt, None
    try:
        import onnx  # noqa: F401  (PyTorch's exporter writes through it)
    except ImportError:
        raise I2IError("ONNX export needs the onnx package: pip install \"i2i[export]\" (or pip install onnx); "
                       "TorchScript (-o NAME.pt) needs nothing more") from None
    opset = DEFAULT_OPSET if opset is None else opset
    opsets = supported_opsets()
    if opset not in opsets:
        raise I2IError(f"ONNX opset {opset} is not supported by this PyTorch's exporter; pass --opset "
                       f"{opsets[0]} to {opsets[-1]} (default {DEFAULT_OPSET})")
    return fmt, opset


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Discard what native code writes to the process's standard output (file descriptor 1) meanwhile: the ONNX
    exporter dumps its whole graph there when it fails, and a failure must stay one line."""
    try:
        saved = os.dup(1)
    except OSError:  # no standard output to guard
        yield
        return
    if sys.__stdout__ is not None:
        sys.__stdout__.flush()
    sink = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(sink, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(sink)


def example_input(net: nn.Module, batch: int = 1, scale: int = 1) -> torch.Tensor:
    io = getattr(net, "i2i_info", {}).get("io", {})
    m = int(io.get("size_multiple", getattr(net, "size_multiple", 1)))
    side = m * max(1, 64 // m) * scale
    return torch.rand(batch, int(io.get("in_channels", 3)), side, side + m) * 2 - 1


def export(net: nn.Module, path: Path, fmt: str, opset: int | None = DEFAULT_OPSET) -> Path:
    """Write ``net`` (eval mode, CPU) as ``fmt`` to ``path`` atomically (ONNX: at ``opset``)."""
    check_export(fmt, opset if fmt == "onnx" else None, path)
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
                with _quiet_stdout():
                    torch.onnx.export(net, (x,), str(tmp), dynamo=False, input_names=["input"], output_names=["output"],
                                      dynamic_axes={"input": axes, "output": axes}, opset_version=opset)

    try:
        return atomic_write(path, write)
    except I2IError:
        raise
    except Exception as exc:
        raise I2IError(f"could not export to {fmt}: {type(exc).__name__}: {first_line(exc, 200)}") from exc
