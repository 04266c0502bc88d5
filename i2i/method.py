"""The interface a training method implements, and the components the engine builds for it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .config import Config
from .precision import Precision
from .registry import Registry


@dataclass
class Components:
    """What a method may build: networks and losses exactly as the validated config names them."""

    registry: Registry
    config: Config
    channels: Mapping[str, int]  # domain -> channel count, from the dataset
    device: torch.device
    precision: Precision | None = None  # autocast / gradient scaling for the step (fp32 when None)
    fused_optimizers: bool = False
    seed: int | None = None  # for the method's own random choices (differs per distributed process)

    def __post_init__(self) -> None:
        if self.precision is None:
            self.precision = Precision("fp32", self.device)
        if self.seed is None:
            self.seed = self.config.train.seed

    def optimizer_options(self) -> dict[str, Any]:
        """Keyword arguments for torch optimizers: the fused kernels when enabled."""
        return {"fused": True} if self.fused_optimizers else {}

    def generator(self, in_channels: int, out_channels: int) -> nn.Module:
        g = self.config.generator
        return self.registry.build("generator", g.name, g.params, in_channels, out_channels).to(self.device)

    def discriminator(self, in_channels: int) -> nn.Module:
        d = self.config.discriminator
        return self.registry.build("discriminator", d.name, d.params, in_channels).to(self.device)

    def loss(self, role: str) -> Any:
        spec = self.config.losses[role]
        loss = self.registry.build("loss", spec.name, spec.params)
        return loss.to(self.device) if isinstance(loss, nn.Module) else loss


class Method(ABC):
    """A training method: owns its networks, optimizers' parameter groups and one training step.

    Class attributes: ``Params`` (dataclass of hyper-parameters, validated from ``method.params``), ``defaults``
    (a config fragment: the method's default generator, discriminator, losses, data and schedule), ``loss_roles``
    (role -> what the role is for) and ``exports`` (network name -> (source domain, target domain)).
    """

    Params: ClassVar[type]
    defaults: ClassVar[dict[str, Any]] = {}
    loss_roles: ClassVar[dict[str, str]] = {}
    exports: ClassVar[dict[str, tuple[str, str]]] = {}

    nets: nn.ModuleDict

    @classmethod
    def check_config(cls, config: Config) -> None:
        """Reject combinations the method cannot train (called during config validation)."""

    @abstractmethod
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers by name; the engine attaches the learning-rate schedule to each."""

    @abstractmethod
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimization step on ``batch``; returns the (detached) losses by name."""

    @abstractmethod
    def samples(self, batch: dict[str, torch.Tensor]) -> list[list[torch.Tensor]]:
        """Rows of NCHW image batches in [-1, 1] for the sample grid (e.g. real A | fake B | rec A)."""

    @torch.no_grad()
    def probe(self, batch: dict[str, torch.Tensor]) -> None:
        """Run every network once on ``batch`` (before training starts), so that sizes a network cannot take are
        reported up front. The first call gets a batch like training's, where the method may make its speed choices
        (:meth:`settings`); the engine may call it again with other sizes, even with the networks swapped for copies
        on the meta device, and such calls must leave those choices as they are. The default runs :meth:`samples`."""
        self.samples(batch)

    def settings(self) -> dict[str, Any]:
        """Speed choices the method made for this run (known after :meth:`probe`); the engine records them with its
        own settings in ``log.jsonl``."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """State beyond networks and optimizers needed to resume exactly (image pools, ...)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""
