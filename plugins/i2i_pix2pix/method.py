"""pix2pix (Isola et al., CVPR 2017): a conditional GAN for paired translation, G(a) ≈ b.

G is a U-Net; D is a PatchGAN judging (input, output) pairs, i.e. concat(a, b) or concat(a, G(a)). G minimises
L_cGAN(G, D) + λ·‖b − G(a)‖₁; D minimises ½·(L(D(a, b), real) + L(D(a, G(a)), fake)). As in the official code,
each step updates D first and then G (G's adversarial term sees the updated D), without an image pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from i2i import Components, Config, I2IError, Method, init_weights
from i2i.init import InitType
from i2i.method import frozen
from i2i_components.transforms import check_batch


@dataclass
class Pix2PixParams:
    lambda_L1: float = 100.0  # weight of the L1 term ‖b − G(a)‖₁
    direction: Literal["AtoB", "BtoA"] = "AtoB"  # which domain is the input
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    init_type: InitType = "normal"
    init_gain: float = 0.02


class Pix2Pix(Method):
    """Paired translation with a conditional PatchGAN; the paper's step, defaults and schedule."""

    Params = Pix2PixParams
    defaults = {
        "generator": {"name": "unet_256", "params": {"ngf": 64, "norm": "batch", "dropout": True}},
        "discriminator": {"name": "basic", "params": {"ndf": 64, "norm": "batch"}},
        "losses": {"gan": {"name": "vanilla"}, "l1": {"name": "l1"}},
        "data": {"name": "aligned", "batch_size": 1},
        "train": {"epochs": 100, "decay_epochs": 100},
    }
    loss_roles = {"gan": "adversarial loss of the conditional discriminator", "l1": "reconstruction loss ‖b − G(a)‖"}
    exports = {"G": ("A", "B")}

    @classmethod
    def check_config(cls, config: Config) -> None:
        p = config.method.params
        for name in ("lambda_L1", "lr"):
            if p[name] < 0:
                raise I2IError(f"method.params.{name} must be >= 0, got {p[name]}")
        for name in ("beta1", "beta2"):
            if not 0 <= p[name] < 1:
                raise I2IError(f"method.params.{name} must be in [0, 1), got {p[name]}")
        check_batch(config.data.batch_size, config.data.params.get("preprocess", "crop"))
        if config.data.name in ("unaligned", "single"):
            raise I2IError(f"pix2pix learns from pairs of images, and dataset '{config.data.name}' gives none; use "
                           f"data=aligned (DIR/train/*.jpg with A|B side by side) or data=paired (DIR/trainA + "
                           f"DIR/trainB matched by file name)")

    def __init__(self, params: Pix2PixParams, build: Components) -> None:
        self.p, self.amp, self.build = params, build.precision, build
        self.src, self.dst = ("A", "B") if params.direction == "AtoB" else ("B", "A")
        self.exports = {"G": (self.src, self.dst)}
        c_in, c_out = build.channels[self.src], build.channels[self.dst]
        self.nets = nn.ModuleDict({"G": build.generator(c_in, c_out), "D": build.discriminator(c_in + c_out)})
        for net in self.nets.values():
            init_weights(net, params.init_type, params.init_gain)
        self.gan, self.l1 = build.loss("gan"), build.loss("l1")
        if not all(callable(getattr(self.gan, m, None)) for m in ("generator", "discriminator")):
            raise I2IError(f"losses.gan: '{build.config.losses['gan'].name}' is not an adversarial loss (it has no "
                           f"generator() and discriminator() terms); choose one such as vanilla (see `i2i list loss`)")
        if not callable(self.l1) or callable(getattr(self.l1, "discriminator", None)):
            raise I2IError(f"losses.l1: '{build.config.losses['l1'].name}' is not a loss between two images; choose "
                           f"one such as l1 (see `i2i list loss`)")

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        adam = {"lr": self.p.lr, "betas": (self.p.beta1, self.p.beta2), **self.build.optimizer_options()}
        self.opt_G = torch.optim.Adam(self.nets.G.parameters(), **adam)
        self.opt_D = torch.optim.Adam(self.nets.D.parameters(), **adam)
        return {"G": self.opt_G, "D": self.opt_D}

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        G, D, amp = self.nets.G, self.nets.D, self.amp
        a, b = batch[self.src], batch[self.dst]
        with amp.autocast():
            fake = G(a)
            # D: ½·(L(D(a, b), real) + L(D(a, G(a)), fake)), on the fake before this step's update of G
            loss_D = 0.5 * self.gan.discriminator(D, torch.cat([a, b], 1), torch.cat([a, fake.detach()], 1))
        self.opt_D.zero_grad(set_to_none=True)
        amp.backward(loss_D)
        amp.step(self.opt_D)

        # G: L(D(a, G(a)), real) + λ·‖b − G(a)‖₁, D frozen
        with amp.autocast(), frozen(D):
            loss = {"G_GAN": self.gan.generator(D(torch.cat([a, fake], 1))),
                    "G_L1": self.p.lambda_L1 * self.l1(fake, b)}
        self.opt_G.zero_grad(set_to_none=True)
        amp.backward(loss["G_GAN"] + loss["G_L1"])
        amp.step(self.opt_G)
        loss["D"] = loss_D
        return {k: v.detach().float() for k, v in loss.items()}

    @torch.no_grad()
    def samples(self, batch: dict[str, torch.Tensor]) -> list[list[torch.Tensor]]:
        a, b = batch[self.src], batch[self.dst]
        return [[a, self.nets.G(a), b]]

    def sample_names(self) -> list[list[str]]:
        return [[f"real {self.src}", f"fake {self.dst}", f"real {self.dst}"]]  # input | output | truth

    @torch.no_grad()
    def probe(self, batch: dict[str, torch.Tensor]) -> None:
        a = batch[self.src]
        with self.amp.autocast():
            self.nets.D(torch.cat([a, self.nets.G(a)], 1))

    def settings(self) -> dict[str, Any]:
        return {"direction": self.p.direction}
