"""CUT and FastCUT (Park, Efros, Zhang, Zhu, ECCV 2020): unpaired translation with one generator and a patchwise
contrastive loss between the features of input and output, instead of CycleGAN's inverse network.

G maps A→B; D judges domain B (LSGAN); the heads F project patches of G's encoder features. G minimises
λ_GAN·L_GAN(D(G(a))) + λ_NCE·NCE(a, G(a)) (averaged with NCE(b, G(b)) when the identity term is on); D minimises
½·(L(D(b), real) + L(D(G(a)), fake)). As in the official code, each step updates D first, then G and F together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from i2i import Components, Config, I2IError, Method, init_weights
from i2i.init import InitType
from i2i.method import frozen
from i2i_components.transforms import check_batch

from .patchnce import PatchProjector, patch_nce


@dataclass
class CUTParams:
    lambda_GAN: float = 1.0
    lambda_NCE: float = 1.0
    nce_idt: bool = True  # the identity term NCE(b, G(b))
    nce_layers: list[int] = field(default_factory=lambda: [0, 4, 8, 12, 16])  # indices of G's layers (encode())
    nce_T: float = 0.07  # temperature
    num_patches: int = 256  # per layer
    netF_nc: int = 256  # the heads' width
    nce_all_negatives: bool = False  # negatives from the whole batch (SinCUT), not the same image only
    flip_equivariance: bool = False  # flip the input half the time and the query features back (FastCUT)
    direction: Literal["AtoB", "BtoA"] = "AtoB"
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    init_type: InitType = "xavier"
    init_gain: float = 0.02


@dataclass
class FastCUTParams(CUTParams):
    lambda_NCE: float = 10.0
    nce_idt: bool = False
    flip_equivariance: bool = True


class CUT(Method):
    """Contrastive unpaired translation; the paper's step and the official code's defaults."""

    Params = CUTParams
    defaults = {
        "generator": {"name": "cut_resnet_9blocks", "params": {"ngf": 64, "norm": "instance", "dropout": False}},
        "discriminator": {"name": "basic", "params": {"ndf": 64, "norm": "instance", "antialias": True}},
        "losses": {"gan": {"name": "lsgan"}},
        "data": {"name": "unaligned", "batch_size": 1},
        "train": {"epochs": 200, "decay_epochs": 200},
        "validation": {"source": "testA"},  # the unaligned layout's held-out images of domain A
    }
    loss_roles = {"gan": "adversarial loss"}
    exports = {"G": ("A", "B")}

    @classmethod
    def check_config(cls, config: Config) -> None:
        p = config.method.params
        for name in ("lambda_GAN", "lambda_NCE", "lr"):
            if p[name] < 0:
                raise I2IError(f"method.params.{name} must be >= 0, got {p[name]}")
        if p["nce_T"] <= 0 or p["num_patches"] < 1 or p["netF_nc"] < 1:
            raise I2IError("method.params.nce_T must be > 0, num_patches and netF_nc >= 1")
        if not p["nce_layers"] or min(p["nce_layers"]) < 0:
            raise I2IError(f"method.params.nce_layers must list layer indices >= 0, got {p['nce_layers']}")
        for name in ("beta1", "beta2"):
            if not 0 <= p[name] < 1:
                raise I2IError(f"method.params.{name} must be in [0, 1), got {p[name]}")
        check_batch(config.data.batch_size, config.data.params.get("preprocess", "crop"))

    def __init__(self, params: CUTParams, build: Components) -> None:
        self.p, self.amp, self.build = params, build.precision, build
        self.src, self.dst = ("A", "B") if params.direction == "AtoB" else ("B", "A")
        self.exports = {"G": (self.src, self.dst)}
        c_in, c_out = build.channels[self.src], build.channels[self.dst]
        if params.nce_idt and c_in != c_out:
            raise I2IError(f"the identity NCE term runs G on domain {self.dst}'s images, which needs domains with "
                           f"equal channels ({c_in} and {c_out}); set method.nce_idt=false")
        G = build.generator(c_in, c_out)
        if not callable(getattr(G, "encode", None)):
            raise I2IError(f"CUT compares the features of G's layers, and generator '{build.config.generator.name}' "
                           f"does not expose them (no encode(x, layers)); choose one that does, e.g. "
                           f"cut_resnet_9blocks, resnet_9blocks or timm_unet")
        self.nets = nn.ModuleDict({"G": G, "D": build.discriminator(c_out),
                                   "F": PatchProjector(params.netF_nc, params.init_type, params.init_gain)})
        for name in ("G", "D"):
            init_weights(self.nets[name], params.init_type, params.init_gain)
        self.gan = build.loss("gan")
        if not all(callable(getattr(self.gan, m, None)) for m in ("generator", "discriminator")):
            raise I2IError(f"losses.gan: '{build.config.losses['gan'].name}' is not an adversarial loss; choose one "
                           f"such as lsgan (see `i2i list loss`)")
        # patch locations and flips: the method's own random stream, saved with the run for an exact resume
        self.rng = torch.Generator().manual_seed(build.seed)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        adam = {"lr": self.p.lr, "betas": (self.p.beta1, self.p.beta2), **self.build.optimizer_options()}
        self.opt_G = torch.optim.Adam(self.nets.G.parameters(), **adam)
        self.opt_D = torch.optim.Adam(self.nets.D.parameters(), **adam)
        self.opt_F = torch.optim.Adam(self.nets.F.parameters(), **adam)  # the heads exist: probe() made them
        return {"G": self.opt_G, "D": self.opt_D, "F": self.opt_F}

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        D, p, amp = self.nets.D, self.p, self.amp
        a, b = batch[self.src], batch[self.dst]
        flipped = p.flip_equivariance and bool(torch.rand(1, generator=self.rng) < 0.5)
        with amp.autocast():
            fake_b, idt_b = self.translate(a, b if p.nce_idt else None, flipped)
            # D: ½·(L(D(b), real) + L(D(G(a)), fake))
            loss_D = 0.5 * self.gan.discriminator(D, b, fake_b.detach())
        self.opt_D.zero_grad(set_to_none=True)
        amp.backward(loss_D)
        amp.step(self.opt_D)

        # G and F: λ_GAN·L(D(G(a)), real) + NCE(a, G(a)) [averaged with NCE(b, G(b))], D frozen
        with amp.autocast(), frozen(D):
            loss = {"G_GAN": p.lambda_GAN * self.gan.generator(D(fake_b))}
            loss["NCE"] = self.nce(a, fake_b, flipped)
            nce = loss["NCE"]
            if p.nce_idt:
                loss["NCE_Y"] = self.nce(b, idt_b, flipped)
                nce = 0.5 * (loss["NCE"] + loss["NCE_Y"])
        self.opt_G.zero_grad(set_to_none=True)
        self.opt_F.zero_grad(set_to_none=True)
        amp.backward(loss["G_GAN"] + nce)
        amp.step(self.opt_G)
        amp.step(self.opt_F)
        loss["D"] = loss_D
        return {k: v.detach().float() for k, v in loss.items()}

    def translate(self, a: torch.Tensor, b: torch.Tensor | None, flipped: bool) -> tuple[torch.Tensor, Any]:
        """``(G(a), G(b))`` (``b`` None: ``(G(a), None)``), in one batch as the official code runs them where the two
        have one size (``data.preprocess=none`` gives domains of their own sizes), of the flipped images when
        ``flipped``."""
        G = self.nets.G
        if flipped:
            a, b = a.flip(3), None if b is None else b.flip(3)
        if b is None:
            return G(a), None
        if a.shape != b.shape:
            return G(a), G(b)
        fake = G(torch.cat([a, b]))
        return fake[: a.shape[0]], fake[a.shape[0] :]

    def nce(self, src: torch.Tensor, out: torch.Tensor, flipped: bool = False,
            generator: torch.Generator | None = None, patch_ids: list[torch.Tensor] | None = None) -> torch.Tensor:
        """λ_NCE × PatchNCE between G's features of ``out`` (queries) and of ``src`` (keys) at the same patch
        locations (``patch_ids``, else drawn from ``generator`` or the run's stream), averaged over patches and
        layers; ``flipped``: ``out`` came from the flipped input, so its features are flipped back first."""
        p, G, heads = self.p, self.nets.G, self.nets.F
        queries = G.encode(out, p.nce_layers)
        if flipped:
            queries = [q.flip(3) for q in queries]
        keys, ids = heads(G.encode(src, p.nce_layers), p.num_patches, patch_ids, generator or self.rng)
        queries, _ = heads(queries, p.num_patches, ids)
        return p.lambda_NCE * self.layer_losses(queries, keys, src.shape[0]).mean()

    def layer_losses(self, queries: list[torch.Tensor], keys: list[torch.Tensor], batch: int) -> torch.Tensor:
        """Each layer's PatchNCE, averaged over its patches."""
        p = self.p
        return torch.stack([patch_nce(q, k, batch, p.nce_T, p.nce_all_negatives).mean()
                            for q, k in zip(queries, keys, strict=True)])

    @torch.no_grad()
    def probe(self, batch: dict[str, torch.Tensor]) -> None:
        """Runs G, D and the NCE terms once, which creates the heads from the features' shapes (patch locations
        from a stream of its own: the run's is untouched)."""
        a = batch[self.src]
        with self.amp.autocast():
            fake = self.nets.G(a)
            self.nets.D(fake)
            try:
                self.nce(a, fake, generator=torch.Generator().manual_seed(0))
            except I2IError as exc:  # a layer index the generator does not have
                raise I2IError(f"{exc}; set method.nce_layers to indices of its layers (e.g. "
                               f"method.nce_layers=[0,2,4])") from None

    @torch.no_grad()
    def samples(self, batch: dict[str, torch.Tensor]) -> list[list[torch.Tensor]]:
        a, b = batch[self.src], batch[self.dst]
        row = [a, self.nets.G(a), b]
        return [[*row, self.nets.G(b)] if self.p.nce_idt else row]

    def sample_names(self) -> list[list[str]]:
        row = [f"real {self.src}", f"fake {self.dst}", f"real {self.dst}"]
        return [[*row, f"idt {self.dst}"] if self.p.nce_idt else row]  # idt: G of a target-domain image

    def extra_state(self) -> dict[str, Any]:
        return {"rng": self.rng.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.rng.set_state(state["rng"])


class FastCUT(CUT):
    """FastCUT: CUT without the identity term, λ_NCE 10 and flip equivariance; 150 + 50 epochs."""

    Params = FastCUTParams
    defaults = {**CUT.defaults, "train": {"epochs": 150, "decay_epochs": 50}}
