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
    files: frozenset[str]  # its distribution's Python files (an editable install lists none)
    folders: tuple[str, ...]  # its package folders, each ending with a separator

    def holds(self, filename: str) -> bool:
        return filename in self.files or filename.startswith(self.folders)


def _resolved(filename: str) -> str:
    """A frame's file as an absolute path (pseudo-files such as ``<string>`` as they are)."""
    return filename if filename.startswith("<") else str(Path(filename).resolve())


def _owners(group: str) -> list[Owner]:
    """Third-party plugins of the entry-point ``group`` whose code is imported (i2i's own count as i2i): their files
    from the distribution's record, and the folders of the entry point's package and of its top-level package (a
    namespace package has none)."""
    owners = []
    for ep in importlib.metadata.entry_points(group=group):
        dist = ep.dist.name if ep.dist is not None else ""
        if dist == "i2i" or ep.module not in sys.modules:
            continue
        files = frozenset(_resolved(str(ep.dist.locate_file(f))) for f in (ep.dist.files or [])
                          if f.suffix == ".py") if ep.dist is not None else frozenset()
        folders = []
        for name in dict.fromkeys([ep.module, ep.module.split(".")[0]]):
            file = getattr(sys.modules.get(name), "__file__", None)
            if file and Path(file).name == "__init__.py":
                folders.append(f"{Path(file).resolve().parent}{os.sep}")
            elif file:
                files |= {_resolved(file)}
        owners.append(Owner(ep.name, dist, ep.dist.version if ep.dist is not None else "unknown", files,
                            tuple(folders)))
    return owners


#: what PyTorch puts before the traceback of an exception raised in a data-loading process
_QUOTED = "Original Traceback (most recent call last):"


def _frames(exc: BaseException) -> tuple[list[tuple[str, int, str]], str]:
    """(file, line, function) of ``exc``'s traceback, outermost first, and what went wrong (type: message). An
    exception raised in a data-loading process arrives with that process's traceback quoted in its message after
    :data:`_QUOTED`: its frames come last, and the line after them says what went wrong."""
    frames = [(_resolved(f.filename), f.lineno or 0, f.name) for f in traceback.extract_tb(exc.__traceback__)]
    text = str(exc)
    what = f"{type(exc).__name__}: {first_line(exc, 160)}" if text.strip() else type(exc).__name__
    if _QUOTED not in text:
        return frames, what
    lines = text.split(_QUOTED, 1)[1].splitlines()
    quoted = [(i, m) for i, li in enumerate(lines) if (m := _QUOTED_FRAME.search(li))]
    if quoted:
        frames += [(_resolved(m.group(1)), int(m.group(2)), m.group(3)) for _, m in quoted]
        after = lines[quoted[-1][0] + 1:]
        said = next((li for li in after if li.strip() and not li.startswith((" ", "\t"))), "")
        what = first_line(Exception(said), 160) if said else what
    return frames, what


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, outermost first."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


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
    chain = [_frames(e) for e in _chain(exc)]
    frames, what = chain[0][0], chain[0][1].rstrip(" :")  # a first line may introduce the next ("failed:")
    owners = _owners(group)
    # the innermost plugin frame of the exception, else of one it was raised from (a plugin's error re-raised)
    culprit = next(((o, f) for fs, _ in chain for f in reversed(fs) for o in owners if o.holds(f[0])), None)
    saved = _save_traceback(exc)
    kept = f"the traceback saved in {saved}" if saved else "the traceback above"
    if culprit is not None:
        owner, (file, line, function) = culprit
        return (f"plugin '{owner.name}' ({owner.distribution} {owner.version}) failed in {_short_path(file)}:{line} "
                f"({function}): {what}; this is a bug in that plugin: send its authors {kept}, or leave it out with "
                f"I2I_BLOCK_PLUGINS={owner.name}")
    where = f" in {_short_path(frames[-1][0])}:{frames[-1][1]} ({frames[-1][2]})" if frames else ""
    return f"unexpected error{where}: {what}; this is a bug in i2i {version}: please report it with {kept}"
