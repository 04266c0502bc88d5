"""The run folder: what a run writes and how a new, resumed or replaced run takes its folder."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..checkpoint import TRAIN_FORMAT, safe_load
from ..config_files import save_yaml
from ..errors import I2IError
from ..files import atomic_write
from ..runlog import logged_run_id, settings_records, write_settings

RUN_FILES = ("checkpoints", "samples", "tensorboard", "log.jsonl", "config.yaml")


#: what i2i writes into a run folder and each of its folders, as name patterns (``atomic_write``'s temporary files,
#: left by a killed process, included), besides the exported generators (``export_files``): ``--overwrite``
#: deletes these and nothing else
RUN_PATTERNS = {".": ("log.jsonl", "config.yaml", "config.edited.yaml", ".config.*.tmp.yaml", ".log.*.tmp.jsonl",
                      "report.html", ".report.*.tmp.html"),
                "checkpoints": ("last.pt", ".last.*.tmp.pt"), "samples": ("step_*.png", ".step_*.tmp.png"),
                "tensorboard": ("events.out.tfevents.*",)}


#: the names of exported generators in runs whose log does not name them (made before logs did)
EXPORT_FILE = re.compile(r"G_[^_]+(_best)?\.pt")


def run_exists(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds anything a run writes (its own or not: see :func:`is_run`)."""
    return bool(run_names(out_dir))


def run_names(out_dir: Path) -> list[str]:
    """The names in ``out_dir`` that a run writes (``RUN_FILES`` and its exported generators) and that are there."""
    return [n for n in RUN_FILES if (out_dir / n).exists()] + sorted(p.name for p in export_files(out_dir))


def export_files(out_dir: Path, temporary: bool = False) -> list[Path]:
    """The exported generators of the run in ``out_dir`` (with ``temporary``: the temporary files of their writes,
    ``.NAME.XXXXXXXX.tmp.pt``): those of the files its log names (from the method's ``exports``), else (a run
    logged before logs named them) ``G_*.pt`` files of the form i2i wrote. A user's ``G_AB_backup.pt`` stays."""
    named = {n for r in settings_records(out_dir / "log.jsonl") for n in r.get("exports") or []}

    def exported(name: str) -> bool:
        return name in named if named else bool(EXPORT_FILE.fullmatch(name))

    if temporary:
        return sorted(p for p in out_dir.glob(".*.tmp.pt") if p.is_file() and exported(p.name.split(".")[1] + ".pt"))
    return sorted(p for p in out_dir.glob("*.pt") if p.is_file() and not p.is_symlink() and exported(p.name))


def is_run(out_dir: Path) -> bool:
    """Whether ``out_dir`` is an i2i training run: its ``log.jsonl`` opens with the settings record a run writes
    before anything else, or its ``checkpoints/last.pt`` is an i2i training checkpoint. (A folder that merely holds
    a ``config.yaml``, ``samples/`` or ``checkpoints/`` of its own is not one.)"""
    try:
        with (out_dir / "log.jsonl").open() as f:
            first = json.loads(f.readline())
        if isinstance(first, dict) and "settings" in first:
            return True
    except (OSError, ValueError):
        pass
    last = out_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return False
    try:
        state = safe_load(last, "training checkpoint")
    except Exception:  # not a checkpoint at all
        return False
    return isinstance(state, dict) and state.get("format") == TRAIN_FORMAT


def run_contents(out_dir: Path) -> tuple[list[Path], list[Path]]:
    """(i2i's, others): the files of the run in ``out_dir`` that i2i wrote (``RUN_PATTERNS``), and what else its
    folders (``checkpoints/``, ``samples/``, ``tensorboard/``) hold; other files beside the run are neither."""
    ours, others = [], []
    for folder, patterns in RUN_PATTERNS.items():
        d = out_dir / folder
        if folder == ".":  # the exported generators the log names (else by form): a user's G_AB_backup.pt stays
            ours += sorted(p for pat in patterns if not pat.endswith(".pt") for p in d.glob(pat) if p.is_file())
            ours += export_files(out_dir) + export_files(out_dir, temporary=True)
        elif d.is_dir():
            for p in sorted(d.iterdir()):
                mine = p.is_file() and not p.is_symlink() and any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns)
                (ours if mine else others).append(p)
        elif d.exists():
            others.append(d)
    return ours, others


def prepare_run_dir(out_dir: Path, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Check ``out_dir`` against the flags; return the saved training state when resuming.

    A run that never saved a checkpoint (it failed or was killed before its first one) cannot be resumed: both
    refusals then point at ``--overwrite``, the one way forward. A folder that holds what a run writes but is no
    i2i run (see :func:`is_run`) is refused, as is ``--overwrite`` of a run whose folders hold files i2i did not
    write: nothing of the user's is written over or deleted."""
    last = out_dir / "checkpoints" / "last.pt"
    if resume:
        if not last.exists() and is_run(out_dir):
            raise I2IError(f"nothing to resume: the run in {out_dir} never saved a checkpoint ({last} does not "
                           f"exist); start it again with --overwrite instead of --resume, or choose another --out")
        if not last.exists():
            raise I2IError(f"nothing to resume: {out_dir} holds no training run ({last} does not exist); train into "
                           f"it without --resume first")
        state = safe_load(last, "training checkpoint")
        if not isinstance(state, dict) or state.get("format") != TRAIN_FORMAT:
            raise I2IError(f"{last} is not an i2i training checkpoint")
        missing = [k for k in ("config", "step", "nets", "optimizers") if k not in state]
        if missing:
            raise I2IError(f"{last} is an incomplete training checkpoint (no '{missing[0]}'); use a complete copy")
        logged = logged_run_id(out_dir / "log.jsonl")
        if logged and state.get("run_id") and logged != state["run_id"]:
            raise I2IError(f"{last} is the checkpoint of another run (run {state['run_id'][:8]}; the log in {out_dir} "
                           f"is of run {logged[:8]}); put that run's own checkpoint back, or resume the other run in "
                           f"its own folder")
        return state
    if out_dir.exists() and not out_dir.is_dir():
        raise I2IError(f"--out {out_dir} is a file; pass a folder for the run")
    names = run_names(out_dir)
    if not names:
        return None
    if not is_run(out_dir):
        only = "; --overwrite replaces only i2i runs" if overwrite else ""
        raise I2IError(f"--out {out_dir} holds {', '.join(names[:3])} but is not an i2i training run (no log.jsonl "
                       f"or checkpoint of one), and training would write over them{only}; choose another --out "
                       f"(e.g. a new folder)")
    if not overwrite:
        if not last.exists():
            raise I2IError(f"{out_dir} holds a training run that never saved a checkpoint, so it cannot be resumed; "
                           f"pass --overwrite to start it again, or choose another --out")
        raise I2IError(
            f"{out_dir} already holds a training run; pass --resume to continue it, --overwrite to replace it, "
            f"or choose another --out"
        )
    others = run_contents(out_dir)[1]
    if others:
        raise I2IError(f"--overwrite deletes only what i2i wrote, but {others[0]} is not a file of the run; move it "
                       f"out of {others[0].parent}, or choose another --out")
    return None


class RunFolder:
    """Writing the run folder's first records, replacing an old run's files only once they are written."""

    def _start_files(self) -> None:
        """Make the run folder and write the first records: the settings line of ``log.jsonl`` (by which
        :func:`is_run` knows an i2i run) and ``config.yaml``. With ``--overwrite`` the old run's files are first
        moved aside, and deleted only once the new run's first files are written: a run folder that turns out not
        to be writable keeps its old run."""
        if not self.dist.main:
            return
        replaced = self._move_aside() if self.overwrite and self.state is None else None
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.state is None:  # a resumed run records its settings as it opens the log
                write_settings(self.out / "log.jsonl", self.step, self.settings, self._run_record())
            else:  # what a killed process left mid-write
                for tmp in run_contents(self.out)[0]:
                    if tmp.name.startswith(".") and ".tmp." in tmp.name:
                        tmp.unlink(missing_ok=True)
            atomic_write(self.out / "config.yaml", lambda tmp: save_yaml(self.cfg, tmp))
        except (OSError, I2IError) as exc:
            if replaced is not None:
                self._put_back(*replaced, written=("log.jsonl", "config.yaml"))
            if isinstance(exc, I2IError):
                raise
            raise I2IError(f"cannot write the run into {self.out} ({exc.strerror or exc}); choose a writable --out"
                           f"{' (the old run was left as it was)' if replaced is not None else ''}") from exc
        if replaced is not None:
            shutil.rmtree(replaced[0], ignore_errors=True)

    def _move_aside(self) -> tuple[Path, list[tuple[Path, Path]]] | None:
        """Move the files i2i wrote of the run being replaced into a hidden folder of the run folder; a failure
        (an unwritable folder) puts back what was moved and is one error."""
        ours = run_contents(self.out)[0]
        if not ours:
            return None
        moved: list[tuple[Path, Path]] = []
        aside = None
        try:
            aside = Path(tempfile.mkdtemp(prefix=".i2i-replaced-", dir=self.out))
            for p in ours:
                dst = aside / p.relative_to(self.out)
                dst.parent.mkdir(exist_ok=True)
                os.replace(p, dst)
                moved.append((p, dst))
        except OSError as exc:
            if aside is not None:
                self._put_back(aside, moved)
            raise I2IError(f"--overwrite cannot replace the run in {self.out} ({exc.strerror or exc}: "
                           f"{exc.filename or self.out}); nothing was deleted; make the folder writable or choose "
                           f"another --out") from exc
        return aside, moved

    def _put_back(self, aside: Path, moved: list[tuple[Path, Path]], written: tuple[str, ...] = ()) -> None:
        """Undo :meth:`_move_aside`: the new run's first files (``written``) are removed and the old run's moved
        back."""
        for name in written:
            if all(p != self.out / name for p, _ in moved):
                with contextlib.suppress(OSError):
                    (self.out / name).unlink(missing_ok=True)
        for p, dst in moved:
            with contextlib.suppress(OSError):
                os.replace(dst, p)
        if not any(dst.exists() for _, dst in moved):
            shutil.rmtree(aside, ignore_errors=True)
