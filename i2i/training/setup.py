"""Setting a run up: the training dataset, the settings in force (device, precision, memory format, loader),
the method and its networks, and the data loader with its fixed sample batch."""

from __future__ import annotations

import math
import os
import signal
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from torch.utils.data import DataLoader, Dataset, default_collate

from ..config import Config, network_roles_of
from ..device import apply_cpu_threads
from ..distributed import Distributed
from ..errors import I2IError, warn
from ..method import Components, Method
from ..registry import Registry
from ..sampling import EpochSampler, SeededDataset, sample_seed

if TYPE_CHECKING:
    from .loop import Trainer


def training_dataset(cfg: Config, registry: Registry, console: Console) -> tuple[Dataset, str | None]:
    """The dataset of ``cfg``'s training split, its warnings said, and its fingerprint (names and sizes of its
    images, when it gives one): checked to declare its domains' channels and to hold images."""
    if not cfg.data.root:
        raise I2IError("no data folder given; pass --data DIR (or omit it to train on the method's demo)")
    dataset = registry.build("dataset", cfg.data.name, cfg.data.params, cfg.data.root, "train")
    for w in getattr(dataset, "warnings", []):
        warn(w, console)
    if not isinstance(getattr(dataset, "channels", None), dict):
        raise I2IError(f"dataset '{cfg.data.name}' does not declare its domains' channels (a 'channels' dict)")
    fingerprint = getattr(dataset, "fingerprint", None)  # optional: names and sizes of its images
    if len(dataset) == 0:
        raise I2IError(f"dataset '{cfg.data.name}' found no training images in {cfg.data.root}; check the folder "
                       f"against the dataset's layout (`i2i list dataset`)")
    return dataset, fingerprint() if callable(fingerprint) else None


def run_settings(cfg: Config, device: torch.device, dist: Distributed,
                 saved: dict[str, Any] | None = None) -> dict[str, Any]:
    """The performance settings in force, the config's automatic choices made (CUDA: bf16, channels_last, cudnn
    search, fused Adam, loader processes; the CPU: fp32 and no loader processes, which would compete with the step
    for the same cores). Sets torch's CPU threads for the run (:func:`~i2i.device.apply_cpu_threads`): a resumed
    run (``saved``: the settings its checkpoint recorded) keeps the count it was trained with, unless
    ``train.threads`` says otherwise, since the count changes the arithmetic."""
    t, cuda = cfg.train, device.type == "cuda"
    precision = t.precision if t.precision != "auto" else ("bf16" if cuda and torch.cuda.is_bf16_supported()
                                                           else "fp32")
    if precision == "fp16" and not cuda:
        raise I2IError("--precision fp16 needs a CUDA device; use bf16 on the CPU")
    workers = (min(4, os.cpu_count() or 1) if cuda else 0) if cfg.data.workers is None else cfg.data.workers
    return {
        "device": str(device), "processes": dist.world, "precision": precision,
        "channels_last": cuda if t.channels_last is None else t.channels_last,
        "compile": t.compile, "cudnn_benchmark": cuda if t.cudnn_benchmark is None else t.cudnn_benchmark,
        "fused_adam": cuda if t.fused_adam is None else t.fused_adam,
        "workers": workers, "pin_memory": cuda, "persistent_workers": workers > 0,
        "threads": apply_cpu_threads(t.threads or (saved or {}).get("threads")),
    }


def leave_stopping_to_the_trainer(_worker: int) -> None:
    """In a data-loading process: ignore SIGTERM. ``docker stop``, systemd and Slurm send it to the whole process
    group; a worker it killed would make the DataLoader raise in the middle of the step the trainer is finishing
    before it saves. The trainer stops the workers itself (and they exit when it is gone)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def to_device(batch: dict[str, Any], device: torch.device,
              memory_format: torch.memory_format = torch.contiguous_format) -> dict[str, Any]:
    """A batch's tensors on ``device`` (images in ``memory_format``), other entries as they are."""
    return {k: v.to(device, non_blocking=True, memory_format=memory_format) if torch.is_tensor(v) and v.dim() == 4
            else v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _shapes(sample: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sample.items() if torch.is_tensor(v)}


class Setup:
    """Building the method and the data loader of a :class:`~i2i.training.loop.Trainer`."""

    def _build_method(self: Trainer) -> None:
        """The method with its networks (the same initial weights on every rank, in the run's memory format)."""
        cfg, t = self.cfg, self.cfg.train
        self.method_entry = self.registry.get("method", cfg.method.name)
        self.components = Components(self.registry, cfg, self.dataset.channels, self.device, self.precision,
                                     self.settings["fused_adam"], seed=t.seed + 7919 * self.dist.rank,
                                     network_roles=network_roles_of(self.method_entry.factory))
        self.method: Method = self.method_entry.build(self.components, **cfg.method.params)
        for net in self.method.nets.values():
            self.dist.broadcast_module(net)
        self.memory_format = torch.channels_last if self.settings["channels_last"] else torch.contiguous_format
        for net in self.method.nets.values():
            net.to(memory_format=self.memory_format)

    def _build_loader(self: Trainer) -> None:
        """The epoch schedule, the loader (order and augmentation from (seed, epoch, index)) and the fixed sample
        batch of up to 4 training images spread over the dataset."""
        cfg, t, n_images = self.cfg, self.cfg.train, len(self.dataset)
        self.sampler = EpochSampler(n_images, t.seed, rank=self.dist.rank, world=self.dist.world)
        self.steps_per_epoch = math.ceil(math.ceil(n_images / self.dist.world) / cfg.data.batch_size)
        self.schedule_steps = (t.epochs + t.decay_epochs) * self.steps_per_epoch
        self.total_steps = min(self.schedule_steps, t.max_steps) if t.max_steps else self.schedule_steps
        if self.total_steps < 1:
            raise I2IError("train.epochs + train.decay_epochs is 0: nothing to train (set --epochs)")
        seeded = SeededDataset(self.dataset)
        self.loader = DataLoader(
            seeded, batch_size=cfg.data.batch_size, sampler=self.sampler, num_workers=self.settings["workers"],
            pin_memory=self.settings["pin_memory"], persistent_workers=self.settings["persistent_workers"],
            drop_last=False, worker_init_fn=leave_stopping_to_the_trainer,
            # each iterator draws a base seed; from its own generator, not the global one that dropout and losses
            # draw from (a resumed run starts an iterator mid-epoch). Samples are seeded by SeededDataset.
            generator=torch.Generator().manual_seed(t.seed),
        )
        n = min(4, n_images)
        fixed = [seeded[(i * n_images // n, sample_seed(t.seed, 0, i))] for i in range(n)]
        shapes = _shapes(fixed[0])
        self.sample_batch = to_device(default_collate([s for s in fixed if _shapes(s) == shapes]), self.device,
                                      self.memory_format)
