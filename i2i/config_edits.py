"""Resuming with a hand-edited ``config.yaml``: which keys differ, as users write them, and the warning that says
which edits are applied, which may be passed on the command line and which need a new run."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .config import SHORT_ROLES, resolve
from .config_files import load_yaml
from .errors import I2IError
from .registry import Registry


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two config dicts (nested mappings compared key by key), as a
    user writes them (``generator.params.ngf`` for ``networks.generator.params.ngf``)."""
    keys = []
    for k in sorted(set(old) | set(new), key=str):
        path = f"{prefix}{k}"
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, path + ".")
        elif a != b:
            keys.append(path)
    return [short_key(k) for k in keys] if not prefix else keys

def short_key(key: str) -> str:
    """``key`` with a short network role written at the top level: ``networks.generator.x`` -> ``generator.x``."""
    parts = key.split(".")
    return ".".join(parts[1:]) if len(parts) > 1 and parts[0] == "networks" and parts[1] in SHORT_ROLES else key

def _at(tree: Any, key: str) -> Any:
    if key.split(".")[0] in SHORT_ROLES:
        key = f"networks.{key}"
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree

#: where resuming keeps a hand-edited config.yaml before rewriting it (beside it)
EDITED_NAME = "config.edited.yaml"

def ignored_edits(path: Path, registry: Registry, checkpoint: dict[str, Any], saved: dict[str, Any],
                  used: dict[str, Any], may_change: Callable[[str], bool]) -> str | None:
    """One warning line when a resumed run's config file ``path`` was edited by hand, or None.

    Resuming takes its settings from the checkpoint (``checkpoint``; resolved, ``saved``) and the command line
    (together, ``used``), never from the file, which it rewrites with ``used``; the edited file is first copied to
    :data:`EDITED_NAME` beside it, so that the edits are not lost. The line names the edited keys that the command
    line left as saved, the ``key=value`` arguments that apply those that may change on resume (``may_change``),
    and a new run from the kept copy for the others."""
    if not path.is_file():
        return None
    kept = path.with_name(EDITED_NAME)
    try:
        edited = resolve(registry, None, [checkpoint, load_yaml(path)]).to_dict()
    except I2IError as exc:
        _keep(path, kept)
        return (f"{path} is not read when resuming ({exc}); the run continues with the settings saved in its "
                f"checkpoint and rewrites the file (your version is kept as {kept})")
    keys = [k for k in changed_keys(saved, edited) if _at(used, k) == _at(saved, k)]  # not set on the command line
    if not keys:
        return None
    _keep(path, kept)
    args = [shlex.quote(f"{k}={_flow(_at(edited, k))}") for k in keys if may_change(k)]
    fixed = [k for k in keys if not may_change(k)]
    text = (f"{path} was edited ({', '.join(keys)}), but resuming continues with the settings saved in the "
            f"checkpoint and rewrites the file (your version is kept as {kept})")
    if args:
        text += f"; to apply {'that edit' if len(args) == 1 else 'those edits'} pass {' '.join(args)}"
    if fixed:
        root = _at(edited, "data.root")
        data = "" if isinstance(root, str) and Path(root).is_absolute() else " --data DIR"
        text += (f"; {', '.join(fixed)} cannot change on resume: start a new run from the kept file (--config "
                 f"{shlex.quote(str(kept))}{data} --out NEW_DIR)")
    return text

def _keep(path: Path, kept: Path) -> None:
    """Copy the hand-edited ``path`` to ``kept`` (replacing an older copy) before resuming rewrites it."""
    from .files import atomic_write

    data = path.read_bytes()
    atomic_write(kept, lambda tmp: tmp.write_bytes(data))

def _flow(value: Any) -> str:
    """``value`` as a ``key=value`` argument writes it (YAML flow style: ``true``, ``null``, ``[psnr, ssim]``)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
