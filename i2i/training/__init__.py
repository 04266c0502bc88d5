"""Training, by concept: ``setup`` (dataset, settings, method, loader), ``preflight`` (checks before the first
step), ``state`` (checkpoints and exact resume), ``run_folder`` (what a run writes, and taking its folder),
``exports``, ``validation``, ``samples``, and ``loop`` (the :class:`Trainer` that puts them together)."""

from __future__ import annotations

from .loop import Trainer, TrainResult
from .run_folder import RUN_FILES, is_run, prepare_run_dir, run_contents, run_exists
from .state import check_providers, providers

__all__ = ["RUN_FILES", "TrainResult", "Trainer", "check_providers", "is_run", "prepare_run_dir", "providers",
           "run_contents", "run_exists"]
