"""The interface a training method implements, and the components the engine builds for it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from .config import Config
from .errors import I2IError
from .precision import Precision
from .registry import Registry


@dataclass
class Built:
    """What built one network: its role, the component (kind, name, params) and the arguments it was given."""

    role: str
    kind: str
    name: str
    params: dict[str, Any]
    args: tuple[Any, ...]


@dataclass
class Components:
    """What a method may build: networks and losses exactly as the validated config names them. Every network
    built here is remembered (:meth:`built`), so that exports record the component each one was made from."""

    registry: Registry
    config: Config
    channels: Mapping[str, int]  # domain -> channel count, from the dataset
    device: torch.device
    precision: Precision | None = None  # autocast / gradient scaling for the step (fp32 when None)
    fused_optimizers: bool = False
    seed: int | None = None  # for the method's own random choices (differs per distributed process)
    #: role -> component kind (the method's ``network_roles``); a role not listed is built from the kind of its name
    network_roles: Mapping[str, str] = field(default_factory=dict)
    made: dict[int, Built] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision is None:
            self.precision = Precision("fp32", self.device)
        if self.seed is None:
            self.seed = self.config.train.seed

    def optimizer_options(self) -> dict[str, Any]:
        """Keyword arguments for torch optimizers: the fused kernels when enabled."""
        return {"fused": True} if self.fused_optimizers else {}

    def network(self, role: str, *args: Any) -> nn.Module:
        """The network the config names for ``role`` (one of the method's ``network_roles``), built with ``args``
        (a generator: ``in_channels, out_channels``; a discriminator: ``in_channels``) on the run's device."""
        comp = self.config.networks.get(role)
        if comp is None:
            raise I2IError(f"method '{self.config.method.name}' builds a network for role '{role}', which is not one "
                           f"of its network_roles ({', '.join(self.config.networks) or 'none'})")
        kind = self.network_roles.get(role, role)
        net = self.registry.build(kind, comp.name, comp.params, *args).to(self.device)
        self.made[id(net)] = Built(role, kind, comp.name, dict(comp.params), args)
        return net

    def built(self, net: nn.Module) -> Built | None:
        """What built ``net`` (None for a network the method made itself)."""
        return self.made.get(id(net))

    def generator(self, in_channels: int, out_channels: int) -> nn.Module:
        """Short for ``network("generator", in_channels, out_channels)``."""
        return self.network("generator", in_channels, out_channels)

    def discriminator(self, in_channels: int) -> nn.Module:
        """Short for ``network("discriminator", in_channels)``."""
        return self.network("discriminator", in_channels)

    def loss(self, role: str) -> Any:
        spec = self.config.losses[role]
        loss = self.registry.build("loss", spec.name, spec.params)
        return loss.to(self.device) if isinstance(loss, nn.Module) else loss


@contextmanager
def frozen(*nets: nn.Module) -> Iterator[None]:
    """No parameter gradients for ``nets`` inside the block (a discriminator during its generator's step)."""
    for n in nets:
        n.requires_grad_(False)
    try:
        yield
    finally:
        for n in nets:
            n.requires_grad_(True)


Optimizers = dict[str, torch.optim.Optimizer]
Schedules = dict[str, torch.optim.lr_scheduler.LRScheduler]


class Method(ABC):
    """A training method: owns its networks, optimizers' parameter groups and one training step.

    Class attributes: ``Params`` (dataclass of hyper-parameters, validated from ``method.params``), ``defaults``
    (a config fragment: the method's default networks, losses, data and schedule), ``network_roles`` (role -> the
    component kind built for it, configured as ``networks.<role>``), ``loss_roles`` (role -> what the role is for)
    and ``exports`` (network name -> (source domain, target domain); an instance may set its own, e.g. for a
    direction chosen by a parameter). Each export is written as ``<name>.pt`` in the run folder.
    """

    Params: ClassVar[type]
    defaults: ClassVar[dict[str, Any]] = {}
    network_roles: ClassVar[dict[str, str]] = {"generator": "generator", "discriminator": "discriminator"}
    loss_roles: ClassVar[dict[str, str]] = {}
    exports: ClassVar[dict[str, tuple[str, str]]] = {}

    nets: nn.ModuleDict

    @classmethod
    def check_config(cls, config: Config) -> None:
        """Reject combinations the method cannot train (called during config validation)."""

    @abstractmethod
    def configure_optimizers(self) -> Optimizers | tuple[Optimizers, Schedules]:
        """Optimizers by name, optionally with learning-rate schedules by the same names; an optimizer without one
        gets the engine's (constant for ``train.epochs``, then linear decay towards zero over
        ``train.decay_epochs``; stepped once per epoch). Called after the first :meth:`probe`, so that modules
        the method creates on first use exist before their optimizer."""

    @abstractmethod
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimization step on ``batch``; returns the (detached) losses by name."""

    @abstractmethod
    def samples(self, batch: dict[str, torch.Tensor]) -> list[list[torch.Tensor]]:
        """Rows of NCHW image batches in [-1, 1] for the sample grid (e.g. real A | fake B | rec A)."""

    def sample_names(self) -> list[list[str]] | None:
        """The name of each image of each row :meth:`samples` returns (e.g. ``[["real A", "fake B", "rec A"],
        ["real B", "fake A", "rec B"]]``), drawn above the sample grid's columns. Optional: None (the default), or
        names that do not match the rows, labels the columns by number."""
        return None

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
