"""What the CLI says about an exception no user input explains: a bug, in a plugin or in i2i itself.

The traceback goes to a file; the error line names whose code raised (the installed plugin whose package holds the
innermost frame, else i2i), where, and what to do: send the file to that plugin's authors, or leave the plugin out.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

from .errors import first_line

#: a frame line of a traceback quoted in an exception's message (a data-loading process's, re-raised by PyTorch)
_QUOTED_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


@dataclass(frozen=True)
class Owner:
    """An installed plugin: its entry-point name, distribution and version, and where its code lives."""

    name: str
    distribution: str
    version: str
    home: str  # the package's folder (ends with a separator), or a single-module plugin's file

    def holds(self, filename: str) -> bool:
        return filename.startswith(self.home) if self.home.endswith(os.sep) else filename == self.home


def _owners(group: str) -> list[Owner]:
    """Third-party plugins of the entry-point ``group`` whose code is imported (i2i's own count as i2i)."""
    owners = []
    for ep in importlib.metadata.entry_points(group=group):
        dist = ep.dist.name if ep.dist is not None else ""
        module = sys.modules.get(ep.module.split(".")[0])
        file = getattr(module, "__file__", None)
        if dist == "i2i" or not file:
            continue
        path = Path(file).resolve()
        home = f"{path.parent}{os.sep}" if path.name == "__init__.py" else str(path)
        owners.append(Owner(ep.name, dist, ep.dist.version if ep.dist is not None else "unknown", home))
    return owners


def _frames(exc: BaseException) -> tuple[list[tuple[str, int, str]], str]:
    """(file, line, function) of ``exc``'s traceback, outermost first, and what went wrong (type: message). An
    exception raised in a data-loading process arrives with that process's traceback quoted in its message: its
    frames come last and its own last line says what went wrong."""
    frames = [(str(Path(f.filename).resolve()), f.lineno or 0, f.name) for f in traceback.extract_tb(exc.__traceback__)]
    quoted = [(str(Path(f).resolve()), int(n), fn) for f, n, fn in _QUOTED_FRAME.findall(str(exc))]
    if quoted:
        return frames + quoted, first_line(Exception(str(exc).strip().splitlines()[-1]), 160)
    return frames, f"{type(exc).__name__}: {first_line(exc, 160)}" if str(exc).strip() else type(exc).__name__


def _short_path(filename: str) -> str:
    """A frame's file as ``package/module.py`` (its last two parts)."""
    return "/".join(Path(filename).parts[-2:])


def _save_traceback(exc: BaseException) -> str:
    """The full traceback written to a new file in the temporary folder: its path ('' when it cannot be written;
    the traceback is then printed to standard error)."""
    text = "".join(traceback.format_exception(exc))
    try:
        fd, path = tempfile.mkstemp(prefix="i2i-traceback-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return path
    except OSError:
        sys.stderr.write(text)
        return ""


def describe(exc: BaseException, group: str, version: str) -> str:
    """The one error line for an unexpected exception (the traceback is saved to a file the line names)."""
    frames, what = _frames(exc)
    owners = _owners(group)
    culprit = next(((o, f) for f in reversed(frames) for o in owners if o.holds(f[0])), None)
    saved = _save_traceback(exc)
    kept = f"the traceback saved in {saved}" if saved else "the traceback above"
    if culprit is not None:
        owner, (file, line, function) = culprit
        return (f"plugin '{owner.name}' ({owner.distribution} {owner.version}) failed in {_short_path(file)}:{line} "
                f"({function}): {what}; this is a bug in that plugin: send its authors {kept}, or leave it out with "
                f"I2I_BLOCK_PLUGINS={owner.name}")
    where = f" in {_short_path(frames[-1][0])}:{frames[-1][1]} ({frames[-1][2]})" if frames else ""
    return f"unexpected error{where}: {what}; this is a bug in i2i {version}: please report it with {kept}"
