"""What a run reports while training: rich progress, ``log.jsonl``, and TensorBoard when it is installed."""

from __future__ import annotations

import io
import json
import statistics
import time
from collections import deque
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text

from .errors import warn
from .files import atomic_write


def write_settings(path: Path, step: int, settings: dict[str, Any], run: dict[str, Any]) -> None:
    """Append the record of the performance options in force (``{"step", **run, "settings"}``; ``run``: the run's
    id and exported files) to the log at ``path``: the first line of a new run's log, by which i2i knows the folder
    for a run (and its checkpoint and exports)."""
    with path.open("a") as f:
        f.write(_settings_line(step, settings, run))


def _settings_line(step: int, settings: dict[str, Any], run: dict[str, Any]) -> str:
    return json.dumps({"step": step, **run, "settings": settings}) + "\n"


def log_lines(path: Path) -> list[tuple[str, Any]]:
    """Each line of the log at ``path`` (with its line end) and its JSON value, None where it is not JSON (a line
    cut short by a kill mid-write, say); nothing when the log cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    parsed = []
    for line in text.splitlines(keepends=True):
        try:
            parsed.append((line, json.loads(line)))
        except ValueError:
            parsed.append((line, None))
    return parsed


def settings_records(path: Path) -> list[dict[str, Any]]:
    """The settings records of the log at ``path``, oldest first (one per start or resume of the run)."""
    return [r for _, r in log_lines(path) if isinstance(r, dict) and "settings" in r]


def logged_run_id(path: Path) -> str | None:
    """The run id the log at ``path`` was last written with (None for logs written before ids were kept)."""
    return next((r["run_id"] for r in reversed(settings_records(path)) if r.get("run_id")), None)


def cut_back(path: Path, step: int) -> None:
    """Keep the records of the log at ``path`` up to ``step`` (the checkpoint a run resumes from): what a run
    logged after its last checkpoint before it was killed is logged again as the resumed run redoes those steps,
    and a line cut short (a full disk, a kill mid-write) is dropped."""
    if not path.is_file():
        return
    kept = [line for line, record in log_lines(path)
            if line.endswith("\n") and isinstance(record, dict) and int(record.get("step", 0)) <= step]
    atomic_write(path, lambda tmp: tmp.write_text("".join(kept)))


class _TrainProgress(Progress):
    """The progress line (step, bar, rate, ETA: short enough for 80 columns) with the losses on the line below,
    wrapped to the terminal's width, so that no width cuts the step, rate or ETA off."""

    losses = ""

    def get_renderables(self) -> Any:
        yield self.make_tasks_table(self.tasks)
        if self.losses:
            yield Text(self.losses, overflow="fold", no_wrap=False)


class Eta:
    """Time left at the median rate of the last logged intervals: one slow interval (a validation, a sample grid,
    the start-up work of the first) or a fast one does not swing it; a lasting change of speed moves it within a
    few intervals."""

    def __init__(self, window: int = 25) -> None:
        self.recent: deque[float] = deque(maxlen=window)  # seconds per step of the last intervals but the first
        self.started = False

    def __call__(self, step: int, total: int, sec_per_iter: float) -> str:
        rates: Any = [sec_per_iter]  # the first interval (start-up work included) until another comes
        if self.started:
            self.recent.append(sec_per_iter)
            rates = self.recent
        self.started = True
        left = statistics.median(rates) * max(0, total - step)
        return time.strftime("%H:%M:%S", time.gmtime(left))


class RunLog:
    """Progress bar plus a JSON-lines log (one record per logging interval) and optional TensorBoard scalars."""

    def __init__(self, out_dir: Path, console: Console, total: int, start: int, active: bool = True) -> None:
        """``active=False`` (distributed ranks other than 0) writes and shows nothing."""
        self.active = active
        if active and start > 0:
            cut_back(out_dir / "log.jsonl", start)
        self.file = (out_dir / "log.jsonl").open("a") if active else io.StringIO()
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            # a resumed run drops the scalars logged after its checkpoint, as the JSON log does
            self.tb = (SummaryWriter(str(out_dir / "tensorboard"), purge_step=start + 1 if start else None)
                       if active else None)
        except Exception:  # tensorboard not installed: the JSON log is the record
            self.tb = None
        self.progress = _TrainProgress(
            TextColumn("[bold]train"), BarColumn(bar_width=24), MofNCompleteColumn(),
            TextColumn("{task.fields[speed]}"), TextColumn("eta {task.fields[eta]}"), console=console,
        )
        self.task = self.progress.add_task("train", total=total, completed=start, speed="", eta="--:--:--")
        self.eta = Eta()
        self.last_time, self.last_step = time.perf_counter(), start
        self.console, self.total, self.records = console, total, 0
        self.live = console.is_terminal and active  # a progress bar on terminals, plain lines in logs and CI

    def __enter__(self) -> RunLog:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live:
            self.progress.stop()
        self.file.close()
        if self.tb is not None:
            self.tb.close()

    def advance(self, step: int) -> None:
        self.progress.update(self.task, completed=step)

    def event(self, step: int, **fields: Any) -> None:
        self.file.write(json.dumps({"step": step, **fields}) + "\n")
        self.file.flush()

    def settings(self, step: int, settings: dict[str, Any], run: dict[str, Any]) -> None:
        """The performance options in force, recorded when a run starts or resumes."""
        self.file.write(_settings_line(step, settings, run))
        self.file.flush()

    def validation(self, step: int, result: dict[str, Any]) -> None:
        """A validation record: {"step", "validation": {metric: value}, "identity": {metric: value}}, with
        ``"warnings"``: what evaluation noted (each a ``warning:`` line too), where ``result`` has any."""
        notes = result.get("warnings") or []
        self.file.write(json.dumps({"step": step, "validation": result["scores"], "identity": result["identity"],
                                    **({"warnings": notes} if notes else {})}) + "\n")
        self.file.flush()
        for note in notes:
            warn(note, self.console)
        shown = "  ".join(f"{k} {v:.4f} (identity {result['identity'][k]:.4f})" for k, v in result["scores"].items())
        self.console.print(f"validation at step {step}: {shown}", highlight=False, soft_wrap=True, markup=False)
        if self.tb is not None:
            for k, v in result["scores"].items():
                self.tb.add_scalar(f"val/{k}", v, step)

    def record(self, step: int, epoch: int, losses: dict[str, float], lrs: dict[str, float],
               extra: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        sec = (now - self.last_time) / max(1, step - self.last_step)
        self.last_time, self.last_step = now, step
        entry = {"step": step, "epoch": epoch, "losses": losses, "lr": lrs, "sec_per_iter": sec,
                 "time": time.time(), **(extra or {})}
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()
        shown = " ".join(f"{k} {v:.3f}" for k, v in losses.items())
        speed = f"{1 / sec:.2f} it/s" if sec > 0 else ""
        eta = self.eta(step, self.total, sec)
        self.progress.losses = shown
        self.progress.update(self.task, completed=step, speed=speed, eta=eta)
        if self.active and not self.live and (self.records % 10 == 0 or step == self.total):
            self.console.print(f"step {step}/{self.total}  {speed}  eta {eta}  {shown}", highlight=False,
                               soft_wrap=True, markup=False)
        self.records += 1
        if self.tb is not None:
            for k, v in losses.items():
                self.tb.add_scalar(f"loss/{k}", v, step)
            for k, v in lrs.items():
                self.tb.add_scalar(f"lr/{k}", v, step)
