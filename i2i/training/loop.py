"""The training loop shared by every method, as a recipe: set up, check, resume, then train step by step with
logging, samples, validation and checkpoints. Each concern lives in its own module of this package."""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from ..config import Config
from ..device import resolve_device
from ..distributed import Distributed
from ..interrupts import Interrupted, stop_requests
from ..precision import Precision
from ..registry import Registry
from ..runlog import RunLog
from .exports import Exports
from .preflight import Preflight, checked_losses
from .run_folder import RunFolder
from .samples import Samples
from .setup import Setup, run_settings, to_device, training_dataset
from .state import TrainingState
from .validation import Validation


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    total_steps: int
    exports: dict[str, Path]
    samples: Path


class Trainer(Setup, Preflight, TrainingState, RunFolder, Exports, Validation, Samples):
    """Builds a run from a validated config and trains it (``run``)."""

    def __init__(self, cfg: Config, registry: Registry, out_dir: Path, *, state: dict[str, Any] | None = None,
                 overwrite: bool = False, console: Console | None = None, distributed: Distributed | None = None,
                 device: str | None = None) -> None:
        """``state``: the training checkpoint to resume from (see :func:`prepare_run_dir`); ``distributed``: this
        process's place in a torchrun job; ``device``: overrides ``train.device`` (a rank's own GPU)."""
        self.cfg, self.registry, self.out = cfg, registry, Path(out_dir)
        self.dist = distributed or Distributed()
        self.console = console or Console(stderr=True, quiet=not self.dist.main)
        self.state, self.overwrite = state, overwrite
        # which run a checkpoint and a log belong to (checkpoints from before ids were kept get a new one)
        self.run_id = str((state or {}).get("run_id") or uuid.uuid4().hex)
        self.device = resolve_device(device or cfg.train.device)
        torch.manual_seed(cfg.train.seed)
        random.seed(cfg.train.seed)
        np.random.seed(cfg.train.seed % 2**32)

        self.dataset, self.data_fingerprint = training_dataset(cfg, registry, self.console)
        self.settings = run_settings(cfg, self.device, self.dist, (state or {}).get("settings"))
        self.precision = Precision(self.settings["precision"], self.device, self.dist)
        self._build_method()
        self._build_loader()
        self._preflight()  # sizes, the generator contract, the probe, then the optimizers
        self._prepare_validation()
        self.best: dict[str, Any] = {}
        self.step = 0
        if self.state is not None:
            self._resume(self.state)
        self.dist.barrier()  # every rank has checked the run folder before rank 0 writes into it

    def _lrs(self) -> dict[str, float]:
        return {k: o.param_groups[0]["lr"] for k, o in self.optimizers.items()}

    def run(self) -> TrainResult:
        """Train to ``train.max_steps`` (or the schedule's end) with cudnn.benchmark as the settings say, restoring
        the process's own value afterwards."""
        previous = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = self.settings["cudnn_benchmark"]
        try:
            return self._run()
        finally:
            torch.backends.cudnn.benchmark = previous

    def _run(self) -> TrainResult:
        """The recipe: take the run folder, then step through the epochs until done or asked to stop."""
        self._start_files()
        self.write_report()  # replaces the page of a run this one overwrites
        self.dist.barrier()
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self._last_sample = self.out / "samples"
        for net in self.method.nets.values():
            net.train()
        with stop_requests() as stop, RunLog(self.out, self.console, self.total_steps, self.step,
                                             self.dist.main) as log:
            if self.state is not None:
                log.settings(self.step, self.settings, self._run_record())
            while self.step < self.total_steps:
                epoch, start = divmod(self.step, self.steps_per_epoch)
                self.sampler.set_epoch(epoch, start * self.cfg.data.batch_size)
                for batch in self.loader:
                    trained = self._train_step(batch)
                    done = self.step >= self.total_steps
                    stopping = self.dist.any(stop["stop"])  # all ranks stop at the same step
                    self._after_step(log, trained, done, stopping)
                    if stopping and not done:
                        self._stop()
                    if done:
                        break
        exports = self.export_generators()
        self.write_report("finished")
        if self._last_sample.is_dir():  # no sample written by this call (a finished run resumed): the run's last one
            self._last_sample = max(self._last_sample.glob("step_*.png"), default=self._last_sample)
        return TrainResult(self.out, self.step, self.total_steps, exports, self._last_sample)

    def _train_step(self, batch: dict[str, Any]) -> tuple[int, dict[str, float]]:
        """One step of the method; the learning-rate schedules step after an epoch. Returns the epoch and the
        learning rates the step was trained with."""
        losses = checked_losses(self._method_label,
                                self.method.train_step(to_device(batch, self.device, self.memory_format)))
        self.precision.update()
        for k, v in losses.items():  # detached: a method's tensor would keep its graph alive
            self._sums[k] = self._sums[k] + v.detach() if k in self._sums else v.detach().clone()
        self._count += 1
        self.step += 1
        trained = ((self.step - 1) // self.steps_per_epoch, self._lrs())
        if self.step % self.steps_per_epoch == 0:
            for s in self.schedulers.values():
                s.step()
        return trained

    def _after_step(self, log: RunLog, trained: tuple[int, dict[str, float]], done: bool, stopping: bool) -> None:
        """What is due after a step: the log line (losses averaged since the last one, checked finite), samples,
        validation and the checkpoint (every validation step is one: a failing validation loses no training)."""
        t, main, every = self.cfg.train, self.dist.main, self.cfg.validation.every
        validating = bool(every) and (self.step % every == 0 or done)
        checkpoint = self.step % t.checkpoint_every == 0 or done or stopping or validating
        if self.step % t.log_every == 0 or checkpoint:
            means = self.dist.mean({k: float(v) / self._count for k, v in self._sums.items()})
            bad = [k for k, v in means.items() if not math.isfinite(v)]
            if bad:
                self._diverged(f"loss {bad[0]} became {means[bad[0]]}")
            log.record(self.step, trained[0], means, trained[1])
            self._sums, self._count = {}, 0
        else:
            log.advance(self.step)
        if checkpoint:  # validation's best export, the ranks' checksums and the save need them finite
            self._check_finite()
        sampling = main and (self.step % t.sample_every == 0 or done)
        if sampling:
            self._last_sample = self.save_samples()
        try:
            if main and validating:
                log.validation(self.step, self.validate())
        finally:
            if checkpoint:
                if self.dist.enabled:
                    log.event(self.step, rank_checksums=self.check_ranks_in_sync())
                self.save_checkpoint()
        if (sampling or validating) and not done:  # the last step's page comes with the exports
            self.write_report()

    def _stop(self) -> None:
        """Stop on request (Ctrl-C, SIGTERM) after the step's checkpoint: export, and leave with every rank."""
        exports = self.export_generators()
        self.write_report("interrupted")
        self.dist.barrier()  # the ranks stop together: one that exits first makes torchrun kill the others,
        raise Interrupted(  # perhaps in the middle of a write or of the group's teardown
            f"interrupted at step {self.step}: saved {self.out / 'checkpoints' / 'last.pt'} and "
            f"{', '.join(p.name for p in exports.values())}; continue with --resume"
        )
