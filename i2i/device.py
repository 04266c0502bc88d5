"""Choosing the compute device from a user's string."""

from __future__ import annotations

import torch

from .errors import I2IError


def out_of_memory_error() -> type[BaseException]:
    """The exception a device raises when its memory runs out (``torch.OutOfMemoryError`` where it exists)."""
    return getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out: a GPU's, or the CPU allocator's (a RuntimeError), or Python's."""
    said = ("out of memory", "can't allocate memory", "Cannot allocate memory", "not enough memory")
    return isinstance(exc, (out_of_memory_error(), MemoryError)) or isinstance(exc, RuntimeError) and any(
        s in str(exc) for s in said)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; an unavailable device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise I2IError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise I2IError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise I2IError(f"device '{name}' does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    if device.type not in ("cpu", "cuda") and not _available(device.type):
        raise I2IError(f"device '{name}' is not available here; use {usable_devices()}")
    return device


def _available(kind: str) -> bool:
    """Whether this torch can run on device type ``kind`` here (mps, xpu, ...: ``torch.<kind>.is_available()``)."""
    backend = getattr(torch.backends, kind, None) if kind == "mps" else getattr(torch, kind, None)
    check = getattr(backend, "is_available", None)
    try:
        return bool(check()) if callable(check) else False
    except Exception:  # a backend that cannot even say
        return False


def usable_devices() -> str:
    """The --device values that work on this machine, for error messages."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda", "cuda:N"]
    names += [kind for kind in ("mps", "xpu") if _available(kind)]
    return ", ".join(names[:-1]) + f" or {names[-1]}"
