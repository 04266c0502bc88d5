"""The training loop shared by every method: data order, device, schedule, logging, samples, checkpoints, resume.

A method supplies networks, optimizers and one ``train_step``; everything here is method-agnostic.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import io
import json
import math
import os
import random
import re
import shutil
import signal
import tempfile
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, default_collate
from torchvision.utils import make_grid, save_image

from . import __version__
from .checkpoint import TRAIN_FORMAT, atomic_save, generator_record, safe_load, state_dict_mismatch
from .config import SHORT_ROLES, Config, network_roles_of, save_yaml
from .device import out_of_memory, resolve_device
from .distributed import Distributed
from .errors import I2IError, first_line, warn
from .evaluate import evaluate, plan
from .features import FeatureExtractor, build_extractor
from .files import atomic_write
from .heldout import Pair, dataset_pairs
from .interrupts import Interrupted, stop_requests
from .method import Built, Components, Method
from .precision import Precision
from .registry import Registry, known_version
from .runlog import RunLog, logged_run_id, settings_records, write_settings
from .sampling import EpochSampler, SeededDataset, sample_seed
from .schedule import linear_decay
from .translate import Translator

RUN_FILES = ("checkpoints", "samples", "tensorboard", "log.jsonl", "config.yaml")
#: what i2i writes into a run folder and each of its folders, as name patterns (``atomic_write``'s temporary files,
#: left by a killed process, included), besides the exported generators (``export_files``): ``--overwrite``
#: deletes these and nothing else
RUN_PATTERNS = {".": ("log.jsonl", "config.yaml", "config.edited.yaml", ".config.*.tmp.yaml", ".log.*.tmp.jsonl"),
                "checkpoints": ("last.pt", ".last.*.tmp.pt"), "samples": ("step_*.png", ".step_*.tmp.png"),
                "tensorboard": ("events.out.tfevents.*",)}
#: the performance settings that change a step's arithmetic (see ``_note_changed_arithmetic``)
ARITHMETIC_SETTINGS = ("device", "precision", "channels_last", "compile", "cudnn_benchmark", "fused_adam")
#: the names of exported generators in runs whose log does not name them (made before logs did)
EXPORT_FILE = re.compile(r"G_[^_]+(_best)?\.pt")
#: the config keys that set validation's feature extractor and folders, for the advice in its errors
VALIDATION_OPTIONS = {"features": "validation.features={}", "weights": "validation.feature_weights={}",
                      "inception": "validation.feature_weights={}",
                      "target": "validation.target={} (relative to the data folder)",
                      "truth": "validation.truth={} (relative to the data folder)"}


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    total_steps: int
    exports: dict[str, Path]
    samples: Path


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


def _leave_stopping_to_the_trainer(_worker: int) -> None:
    """In a data-loading process: ignore SIGTERM. ``docker stop``, systemd and Slurm send it to the whole process
    group; a worker it killed would make the DataLoader raise in the middle of the step the trainer is finishing
    before it saves. The trainer stops the workers itself (and they exit when it is gone)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _meta_copy(nets: nn.ModuleDict) -> nn.ModuleDict:
    """A copy of ``nets`` whose parameters and buffers are on the meta device (shapes only): made without copying
    a single weight, wherever the networks are."""
    memo: dict[int, Any] = {}
    for t in [*nets.parameters(), *nets.buffers()]:
        on_meta = t.detach().to("meta")
        memo[id(t)] = nn.Parameter(on_meta, t.requires_grad) if isinstance(t, nn.Parameter) else on_meta
    return copy.deepcopy(nets, memo)


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


def providers(cfg: Config, registry: Registry) -> dict[str, dict[str, str]]:
    """Which plugin (its distribution and version) provides each component ``cfg`` names, by config key; training
    checkpoints record it so that a run whose plugin is gone can say what to install (see :func:`check_providers`)."""
    roles = network_roles_of(registry.get("method", cfg.method.name).factory)
    named = {"method": ("method", cfg.method.name), "data": ("dataset", cfg.data.name),
             **{role if role in SHORT_ROLES else f"networks.{role}": (roles.get(role, role), comp.name)
                for role, comp in cfg.networks.items()},
             **{f"losses.{role}": ("loss", comp.name) for role, comp in cfg.losses.items()}}
    return {key: registry.get(kind, name).provider() for key, (kind, name) in named.items()}


def check_providers(state: dict[str, Any], registry: Registry, path: Path) -> str | None:
    """Every component the training checkpoint at ``path`` recorded is registered by the plugin that made it; a
    missing one names its plugin, whether it is blocked, failed or not installed, and what to install (checkpoints
    from before these records were kept get the usual "unknown component" errors). Returns a warning when a plugin's
    installed version is not the one the run was made with."""
    recorded = state.get("providers")
    changed: dict[str, str] = {}
    for provider in recorded.values() if isinstance(recorded, dict) else ():
        if isinstance(provider, dict) and provider.get("kind") and provider.get("name"):
            entry = registry.require(str(provider["kind"]), str(provider["name"]), provider, str(path))
            made = str(provider.get("version") or "")
            if known_version(made) and made != entry.version:
                changed[entry.plugin] = f"plugin '{entry.plugin}' {made} (now {entry.version})"
    if not changed:
        return None
    return (f"this run was made with {', '.join(changed.values())}; if its components changed, the run does not "
            f"continue exactly as it would have")


#: optimizer options that choose an implementation, not the mathematics: taken from this run on resume
KERNEL_OPTIONS = ("fused", "foreach", "capturable")


def _match_layout(opt: torch.optim.Optimizer) -> None:
    """Give loaded optimizer state its parameter's memory layout: ``load_state_dict`` keeps the saved strides, and
    fused Adam pairs elements by memory order (a contiguous run resumed channels_last, e.g. continued on a GPU)."""
    for p, state in opt.state.items():
        for k, v in state.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                state[k] = torch.empty_like(p).copy_(v)


def _rng_state(device: torch.device) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(device)] if device.type == "cuda" else [],  # this process's GPU only
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and device.type == "cuda":  # a CPU run resumed on a GPU starts that GPU's stream afresh
        torch.cuda.set_rng_state(state["cuda"][0], device)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def _to(batch: dict[str, Any], device: torch.device,
        memory_format: torch.memory_format = torch.contiguous_format) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True, memory_format=memory_format) if torch.is_tensor(v) and v.dim() == 4
            else v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _padded(images: list[torch.Tensor]) -> torch.Tensor:
    """CHW images in [-1, 1] as one batch, each padded at its right and bottom with black (-1) to the largest height
    and width among them (domains differ in size with ``data.preprocess=none`` or ``scale_width``)."""
    h, w = max(t.shape[-2] for t in images), max(t.shape[-1] for t in images)
    return torch.stack([torch.nn.functional.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]), value=-1.0)
                        for t in images])


def _from_torch(exc: BaseException) -> bool:
    """Whether ``exc`` is an error of PyTorch's (a RuntimeError from its kernels, or raised in its Python code, such
    as instance norm's ValueError for a 1×1 feature map) rather than of the method's own code."""
    frames = traceback.extract_tb(exc.__traceback__)
    home = os.path.dirname(torch.__file__) + os.sep
    return isinstance(exc, RuntimeError) or bool(frames) and frames[-1].filename.startswith(home)


def _checked_losses(method: Callable[[], str], losses: Any) -> Mapping[str, torch.Tensor]:
    """``losses`` if it is what ``Method.train_step`` returns (a dict of one-number tensors by name), else one line
    naming the method (``method()``: "method 'x' (plugin p)"; a plugin's code would otherwise fail in the loop)."""
    if isinstance(losses, Mapping) and losses and all(
            isinstance(k, str) and torch.is_tensor(v) and v.numel() == 1 for k, v in losses.items()):
        return losses
    raise I2IError(f"{method()}: train_step() returned {_described(losses)}; it must return a dict of one-number loss "
                   f"tensors by name (see docs/plugins.md)")


def _checked_rows(method: Callable[[], str], rows: Any) -> list[list[torch.Tensor]]:
    """``rows`` if it is what ``Method.samples`` returns (rows of NCHW image batches of one N), else one line."""
    if (isinstance(rows, (list, tuple)) and rows and all(isinstance(r, (list, tuple)) and r for r in rows)
            and all(torch.is_tensor(t) and t.ndim == 4 for r in rows for t in r)
            and len({t.shape[0] for r in rows for t in r}) == 1):
        return rows
    raise I2IError(f"{method()}: samples() returned {_described(rows)}; it must return rows (lists) of NCHW image "
                   f"batches with one batch size (see docs/plugins.md)")


def _described(value: Any) -> str:
    """What a method returned, in a few words: its type and, for containers, their items' types and shapes."""
    if torch.is_tensor(value):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (Mapping, list, tuple)) and not value:
        return f"an empty {type(value).__name__}"
    more = [", …"] if isinstance(value, (Mapping, list, tuple)) and len(value) > 4 else []
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {_described(v)}" for k, v in list(value.items())[:4]) + "".join(more) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_described(v) for v in value[:4]) + "".join(more) + "]"
    return f"a {type(value).__name__}"


def _shapes(sample: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sample.items() if torch.is_tensor(v)}


class Trainer:
    """Builds a run from a validated config and trains it (``run``)."""

    def __init__(self, cfg: Config, registry: Registry, out_dir: Path, *, state: dict[str, Any] | None = None,
                 overwrite: bool = False, console: Console | None = None, distributed: Distributed | None = None,
                 device: str | None = None) -> None:
        """``state``: the training checkpoint to resume from (see :func:`prepare_run_dir`); ``distributed``: this
        process's place in a torchrun job; ``device``: overrides ``train.device`` (a rank's own GPU)."""
        self.cfg, self.registry, self.out = cfg, registry, Path(out_dir)
        self.dist = distributed or Distributed()
        self.console = console or Console(stderr=True, quiet=not self.dist.main)
        self.state = state
        # which run a checkpoint and a log belong to (checkpoints from before ids were kept get a new one)
        self.run_id = str((state or {}).get("run_id") or uuid.uuid4().hex)
        self.overwrite = overwrite
        t = cfg.train
        self.device = resolve_device(device or t.device)
        torch.manual_seed(t.seed)
        random.seed(t.seed)
        np.random.seed(t.seed % 2**32)

        if not cfg.data.root:
            raise I2IError("no data folder given; pass --data DIR (or omit it to train on the demo data)")
        self.dataset = registry.build("dataset", cfg.data.name, cfg.data.params, cfg.data.root, "train")
        for w in getattr(self.dataset, "warnings", []):
            warn(w, self.console)
        channels = getattr(self.dataset, "channels", None)
        if not isinstance(channels, dict):
            raise I2IError(f"dataset '{cfg.data.name}' does not declare its domains' channels (a 'channels' dict)")
        fingerprint = getattr(self.dataset, "fingerprint", None)  # optional: names and sizes of its images
        self.data_fingerprint = fingerprint() if callable(fingerprint) else None
        if len(self.dataset) == 0:
            raise I2IError(f"dataset '{cfg.data.name}' found no training images in {cfg.data.root}; check the folder "
                           f"against the dataset's layout (`i2i list dataset`)")

        cuda = self.device.type == "cuda"
        precision = t.precision if t.precision != "auto" else ("bf16" if cuda and torch.cuda.is_bf16_supported()
                                                               else "fp32")
        self.settings = {
            "device": str(self.device), "processes": self.dist.world, "precision": precision,
            "channels_last": cuda if t.channels_last is None else t.channels_last,
            "compile": t.compile, "cudnn_benchmark": cuda if t.cudnn_benchmark is None else t.cudnn_benchmark,
            "fused_adam": cuda if t.fused_adam is None else t.fused_adam,
            # on the CPU, loader processes would compete with the step for the same cores
            "workers": (min(4, os.cpu_count() or 1) if cuda else 0) if cfg.data.workers is None else cfg.data.workers,
            "pin_memory": cuda,
        }
        self.settings["persistent_workers"] = self.settings["workers"] > 0
        if precision == "fp16" and not cuda:
            raise I2IError("--precision fp16 needs a CUDA device; use bf16 on the CPU")
        self.precision = Precision(precision, self.device, self.dist)
        self.method_entry = registry.get("method", cfg.method.name)
        self.components = Components(registry, cfg, channels, self.device, self.precision, self.settings["fused_adam"],
                                     seed=t.seed + 7919 * self.dist.rank,
                                     network_roles=network_roles_of(self.method_entry.factory))
        self.method: Method = self.method_entry.build(self.components, **cfg.method.params)
        for net in self.method.nets.values():
            self.dist.broadcast_module(net)
        self.memory_format = torch.channels_last if self.settings["channels_last"] else torch.contiguous_format
        for net in self.method.nets.values():
            net.to(memory_format=self.memory_format)

        self.sampler = EpochSampler(len(self.dataset), t.seed, rank=self.dist.rank, world=self.dist.world)
        self.steps_per_epoch = math.ceil(math.ceil(len(self.dataset) / self.dist.world) / cfg.data.batch_size)
        full = (t.epochs + t.decay_epochs) * self.steps_per_epoch
        self.total_steps = min(full, t.max_steps) if t.max_steps else full
        if self.total_steps < 1:
            raise I2IError("train.epochs + train.decay_epochs is 0: nothing to train (set --epochs)")
        seeded = SeededDataset(self.dataset)
        self.loader = DataLoader(
            seeded, batch_size=cfg.data.batch_size, sampler=self.sampler, num_workers=self.settings["workers"],
            pin_memory=self.settings["pin_memory"], persistent_workers=self.settings["persistent_workers"],
            drop_last=False, worker_init_fn=_leave_stopping_to_the_trainer,
            # each iterator draws a base seed; from its own generator, not the global one that dropout and losses
            # draw from (a resumed run starts an iterator mid-epoch). Samples are seeded by SeededDataset.
            generator=torch.Generator().manual_seed(t.seed),
        )
        n = min(4, len(self.dataset))
        fixed = [seeded[(i * len(self.dataset) // n, sample_seed(t.seed, 0, i))] for i in range(n)]
        shapes = _shapes(fixed[0])
        self.sample_batch = _to(default_collate([s for s in fixed if _shapes(s) == shapes]), self.device,
                                self.memory_format)
        self._check_sizes()
        self._check_generators()
        try:
            with self._aside():
                self.method.probe(self.sample_batch)
        except (RuntimeError, ValueError) as exc:
            if out_of_memory(exc) or not _from_torch(exc):
                raise
            raise I2IError(f"the networks cannot take the training images ({first_line(exc, 160)}); "
                           f"use a larger --size or a smaller network (e.g. fewer discriminator layers)") from exc
        self.settings["method"] = self.method.settings()
        self.optimizers, self.schedulers = self._optimizers()
        self._check_extra_state()
        self._check_image_sizes()
        if t.compile:  # after the checks above, which run the networks eagerly at sizes training may never see
            for net in self.method.nets.values():
                net.compile()

        v = cfg.validation
        self.val_network = v.network or next(iter(self.method.exports), None)
        if v.every and self.val_network is None:
            raise I2IError(f"method '{cfg.method.name}' exports no generator to validate")
        self._extractor: FeatureExtractor | None = None
        self._pairs: list[Pair] | None = None
        self._noted: set[str] = set()
        if v.every:
            for key in ("source", "target", "truth"):
                folder = getattr(v, key)
                if folder is not None and not (Path(cfg.data.root) / folder).is_dir():
                    raise I2IError(f"validation.{key}: folder {Path(cfg.data.root) / folder} does not exist "
                                   f"(paths are relative to the data folder); fix it or set validation.every=0")
            # the held-out images, the metrics and their feature extractor, checked before the first step by the one
            # process that validates; its verdict fails every rank alike
            self.dist.on_main(self._validation_plan, lambda exc: I2IError(
                f"validation: {exc} (or set validation.every=0)"))
        self.best: dict[str, Any] = {}
        self.step = 0
        if self.state is not None:
            self._load_state(self.state)
            if self.step > self.total_steps:
                raise I2IError(f"this run is already at step {self.step}, past the {self.total_steps} steps asked for; "
                               f"resume with a larger --max-steps (or none, for the whole schedule)")
            if t.max_steps and t.max_steps > full:
                note = (f"the schedule of this run ends at step {full} ({t.epochs} epochs + {t.decay_epochs} decay "
                        f"epochs of {self.steps_per_epoch} steps), before --max-steps {t.max_steps}; it cannot be "
                        f"extended on resume (train.epochs and train.decay_epochs are fixed): start a new run with "
                        f"more --epochs or --decay-epochs to train longer")
                warn(note, self.console)
        self.dist.barrier()  # every rank has checked the run folder before rank 0 writes into it

    def _optimizers(self) -> tuple[dict[str, torch.optim.Optimizer], dict[str, Any]]:
        """The method's optimizers and schedules, after the first probe (modules made on first use exist); an
        optimizer without a schedule of the method's gets the engine's linear decay."""
        made = self.method.configure_optimizers()
        optimizers, schedules = made if isinstance(made, tuple) else (made, {})
        if not isinstance(optimizers, Mapping) or not all(isinstance(o, torch.optim.Optimizer)
                                                         for o in optimizers.values()):
            raise I2IError(f"{self._method_label()}: configure_optimizers() returned {_described(made)}; it must "
                           f"return a dict of torch optimizers by name, optionally with a dict of schedules")
        unknown = [k for k in schedules if k not in optimizers]
        if unknown:
            raise I2IError(f"{self._method_label()}: configure_optimizers() gave a schedule for '{unknown[0]}', which "
                           f"is not one of its optimizers ({', '.join(optimizers)})")
        t = self.cfg.train
        return dict(optimizers), {k: schedules.get(k) or linear_decay(o, t.epochs, t.decay_epochs)
                                  for k, o in optimizers.items()}

    def network_name(self, net: str) -> str:
        """The registered name of the component the method's network ``net`` was built from (or its class)."""
        built = self.components.built(self.method.nets[net])
        return built.name if built is not None else type(self.method.nets[net]).__name__

    def _size_advice(self, m: int) -> str:
        """How to give generators that need sides in multiples of ``m`` such images, for this preprocess."""
        preprocess = str(self.cfg.data.params.get("preprocess", ""))
        if preprocess in ("none", "scale_width"):
            return (f"data.preprocess={preprocess} keeps the images' own sizes (--size has no effect): resize the "
                    f"images to multiples of {m}, or use a cropping preprocess (e.g. data.preprocess=resize_and_crop "
                    f"with --size a multiple of {m})")
        return f"set --size (crop) to a multiple of {m}"

    def _check_sizes(self) -> None:
        missing = [n for n in self.method.exports if n not in self.method.nets]
        if missing:
            raise I2IError(f"method '{self.cfg.method.name}' exports '{missing[0]}', which is not one of its networks "
                           f"({', '.join(self.method.nets)})")
        for name in self.method.exports:
            self._exported(name)
        shape = next(v for v in self.sample_batch.values() if torch.is_tensor(v)).shape[-2:]
        for name in self.method.exports:
            m = int(getattr(self.method.nets[name], "size_multiple", 1))
            if shape[0] % m or shape[1] % m:
                raise I2IError(
                    f"training images are {shape[1]}×{shape[0]} but generator '{self.network_name(name)}' needs "
                    f"sides that are multiples of {m}; {self._size_advice(m)}"
                )

    def _check_extra_state(self) -> None:
        """What the method adds to checkpoints loads safely (``weights_only``): checked now rather than when a
        resume refuses the checkpoint."""
        buffer = io.BytesIO()
        try:
            torch.save(self.method.extra_state(), buffer)
            buffer.seek(0)
            torch.load(buffer, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise I2IError(f"method '{self.cfg.method.name}': extra_state() returns what a checkpoint cannot hold "
                           f"safely ({first_line(exc, 120)}); return plain types: tensors, numbers, strings, lists, "
                           f"dicts") from exc

    def _check_generators(self) -> None:
        """The sample batch has the channels the dataset declares, and every network the method exports (each one of
        its networks: ``_check_sizes``) keeps the generator contract: a domain's image in, an image of the other
        domain's channels and the same size out (run on a meta copy, or on the device where the meta device cannot
        run it)."""
        data, declared = self.cfg.data.name, self.dataset.channels
        for domain, x in self.sample_batch.items():
            if torch.is_tensor(x) and domain in declared and x.shape[1] != declared[domain]:
                raise I2IError(f"dataset '{data}' declares {declared[domain]} channel(s) for domain {domain} but gives "
                               f"images of {x.shape[1]}; its 'channels' must match its images")
        meta = _meta_copy(self.method.nets)
        for name, (src, dst) in self.method.exports.items():
            if not torch.is_tensor(self.sample_batch.get(src)) or dst not in declared:
                continue  # a method whose domains are not the batch's keys: its own probe checks it
            x = self.sample_batch[src][:1]
            g = self.network_name(name)
            try:
                with torch.no_grad():
                    try:
                        out = meta[name](x.to("meta"))
                    except Exception:  # an operation without a meta kernel: run it for real, in eval mode (no
                        net = self.method.nets[name]  # batch-norm statistics updated by the check)
                        training = net.training
                        try:
                            out = net.eval()(x)
                        finally:
                            net.train(training)
            except Exception as exc:
                if out_of_memory(exc):
                    raise
                raise I2IError(f"generator '{g}' cannot take domain {src}'s training images ({x.shape[1]} channel(s), "
                               f"{x.shape[-1]}×{x.shape[-2]}): {first_line(exc, 120)}; use a larger --size, or check "
                               f"that it builds for in_channels={x.shape[1]}") from exc
            want = (x.shape[0], declared[dst], *x.shape[-2:])
            if not torch.is_tensor(out) or tuple(out.shape) != want:
                got = "×".join(map(str, out.shape[1:])) if torch.is_tensor(out) else type(out).__name__
                raise I2IError(f"generator '{g}' ({name}) returns {got} (channels×height×width) for a "
                               f"{x.shape[1]}×{x.shape[-2]}×{x.shape[-1]} image of domain {src}, but must return "
                               f"{'×'.join(map(str, want[1:]))}: domain {dst}'s channels at the input's size "
                               f"(i2i.testing.check_generator checks a generator's contract)")

    def _check_image_sizes(self) -> None:
        """Every training image fits the networks, when the preprocess keeps their sizes (``image_sizes``: each
        domain's sizes after preprocessing, from the files' headers): sides in the generators' multiples, and the
        smallest sizes run through the method's probe, on the meta device (no memory, no arithmetic) and, where
        that fails, on the training device to confirm. An image the start-up probe did not sample is thus refused
        here, by name, rather than failing the run when it comes up."""
        image_sizes = getattr(self.dataset, "image_sizes", None)
        sizes = image_sizes() if callable(image_sizes) else None
        if not sizes:
            return
        for name, (src, _) in self.method.exports.items():
            m = int(getattr(self.method.nets[name], "size_multiple", 1))
            for (h, w), path in sizes.get(src, {}).items():
                if h % m or w % m:
                    raise I2IError(f"training image {path} is {w}×{h} after preprocessing but generator "
                                   f"'{self.network_name(name)}' needs sides that are multiples of {m}; "
                                   f"{self._size_advice(m)}")
        base = {k: v[:1] for k, v in self.sample_batch.items() if torch.is_tensor(v)}
        meta = _meta_copy(self.method.nets)
        for domain, found in sizes.items():
            if domain not in base:
                continue
            # the smallest sizes: no other size is at most as tall and as wide (networks that take a size take
            # every larger one); by height, each narrower than all before it
            smallest, narrowest = [], math.inf
            for h, w in sorted(found):
                if w < narrowest:
                    smallest.append((h, w))
                    narrowest = w
            for h, w in sorted(smallest, key=lambda s: s[0] * s[1]):
                if self._probe_size(base, domain, h, w, meta) is None:
                    continue
                error = self._probe_size(base, domain, h, w)
                if error is not None:
                    raise I2IError(f"training image {found[(h, w)]} is too small for the networks ({w}×{h} after "
                                   f"preprocessing: {first_line(error, 120)}); remove or enlarge it, or use a cropping "
                                   f"preprocess (e.g. data.preprocess=resize_and_crop)")

    def _probe_size(self, base: dict[str, torch.Tensor], domain: str, h: int, w: int,
                    meta: nn.ModuleDict | None = None) -> Exception | None:
        """The error the method's probe raises for one ``domain`` image of ``h`` × ``w`` (the other domains as in
        the sample batch), or None: on the training device, or with ``meta`` (meta copies of the networks) on the
        meta device, where any failure counts (an operation without a meta kernel, too) and is confirmed on the
        training device by the caller."""
        device = torch.device("meta") if meta is not None else self.device
        batch = {k: torch.zeros(v.shape, dtype=v.dtype, device=device) for k, v in base.items()}
        batch[domain] = torch.zeros(*base[domain].shape[:2], h, w, dtype=base[domain].dtype, device=device)
        nets = self.method.nets
        try:
            if meta is not None:
                self.method.nets = meta
            with self._aside():
                self.method.probe(batch)
        except Exception as exc:
            if meta is None and (out_of_memory(exc) or not isinstance(exc, (RuntimeError, ValueError,
                                                                                      NotImplementedError))):
                raise
            return exc
        finally:
            self.method.nets = nets
        return None

    def _method_label(self) -> str:
        """"method 'x' (plugin p)": for errors about what the method's code does."""
        return f"method '{self.cfg.method.name}' (plugin {self.registry.get('method', self.cfg.method.name).plugin})"

    @contextlib.contextmanager
    def _aside(self) -> Iterator[None]:
        """Run the networks outside training (probes, samples, validation) as if they had not run: the random
        generators (dropout's masks) and the networks' buffers (batch norm's running statistics) are restored, so
        that how often samples are saved never changes what is trained."""
        buffers = [(b, b.clone()) for b in self.method.nets.buffers()]
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                yield
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)

    # -- state -------------------------------------------------------------------------------------------------
    def _rank_state(self) -> dict[str, Any]:
        return {"method": self.method.extra_state(), "rng": _rng_state(self.device)}

    def _training_state(self) -> dict[str, Any]:
        ranks = self.dist.gather(self._rank_state()) if self.dist.enabled else None
        return {
            "format": TRAIN_FORMAT,
            "step": self.step,
            "images": len(self.dataset),
            "config": self.cfg.to_dict(),
            "nets": {k: v.state_dict() for k, v in self.method.nets.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "method": self.method.extra_state(),
            "grad_scaler": self.precision.state_dict(),
            "best": self.best,
            "run_id": self.run_id,
            "data_fingerprint": self.data_fingerprint,
            "settings": self.settings,
            "rng": _rng_state(self.device),
            "processes": self.dist.world,
            "rank_states": ranks,
            "versions": {"i2i": __version__, "torch": str(torch.__version__)},
            "providers": providers(self.cfg, self.registry),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        images = state.get("images", len(self.dataset))
        if images != len(self.dataset):
            raise I2IError(f"{self.cfg.data.root} holds {len(self.dataset)} training images but this run was trained "
                           f"on {images}; resume with --data pointing at the same images, or start a new run")
        try:
            for k, net in self.method.nets.items():
                net.load_state_dict(state["nets"][k])
            for k, opt in self.optimizers.items():
                # this run's optimizer kernels (fused Adam on a GPU), not those of the run that saved the state
                saved = state["optimizers"][k]
                groups = [{**g, **{f: mine[f] for f in KERNEL_OPTIONS if f in mine}}
                          for g, mine in zip(saved["param_groups"], opt.param_groups, strict=True)]
                opt.load_state_dict({**saved, "param_groups": groups})
                _match_layout(opt)
            for k, sched in self.schedulers.items():
                sched.load_state_dict(state["schedulers"][k])
            saved_world = int(state.get("processes") or 1)
            if saved_world != self.dist.world:
                raise I2IError(f"this run was trained with {saved_world} process(es); resume it with "
                               f"--nproc {saved_world} to continue exactly")
            own = state["rank_states"][self.dist.rank] if self.dist.enabled else state
            self.method.load_extra_state(own["method"])
            self.best = dict(state.get("best") or {})
            self.precision.load_state_dict(state.get("grad_scaler") or {})
            _set_rng_state(own["rng"], self.device)
            self.step = int(state["step"])
            self._note_changed_arithmetic(state.get("settings"))
            saved_data = state.get("data_fingerprint")
            if self.dist.main and saved_data and self.data_fingerprint and saved_data != self.data_fingerprint:
                warn(f"the images in {self.cfg.data.root} are not those this run was trained on (names or sizes have "
                     f"changed): it continues on these, not as it would have", self.console)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise I2IError(
                f"checkpoint {self.out / 'checkpoints' / 'last.pt'} does not match this configuration "
                f"({type(exc).__name__}: {state_dict_mismatch(exc)})"
            ) from exc

    def _diverged(self, what: str) -> NoReturn:
        last = self.out / "checkpoints" / "last.pt"
        kept = f"{last} keeps the last good state" if last.is_file() else "no checkpoint had been saved yet"
        raise I2IError(f"{what} by step {self.step}; training stopped and {kept} (lower method.params.lr, or check "
                       f"the data)")

    def _note_changed_arithmetic(self, saved: Any) -> None:
        """Warn when a run resumes with settings that change its arithmetic (another kind of device, precision,
        memory format, compilation, convolution algorithm search or Adam kernel): it continues, but not bit for bit
        as it would have."""
        if not isinstance(saved, dict) or not self.dist.main:
            return
        def kind(settings: dict[str, Any], key: str) -> Any:
            value = settings.get(key)
            return str(value).split(":")[0] if key == "device" else value

        changed = [f"{k} {kind(saved, k)} → {kind(self.settings, k)}" for k in ARITHMETIC_SETTINGS
                   if k in saved and kind(saved, k) != kind(self.settings, k)]
        if changed:
            warn(f"this run resumes with other settings than it was trained with ({', '.join(changed)}): it continues, "
                 f"but not bit for bit as it would have", self.console)

    def _run_record(self) -> dict[str, Any]:
        """What the log's settings records say of the run: its id and the files it exports (which ``--overwrite``
        deletes, and nothing else of that form)."""
        return {"run_id": self.run_id,
                "exports": [f"{n}{s}.pt" for n in self.method.exports for s in ("", "_best")]}

    def _check_finite(self) -> None:
        """Stop the run when weights are no longer finite (an update can overflow while the step's losses were still
        finite), before anything saves them."""
        params = [(f"{n}.{k}", p) for n, net in self.method.nets.items() for k, p in net.named_parameters()]
        if params and not bool(torch.stack([torch.isfinite(p).all() for _, p in params]).all()):
            self._diverged(f"the weights of {next(k for k, p in params if not torch.isfinite(p).all())} became "
                           f"non-finite")

    def save_checkpoint(self) -> Path:
        """Every rank takes part (their states are gathered); rank 0 writes. The training loop has checked the weights
        finite (``_check_finite``) before it validates and saves."""
        path = self.out / "checkpoints" / "last.pt"
        state = self._training_state()
        if self.dist.main:
            atomic_save(state, path)
        return path

    def check_ranks_in_sync(self) -> list[float]:
        """Checksums of every rank's weights; ranks that drifted apart are an error."""
        local = float(sum(p.detach().double().sum() for net in self.method.nets.values() for p in net.parameters()))
        sums = self.dist.gather(local)
        if len(set(sums)) > 1:
            raise I2IError(f"distributed ranks hold different weights at step {self.step} (checksums {sums}); "
                           f"report this with the run's config.yaml")
        return sums

    def export_generators(self, only: str | None = None, suffix: str = "") -> dict[str, Path]:
        """Write ``{name}.pt`` for each network the method exports: self-describing (the generator component it
        was built from, its own channels, the run's provenance), loadable with ``load_generator``."""
        paths = {}
        for name, (src, dst) in self.method.exports.items():
            if only is not None and name != only:
                continue
            net = self.method.nets[name]
            built = self._exported(name)
            entry = self.registry.get("generator", built.name)
            cin, cout = built.args[:2]
            provenance = {
                "method": self.cfg.method.name, "method_plugin": self.method_entry.plugin,
                "method_distribution": self.method_entry.distribution,
                "generator_plugin": entry.plugin, "generator_distribution": entry.distribution,
                "network": name, "role": built.role, "domains": [src, dst], "step": self.step,
                "versions": {"i2i": __version__, "torch": str(torch.__version__),
                             self.method_entry.plugin: self.method_entry.version, entry.plugin: entry.version},
                "config": self.cfg.to_dict(),
            }
            record = generator_record(net, built.name, built.params, cin, cout, provenance)
            paths[name] = self.out / f"{name}{suffix}.pt"
            if self.dist.main:
                atomic_save(record, paths[name])
        return paths

    def _exported(self, name: str) -> Built:
        """What built the exported network ``name``: a registered generator, given its channels."""
        built = self.components.built(self.method.nets[name])
        if built is None or built.kind != "generator" or len(built.args) < 2:
            raise I2IError(f"{self._method_label()} exports '{name}', which it did not build as a generator with "
                           f"Components.network(role, in_channels, out_channels); only such networks can be exported")
        return built

    def _validation_extractor(self) -> FeatureExtractor:
        """The feature extractor of FID/KID-like validation metrics, built once, on the training device."""
        if self._extractor is None:
            v = self.cfg.validation
            self._extractor = build_extractor(v.features, v.feature_weights, v.feature_weights,
                                              VALIDATION_OPTIONS).to(self.device)
        return self._extractor

    def _validation_settings(self) -> dict[str, Any]:
        """What validation evaluates, as :func:`i2i.evaluate.plan` and :func:`i2i.evaluate.evaluate` take it: the
        folders ``validation.source``/``truth``/``target``, or the held-out pairs of the dataset's split."""
        v, root = self.cfg.validation, Path(self.cfg.data.root)
        paths = {k: None if getattr(v, k) is None else root / getattr(v, k) for k in ("source", "target", "truth")}
        return {**paths, "metrics": v.metrics, "features": self._validation_extractor, "limit": v.max_images,
                "options": VALIDATION_OPTIONS, "pairs": self._held_out()}

    def _held_out(self) -> list[Pair] | None:
        """The dataset's held-out pairs of ``validation.split`` for the validated network's domains (built once)."""
        split = self.cfg.validation.split
        if split is None or self._pairs is not None:
            return self._pairs
        data = self.cfg.data
        dataset = self.registry.build("dataset", data.name, data.params, data.root, split)
        src, dst = self.method.exports[self.val_network]
        self._pairs = dataset_pairs(dataset, data.name, src, dst, split)
        return self._pairs

    def _validation_plan(self) -> None:
        plan(self.registry, **self._validation_settings())

    def validate(self) -> dict[str, Any]:
        """Score the validated network on held-out images; keep ``{network}_best.pt`` when ``best`` improves."""
        v = self.cfg.validation
        net = self.method.nets[self.val_network]
        src, dst = self.method.exports[self.val_network]
        io = {"in_channels": self.dataset.channels[src], "out_channels": self.dataset.channels[dst],
              "size_multiple": int(getattr(net, "size_multiple", 1))}
        with self._aside():
            report = evaluate(Translator(net, self.device, io=io, precision=self.precision.name), self.registry,
                              **self._validation_settings())
        net.to(memory_format=self.memory_format).train()
        scores = {k: row["translated"] for k, row in report.scores.items()}
        # what evaluation noted (e.g. truth images resized to the output), said once per run as `i2i eval` says it
        notes = [w for w in getattr(report, "warnings", []) if w not in self._noted]
        self._noted.update(notes)
        if v.best is not None:
            value, higher = scores[v.best], report.scores[v.best]["higher_is_better"]
            old = self.best.get("value") if self.best.get("metric") == v.best else None  # changed on resume: anew
            if old is None or (value > old if higher else value < old):
                self.best = {"metric": v.best, "value": value, "step": self.step}
                self.export_generators(only=self.val_network, suffix="_best")
        return {"scores": scores, "identity": {k: row["identity"] for k, row in report.scores.items()},
                "warnings": notes}

    def save_samples(self) -> Path:
        # e.g. [[real A, fake B, rec A], [real B, fake A, rec B]]
        with self._aside():
            rows = _checked_rows(self._method_label, self.method.samples(self.sample_batch))
        images = [t[i] for i in range(rows[0][0].shape[0]) for row in rows for t in row]
        images = [t.expand(3, *t.shape[1:]) if t.shape[0] == 1 else t[:3] for t in images]
        cols = sum(len(row) for row in rows)
        grid = make_grid(_padded(images).float().cpu(), nrow=cols, normalize=True, value_range=(-1, 1))
        return atomic_write(self.out / "samples" / f"step_{self.step:07d}.png", lambda tmp: save_image(grid, tmp))

    # -- loop --------------------------------------------------------------------------------------------------
    def _lrs(self) -> dict[str, float]:
        return {k: o.param_groups[0]["lr"] for k, o in self.optimizers.items()}

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
        t, main = self.cfg.train, self.dist.main
        self._start_files()
        self.dist.barrier()
        sums: dict[str, torch.Tensor] = {}
        count = 0
        last_sample = self.out / "samples"
        for net in self.method.nets.values():
            net.train()
        with stop_requests() as stop, RunLog(self.out, self.console, self.total_steps, self.step, main) as log:
            if self.state is not None:
                log.settings(self.step, self.settings, self._run_record())
            while self.step < self.total_steps:
                epoch, start = divmod(self.step, self.steps_per_epoch)
                self.sampler.set_epoch(epoch, start * self.cfg.data.batch_size)
                for batch in self.loader:
                    losses = _checked_losses(self._method_label,
                                             self.method.train_step(_to(batch, self.device, self.memory_format)))
                    self.precision.update()
                    for k, v in losses.items():  # detached: a method's tensor would keep its graph alive
                        sums[k] = sums[k] + v.detach() if k in sums else v.detach().clone()
                    count += 1
                    self.step += 1
                    # the epoch and learning rates this step was trained with (the schedule steps after an epoch)
                    trained = ((self.step - 1) // self.steps_per_epoch, self._lrs())
                    if self.step % self.steps_per_epoch == 0:
                        for s in self.schedulers.values():
                            s.step()
                    done = self.step >= self.total_steps
                    stopping = self.dist.any(stop["stop"])  # all ranks stop at the same step
                    every = self.cfg.validation.every
                    validating = bool(every) and (self.step % every == 0 or done)
                    # a validation step is a checkpoint step: a failing validation loses no training
                    checkpoint = self.step % t.checkpoint_every == 0 or done or stopping or validating
                    if self.step % t.log_every == 0 or checkpoint:
                        means = self.dist.mean({k: float(v) / count for k, v in sums.items()})
                        bad = [k for k, v in means.items() if not math.isfinite(v)]
                        if bad:
                            self._diverged(f"loss {bad[0]} became {means[bad[0]]}")
                        log.record(self.step, *trained[:1], means, trained[1])
                        sums, count = {}, 0
                    else:
                        log.advance(self.step)
                    if checkpoint:  # validation's best export, the ranks' checksums and the save need them finite
                        self._check_finite()
                    if main and (self.step % t.sample_every == 0 or done):
                        last_sample = self.save_samples()
                    try:
                        if main and validating:
                            log.validation(self.step, self.validate())
                    finally:
                        if checkpoint:
                            if self.dist.enabled:
                                log.event(self.step, rank_checksums=self.check_ranks_in_sync())
                            self.save_checkpoint()
                    if stopping and not done:
                        exports = self.export_generators()
                        self.dist.barrier()  # the ranks stop together: one that exits first makes torchrun kill
                        raise Interrupted(  # the others, perhaps in the middle of a write or of the group's teardown
                            f"interrupted at step {self.step}: saved {self.out / 'checkpoints' / 'last.pt'} and "
                            f"{', '.join(p.name for p in exports.values())}; continue with --resume"
                        )
                    if done:
                        break
        exports = self.export_generators()
        if last_sample.is_dir():  # no sample written by this call (a finished run resumed): the run's last one
            last_sample = max(last_sample.glob("step_*.png"), default=last_sample)
        return TrainResult(self.out, self.step, self.total_steps, exports, last_sample)
