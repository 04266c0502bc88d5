"""CycleGAN (Zhu et al., ICCV 2017): two generators, two discriminators, adversarial + cycle + identity losses.

Names: ``G_AB`` maps A→B (the paper's G, the official ``netG_A``), ``G_BA`` maps B→A (the paper's F, ``netG_B``);
``D_B`` judges domain-B images (the paper's D_Y, the official ``netD_A``) and ``D_A`` judges domain A (D_X, ``netD_B``).
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from i2i import Components, Config, I2IError, Method, init_weights
from i2i.init import InitType
from i2i.method import frozen
from i2i_components.transforms import check_batch
from i2i_components.winograd_conv import enable_winograd, winograd_census

from .batching import BatchedChoice, Batching
from .pool import ImagePool


@dataclass
class CycleGANParams:
    lambda_A: float = 10.0  # weight of the A→B→A cycle loss
    lambda_B: float = 10.0  # weight of the B→A→B cycle loss
    lambda_identity: float = 0.5  # identity loss weight, relative to lambda_A / lambda_B; 0 disables it
    pool_size: int = 50
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    init_type: InitType = "normal"
    init_gain: float = 0.02
    batched: BatchedChoice = "auto"  # a network's two inputs of a step as one batch (exact without batch norm)
    winograd: bool = True  # wide 3×3 convolutions by Winograd's F(4×4, 3×3) on the CPU where it pays (winograd_conv.py)


class CycleGAN(Method):
    """Unpaired translation with cycle consistency; the paper's training step, its defaults and schedule."""

    Params = CycleGANParams
    defaults = {
        "generator": {"name": "resnet_9blocks"},
        "discriminator": {"name": "basic"},
        "losses": {"gan": {"name": "lsgan"}, "cycle": {"name": "l1"}, "identity": {"name": "l1"}},
        "data": {"name": "unaligned", "batch_size": 1},
        "train": {"epochs": 100, "decay_epochs": 100},
        "validation": {"source": "testA"},  # the unaligned layout's held-out images of domain A
    }
    loss_roles = {"gan": "adversarial loss", "cycle": "cycle-consistency loss", "identity": "identity loss"}
    exports = {"G_AB": ("A", "B"), "G_BA": ("B", "A")}

    @classmethod
    def check_config(cls, config: Config) -> None:
        p, data = config.method.params, config.data.params
        if p["lambda_identity"] > 0 and data.get("channels_a", 3) != data.get("channels_b", 3):
            raise I2IError(
                "the identity loss needs domains with equal channels; set method.lambda_identity=0 "
                "or make data.channels_a equal data.channels_b"
            )
        for name in ("lambda_A", "lambda_B", "lambda_identity", "lr"):
            if p[name] < 0:
                raise I2IError(f"method.params.{name} must be >= 0, got {p[name]}")
        if p["pool_size"] < 0:
            raise I2IError(f"method.params.pool_size must be >= 0, got {p['pool_size']}")
        for name in ("beta1", "beta2"):
            if not 0 <= p[name] < 1:
                raise I2IError(f"method.params.{name} must be in [0, 1), got {p[name]}")
        check_batch(config.data.batch_size, data.get("preprocess", "crop"))

    def __init__(self, params: CycleGANParams, build: Components) -> None:
        self.p = params
        ca, cb = build.channels["A"], build.channels["B"]
        if params.lambda_identity > 0 and ca != cb:  # check_config sees the built-in datasets' parameters only
            raise I2IError(f"the identity loss needs domains with equal channels, and dataset "
                           f"'{build.config.data.name}' gives A {ca} and B {cb}; set method.lambda_identity=0")
        self.nets = nn.ModuleDict({
            "G_AB": build.generator(ca, cb), "G_BA": build.generator(cb, ca),
            "D_A": build.discriminator(ca), "D_B": build.discriminator(cb),
        })
        for net in self.nets.values():
            init_weights(net, params.init_type, params.init_gain)
            enable_winograd(net, params.winograd)
        self.gan, self.cycle, self.identity = build.loss("gan"), build.loss("cycle"), build.loss("identity")
        self._check_losses(build.config)
        seed = build.seed
        self.pool_A, self.pool_B = ImagePool(params.pool_size, seed), ImagePool(params.pool_size, seed + 1)
        self.device, self.amp, self.build = build.device, build.precision, build
        # Two inputs through one network in one call: exact without batch statistics, faster where batching.py says
        self.batched_G = Batching(params.batched, self.nets.G_AB, ca, build.device)
        self.batched_D = Batching(params.batched, self.nets.D_B, cb, build.device)
        self.winograd_layers: int | None = None

    def _check_losses(self, config: Config) -> None:
        """Each loss fits its role: the adversarial one scores for both players, the others compare images."""
        def adversarial(loss: Any) -> bool:
            return all(callable(getattr(loss, m, None)) for m in ("generator", "discriminator"))

        def takes_batched(fn: Any) -> bool:
            try:
                params = inspect.signature(fn).parameters.values()
            except (TypeError, ValueError):  # no signature to read: trust it
                return True
            # CycleGAN passes batched as the fourth positional argument
            positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            return any(p.kind is p.VAR_POSITIONAL for p in params) or sum(p.kind in positional for p in params) >= 4

        for role, loss in (("gan", self.gan), ("cycle", self.cycle), ("identity", self.identity)):
            name = config.losses[role].name
            if role == "gan" and not adversarial(loss):
                raise I2IError(f"losses.gan: '{name}' is not an adversarial loss (it has no generator() and "
                               f"discriminator() terms); choose one such as lsgan (see `i2i list loss`)")
            if role == "gan" and not takes_batched(loss.discriminator):
                raise I2IError(f"losses.gan: '{name}'.discriminator(D, real, fake) must also take batched=False "
                               f"(CycleGAN passes it; see docs/plugins.md)")
            if role != "gan" and (adversarial(loss) or not callable(loss)):
                raise I2IError(f"losses.{role}: '{name}' is not a loss between two images; choose one such as l1 "
                               f"(see `i2i list loss`)")

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        n, p = self.nets, self.p
        adam = {"lr": p.lr, "betas": (p.beta1, p.beta2), **self.build.optimizer_options()}
        self.opt_G = torch.optim.Adam(itertools.chain(n.G_AB.parameters(), n.G_BA.parameters()), **adam)
        self.opt_D = torch.optim.Adam(itertools.chain(n.D_A.parameters(), n.D_B.parameters()), **adam)
        return {"G": self.opt_G, "D": self.opt_D}

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        G, F, D_A, D_B = self.nets.G_AB, self.nets.G_BA, self.nets.D_A, self.nets.D_B
        a, b, p, amp = batch["A"], batch["B"], self.p, self.amp
        idt = p.lambda_identity > 0

        # Generators: L_GAN(G, D_B) + L_GAN(F, D_A) + λ_A·‖F(G(a)) − a‖₁ + λ_B·‖G(F(b)) − b‖₁ + identity terms
        with amp.autocast(), frozen(D_A, D_B):
            fake_b, idt_b = self.pair(G, a, b if idt else None)  # idt_b = G(b), compared with b
            fake_a, idt_a = self.pair(F, b, a if idt else None)  # idt_a = F(a), compared with a
            rec_a, rec_b = F(fake_b), G(fake_a)
            loss = {"G_AB": self.gan.generator(D_B(fake_b)), "G_BA": self.gan.generator(D_A(fake_a)),
                    "cycle_A": p.lambda_A * self.cycle(rec_a, a), "cycle_B": p.lambda_B * self.cycle(rec_b, b)}
            if idt:
                loss["idt_A"] = p.lambda_B * p.lambda_identity * self.identity(idt_b, b)
                loss["idt_B"] = p.lambda_A * p.lambda_identity * self.identity(idt_a, a)
        self.opt_G.zero_grad(set_to_none=True)
        amp.backward(sum(loss.values()))
        amp.step(self.opt_G)

        # Discriminators: ½·(L(D(real), 1) + L(D(fake from the history pool), 0)) for each domain
        with amp.autocast():
            loss["D_B"] = 0.5 * self.discriminate(D_B, b, self.pool_B.query(fake_b.detach()))
            loss["D_A"] = 0.5 * self.discriminate(D_A, a, self.pool_A.query(fake_a.detach()))
        self.opt_D.zero_grad(set_to_none=True)
        amp.backward(loss["D_A"] + loss["D_B"])
        amp.step(self.opt_D)
        return {k: v.detach().float() for k, v in loss.items()}

    def discriminate(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The adversarial loss's discriminator terms, real and fake in one batch where ``batched_D`` says so and
        their shapes match (with ``data.preprocess=none`` or ``scale_width``, A, B and the pooled fakes differ)."""
        return self.gan.discriminator(D, real, fake, self.batched_D(real) and real.shape == fake.shape)

    def pair(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor | None):
        """``(net(x), net(y))``, in one batched call where that is exact and faster (batching.py) and the two have
        one shape (images of differing sizes, as ``data.preprocess=none`` gives, run apart); ``y=None`` gives
        ``(net(x), None)``."""
        if y is None:
            return net(x), None
        if x.shape != y.shape or not self.batched_G(x):
            return net(x), net(y)
        out = net(torch.cat([x, y]))
        return out[: x.shape[0]], out[x.shape[0] :]

    @torch.no_grad()
    def probe(self, batch: dict[str, torch.Tensor]) -> None:
        with self.amp.autocast(), winograd_census(self.nets.G_AB) as taken:
            (a, fake_b, _), (b, fake_a, _) = self.samples(batch)
        if self.winograd_layers is None:  # the first probe is the training batch's; later ones try other sizes
            self.winograd_layers = len(taken)
        self.nets.D_A(a), self.nets.D_B(b)
        for choice in (self.batched_G, self.batched_D):
            choice.decide(self.build.config.data.batch_size, *a.shape[-2:])

    def settings(self) -> dict[str, Any]:
        return {"batched_G": self.batched_G.value, "batched_D": self.batched_D.value,
                "winograd_layers": self.winograd_layers}

    @torch.no_grad()
    def samples(self, batch: dict[str, torch.Tensor]) -> list[list[torch.Tensor]]:
        G, F = self.nets.G_AB, self.nets.G_BA
        a, b = batch["A"], batch["B"]
        fake_b, fake_a = G(a), F(b)
        return [[a, fake_b, F(fake_b)], [b, fake_a, G(fake_a)]]

    def sample_names(self) -> list[list[str]]:
        return [["real A", "fake B", "rec A"], ["real B", "fake A", "rec B"]]

    def extra_state(self) -> dict[str, Any]:
        return {"pool_A": self.pool_A.state_dict(), "pool_B": self.pool_B.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.pool_A.load_state_dict(state["pool_A"], self.device)
        self.pool_B.load_state_dict(state["pool_B"], self.device)
