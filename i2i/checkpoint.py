"""Checkpoint files: atomic writes, safe reads, and self-describing exported generators.

Every file is plain tensors, numbers, strings, lists and dicts, so ``torch.load(path, weights_only=True)``
reads it. Networks are recorded by registry name and parameters, never by import path: loading a checkpoint
never imports or executes anything the file names.
"""

from __future__ import annotations

import errno
import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import I2IError, first_line, shorten
from .files import atomic_write
from .registry import Registry, known_version

GENERATOR_FORMAT = "i2i.generator/1"
TRAIN_FORMAT = "i2i.train/1"


def atomic_save(obj: Any, path: Path) -> None:
    """Write ``obj`` with torch.save to a temporary file beside ``path``, then rename it into place."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            try:
                torch.save(obj, f)
            except RuntimeError as exc:  # its zip writer reports a failed write (e.g. a full disk) this way
                raise OSError(errno.EIO, f"write failed: {first_line(exc)}") from exc
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


#: where training checkpoints of other tools keep their weights (timm's, Lightning's, ...): an EMA copy first
WEIGHTS_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")


def load_weights(path: Path, what: str = "weights", of: str = "a model") -> dict[str, torch.Tensor]:
    """A state dict of tensors (``of`` something) from a PyTorch or ``.safetensors`` file, read safely (never
    unpickling code), with one-line errors. A training checkpoint's weights are taken from under its usual keys
    (:data:`WEIGHTS_KEYS`), and DataParallel's ``module.`` prefixes are dropped."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not path.is_file():
            raise I2IError(f"{what} {path} is not a file" if path.exists() else f"{what} not found: {path}")
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise I2IError(f"{what} {path} are truncated or not a safetensors file ({first_line(exc)})") from None
    else:
        state = safe_load(path, what)
    if isinstance(state, dict):
        state = next((state[k] for k in WEIGHTS_KEYS if isinstance(state.get(k), dict)), state)
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise I2IError(f"{what} {path} are not a state dict (names → tensors) of {of}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def safe_load(path: str | Path, what: str = "checkpoint", map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with one-line errors for missing, truncated or unsafe files."""
    path = Path(path)
    if not path.exists():
        raise I2IError(f"{what} not found: {path}")
    if not path.is_file():
        raise I2IError(f"{what} {path} is not a file")
    if path.stat().st_size == 0:
        raise I2IError(f"{what} {path} is empty (an interrupted download or copy?): use a complete file")
    with path.open("rb") as f:
        head = f.read(8)
    zipped = zipfile.is_zipfile(path)  # PyTorch >= 1.6 format; older files are a bare pickle stream
    if zipped and _is_torchscript(path):
        raise I2IError(f"{what} {path} is a TorchScript export, which i2i does not read back: pass the .pt "
                       f"checkpoint it was exported from (TorchScript files load with torch.jit.load)")
    if not zipped and _is_onnx(path, head):
        raise I2IError(f"{what} {path} is an ONNX export, which i2i does not read back: pass the G.pt checkpoint "
                       f"it was exported from (ONNX files run with onnxruntime)")
    if not zipped and head.startswith(b"PK\x03\x04"):  # a zip archive without its end (the central directory)
        raise I2IError(f"{what} {path} is truncated: the end of its archive is missing (an interrupted download or "
                       f"copy?); use a complete file")
    if zipped:  # torch.load does not check the archive's CRC-32s: damaged bytes would load as different weights
        damaged = _damaged_record(path)
        if damaged is not None:
            raise I2IError(f"{what} {path} is damaged: its record {damaged} fails its checksum (a bad copy or "
                           f"disk?); use another copy")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.load's own advice about the file's format
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if not zipped:
            raise I2IError(f"{what} {path} is truncated or not a PyTorch file") from exc
        raise I2IError(
            f"{what} {path} contains objects that could run code when loaded, so it was refused "
            f"(only plain tensors and values are accepted)"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError, TypeError,
            struct.error) as exc:
        # a bare pickle stream's errors (a KeyError(101), "Ran out of input") say nothing a user can act on
        detail = f" ({first_line(exc)})" if zipped else ""
        raise I2IError(f"{what} {path} is truncated or not a PyTorch file{detail}") from exc


def _damaged_record(path: Path) -> str | None:
    """The first record of the zip archive at ``path`` whose bytes fail its CRC-32, or None. Records stored with a
    CRC of 0 are not checked: ``torch.serialization.set_crc32_options(False)`` writes files that way."""
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.CRC == 0 or info.is_dir():
                    continue
                try:
                    with z.open(info) as f:  # zipfile compares the CRC when the record has been read
                        while f.read(1 << 22):
                            pass
                except zipfile.BadZipFile:
                    return info.filename
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
        return f"({first_line(exc)})"
    return None


def state_dict_mismatch(exc: RuntimeError) -> str:
    """What ``load_state_dict`` found wrong, in one line: the first detail under its "Error(s) in loading" header."""
    lines = [li.strip() for li in str(exc).splitlines() if li.strip()] or [type(exc).__name__]
    detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
    return shorten(detail, 200)


#: the protocol-buffer tags an ONNX ModelProto may start with after its ir_version (field 1): producer name and
#: version, domain, model version, doc string, graph, opset imports
_ONNX_NEXT_TAGS = frozenset(b"\x12\x1a\x22\x28\x32\x3a\x42")


def _is_onnx(path: Path, head: bytes) -> bool:
    """An ONNX model: named .onnx, or starting like one (a protocol buffer whose first field is a small ir_version;
    PyTorch files start with a zip or pickle header, never with that byte)."""
    if path.suffix.lower() == ".onnx":
        return True
    return len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 30 and head[2] in _ONNX_NEXT_TAGS


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold compiled code (``code/``) besides the pickled data."""
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 2)[1:2] == ["code"] for n in z.namelist())


def generator_record(
    net: nn.Module,
    name: str,
    params: dict[str, Any],
    in_channels: int,
    out_channels: int,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """The exported-generator dict (format ``i2i.generator/1``).

    A network may set ``i2i_rebuild_params`` (e.g. ``{"pretrained": False, "weights": None}``): parameters to
    record instead of those it was built with, so that rebuilding it for the saved weights needs no download.
    """
    return {
        "format": GENERATOR_FORMAT,
        "component": {"name": name, "params": {**params, **getattr(net, "i2i_rebuild_params", {})}},
        "io": {
            "in_channels": int(in_channels),
            "out_channels": int(out_channels),
            "range": [-1.0, 1.0],
            "size_multiple": int(getattr(net, "size_multiple", 1)),
        },
        "provenance": provenance,
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
    }


def generator_provider(record: dict[str, Any]) -> dict[str, str]:
    """The plugin (and, in files written since it was recorded, the distribution) an exported generator needs."""
    prov = record.get("provenance") or {}
    plugin = str(prov.get("generator_plugin") or "")
    versions = prov.get("versions") if isinstance(prov.get("versions"), dict) else {}
    return {"plugin": plugin, "distribution": str(prov.get("generator_distribution") or ""),
            "version": str(versions.get(plugin) or "")}


def read_generator(path: str | Path) -> dict[str, Any]:
    """Load and check an exported generator file without building the network."""
    record = safe_load(path, "generator checkpoint")
    if not isinstance(record, dict) or record.get("format") != GENERATOR_FORMAT:
        hint = ""
        if isinstance(record, dict) and record.get("format") == TRAIN_FORMAT:
            hint = (" (this is a training checkpoint; use a generator exported beside it: RUN_DIR/G.pt, "
                    "RUN_DIR/G_AB.pt, ..., as the run's end printed)")
        elif isinstance(record, dict) and all(torch.is_tensor(v) for v in record.values()):
            hint = " (it looks like a bare state dict; convert official weights with `i2i import-official`)"
        raise I2IError(f"{path} is not an i2i generator checkpoint{hint}")
    for key in ("component", "io", "state_dict"):
        if key not in record:
            raise I2IError(f"generator checkpoint {path} is incomplete: no '{key}' entry")
    wrong = _misshapen(record)
    if wrong:
        raise I2IError(f"generator checkpoint {path} is malformed: {wrong}; export it again (a run writes its "
                       f"generators, e.g. G.pt, at the end of training) or convert it again")
    return record


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


#: what each entry of an exported generator must be: (where, check, what it must be)
_GENERATOR_FIELDS: tuple[tuple[tuple[str, ...], Any, str], ...] = (
    (("component",), lambda v: isinstance(v, dict), "a dict"),
    (("component", "name"), lambda v: isinstance(v, str) and v, "a component name"),
    (("component", "params"), lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v), "a dict"),
    (("io",), lambda v: isinstance(v, dict), "a dict"),
    (("io", "in_channels"), _count, "a positive int"),
    (("io", "out_channels"), _count, "a positive int"),
    (("io", "size_multiple"), _count, "a positive int"),
    (("io", "range"), lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(
        isinstance(x, (int, float)) for x in v), "two numbers"),
    (("state_dict",), lambda v: isinstance(v, dict) and all(isinstance(k, str) and torch.is_tensor(t)
                                                           for k, t in v.items()), "names → tensors"),
    (("provenance",), lambda v: v is None or isinstance(v, dict), "a dict"),
)


def _misshapen(record: dict[str, Any]) -> str:
    """The first entry of an exported generator's record that is missing or not what i2i writes ('' if none)."""
    for keys, check, must in _GENERATOR_FIELDS:
        value: Any = record
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if not check(value):
            return f"'{'.'.join(keys)}' must be {must}, not {shorten(repr(value), 40)}"
    return ""


def load_generator(
    path: str | Path, registry: Registry | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """Rebuild an exported generator from the registry by name and load its weights (eval mode).

    The returned module carries the file's metadata as ``module.i2i_info`` (component, io, provenance).
    """
    if registry is None:
        from .plugins import load_registry

        registry = load_registry()
    record = read_generator(path)
    comp, io = record["component"], record["io"]
    provider = generator_provider(record)
    entry = registry.require("generator", comp["name"], provider, str(path))
    try:
        net = entry.build(io["in_channels"], io["out_channels"], **comp["params"])
    except I2IError as exc:
        made = provider["version"]
        if not known_version(made) or made == entry.version:
            raise I2IError(f"{path}: {exc}") from exc
        pin = f": pip install '{entry.distribution}=={made}'" if entry.distribution else ""
        raise I2IError(f"{path}: {exc} (the file was made with plugin '{entry.plugin}' {made}, {entry.version} is "
                       f"installed; install {made}{pin})") from exc
    try:
        net.load_state_dict(record["state_dict"])
    except RuntimeError as exc:
        raise I2IError(
            f"{path}: weights do not fit generator '{comp['name']}' with its recorded parameters "
            f"({state_dict_mismatch(exc)})"
        ) from exc
    bad = [k for k, t in record["state_dict"].items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise I2IError(f"{path} holds weights that are not finite numbers (NaN or Inf in {bad[0]}{more}): it would "
                       f"translate every image to one colour; use a generator saved before its training diverged")
    net.i2i_info = {k: v for k, v in record.items() if k != "state_dict"}
    return net.to(device).eval()
