"""Writing files so that a reader never sees a half-written one: write a temporary sibling, then rename it."""

from __future__ import annotations

import errno
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import I2IError


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` for a temporary file beside ``path`` (same extension), then rename it to ``path`` with
    the permissions of a newly created file; on failure the temporary file is removed, ``path`` is left as it was,
    and a failed write (no permission, a full disk) is one clear error."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_beside(path)
    except OSError as exc:
        blocker = file_in_the_way(path)
        if blocker is not None:
            raise I2IError(f"cannot write {path}: {blocker} is a file, not a folder; choose another location") from exc
        raise I2IError(f"cannot write into {path.parent} ({exc.strerror or exc}): choose a writable location") from exc
    try:
        write(tmp)
        publish(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if path.is_dir():
            raise I2IError(f"could not write {path}: a folder of that name is in the way; move it") from exc
        try:
            free: int | None = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or (free is not None and free < LOW_SPACE):
            space = f" ({free / 2**20:.0f} MiB free)" if free is not None else ""
            raise I2IError(f"could not write {path}: out of disk space or quota{space}; free disk space or choose "
                           f"another location") from exc
        raise I2IError(f"could not write {path} ({exc.strerror or exc}); check the disk and the folder, or choose "
                       f"another location") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


def temp_beside(path: Path, kind: str = "tmp") -> Path:
    """A new empty file beside ``path``, ``.STEM.XXXXXXXX.KIND.SUFFIX``, unique to this call: runs writing the same
    output never share one."""
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".{kind}{path.suffix}", dir=path.parent)
    os.close(fd)
    return Path(name)


def publish(tmp: Path, path: Path) -> None:
    """Rename the finished ``tmp`` to ``path``, with the permissions of a newly created file (mkstemp makes it
    private)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


#: free space below which a failed write is put down to a full disk (torch.save's writer loses the errno)
LOW_SPACE = 64 * 2**20


def file_in_the_way(path: Path) -> Path | None:
    """The file standing where a folder above ``path`` would have to be, if any."""
    return next((p for p in Path(path).parents if p.exists() and not p.is_dir()), None)


def cannot_create(path: Path) -> tuple[Path, str] | None:
    """(the folder, the OS's reason) when no file can be created in the nearest existing folder above ``path`` (where
    its folders would be made; tried with a temporary file, removed at once), else None."""
    folder = next((p for p in Path(path).absolute().parents if p.is_dir()), Path.cwd())
    try:
        fd, name = tempfile.mkstemp(prefix=f".{Path(path).stem}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        return folder, str(exc.strerror or exc)
    os.close(fd)
    Path(name).unlink(missing_ok=True)
    return None


@functools.cache
def _umask() -> int:
    """The process's file-creation mask (read once: reading it means setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
