"""What the CLI says about an exception no user input explains: a bug, in a plugin or in i2i itself.

The traceback goes to a file; the error line names whose code raised (the installed plugin, by its entry point, whose
module or package holds the innermost frame, else i2i), where, and what to do: send the file to that plugin's authors,
or leave the plugin out. A plugin shipped with i2i is named too, and its bug reported to i2i.
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
    """An installed plugin, one entry point: its name, distribution and version, and where its code lives."""

    name: str
    distribution: str
    version: str
    files: frozenset[str]  # its Python files by its distribution's record (an editable install lists none)
    folders: tuple[str, ...]  # its package folders, each ending with a separator
    builtin: bool = False  # shipped with i2i (an entry point of the i2i distribution)

    def rank(self, filename: str) -> int:
        """How closely this entry point holds ``filename``: -1 not at all, else the length of the path that matched
        (one of its files beats the folder holding it, an inner package's folder an outer one)."""
        if filename in self.files:
            return len(filename)
        return max((len(f) for f in self.folders if filename.startswith(f)), default=-1)


def _resolved(filename: str) -> str:
    """A frame's file as an absolute path (pseudo-files such as ``<string>`` as they are)."""
    return filename if filename.startswith("<") else str(Path(filename).resolve())


def _module_name(path: Path) -> str:
    """The dotted module a distribution's file (relative to its install folder) is: ``acme/x/__init__.py`` ->
    ``acme.x``."""
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _owners(group: str) -> list[Owner]:
    """The plugins of the entry-point ``group`` whose code is imported, one per entry point (a distribution may
    have several: i2i has one per built-in plugin). Each holds its module's file or package folder, the folder of
    its top-level package (a namespace package has none), and the Python files of its distribution's record that lie
    in its module; a third-party distribution with a single entry point lends it all its files (code beside the
    plugin's package, in a namespace package or in helper packages)."""
    owners = []
    for ep in importlib.metadata.entry_points(group=group):
        if ep.module not in sys.modules:
            continue
        dist = ep.dist.name if ep.dist is not None else ""
        builtin = dist == "i2i"
        alone = not builtin and ep.dist is not None and sum(e.group == group for e in ep.dist.entry_points) == 1
        files: set[str] = set()
        for f in (ep.dist.files or []) if ep.dist is not None else []:
            module = _module_name(Path(str(f)))
            if f.suffix == ".py" and (alone or module == ep.module or module.startswith(f"{ep.module}.")):
                files.add(_resolved(str(ep.dist.locate_file(f))))
        folders = []
        for name in dict.fromkeys([ep.module, ep.module.split(".")[0]]):
            file = getattr(sys.modules.get(name), "__file__", None)
            if file and Path(file).name == "__init__.py":
                folders.append(f"{Path(file).resolve().parent}{os.sep}")
            elif file:
                files.add(_resolved(file))
        owners.append(Owner(ep.name, dist, ep.dist.version if ep.dist is not None else "unknown", frozenset(files),
                            tuple(folders), builtin))
    return owners


def _holder(filename: str, owners: list[Owner]) -> Owner | None:
    """The entry point that holds ``filename`` most closely, or None where none does or several hold it alike (a
    module shared by two entry points of one distribution: the frame that called it decides)."""
    ranked = sorted(((o.rank(filename), i) for i, o in enumerate(owners)), reverse=True)
    if not ranked or ranked[0][0] < 0 or (len(ranked) > 1 and ranked[1][0] == ranked[0][0]):
        return None
    return owners[ranked[0][1]]


#: i2i's own package folder: frames there are i2i's code, not a plugin's
_I2I_FOLDER = f"{Path(__file__).resolve().parent}{os.sep}"


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


def _builtin_culprit(chain: list[tuple[list[tuple[str, int, str]], str]],
                     builtins: list[Owner]) -> tuple[Owner, tuple[str, int, str]] | None:
    """The built-in plugin, with its frame, whose code is the innermost of i2i's own (i2i's package or a built-in
    plugin's) in the exception; where that is i2i's package, the same in the exception it was raised from, and so
    on. None when no built-in plugin's code raised."""
    for frames, _ in chain:
        for frame in reversed(frames):
            owner = _holder(frame[0], builtins)
            if owner is not None:
                return owner, frame
            if frame[0].startswith(_I2I_FOLDER):
                break  # i2i's code raised here: look no further out in this exception
    return None


def describe(exc: BaseException, group: str, version: str) -> str:
    """The one error line for an unexpected exception (the traceback is saved to a file the line names)."""
    chain = [_frames(e) for e in _chain(exc)]
    frames, what = chain[0][0], chain[0][1].rstrip(" :")  # a first line may introduce the next ("failed:")
    owners = _owners(group)
    third = [o for o in owners if not o.builtin]
    # the innermost third-party plugin frame of the exception, else of one it was raised from (re-raised by i2i)
    culprit = next(((o, f) for fs, _ in chain for f in reversed(fs) if (o := _holder(f[0], third)) is not None), None)
    saved = _save_traceback(exc)
    kept = f"the traceback saved in {saved}" if saved else "the traceback above"
    if culprit is not None:
        owner, (file, line, function) = culprit
        return (f"plugin '{owner.name}' ({owner.distribution} {owner.version}) failed in {_short_path(file)}:{line} "
                f"({function}): {what}; this is a bug in that plugin: send its authors {kept}, or leave it out with "
                f"I2I_BLOCK_PLUGINS={owner.name}")
    builtin = _builtin_culprit(chain, [o for o in owners if o.builtin])
    if builtin is not None:
        owner, (file, line, function) = builtin
        return (f"plugin '{owner.name}' (shipped with i2i {version}) failed in {_short_path(file)}:{line} "
                f"({function}): {what}; this is a bug in i2i {version}: please report it with {kept}")
    where = f" in {_short_path(frames[-1][0])}:{frames[-1][1]} ({frames[-1][2]})" if frames else ""
    return f"unexpected error{where}: {what}; this is a bug in i2i {version}: please report it with {kept}"
