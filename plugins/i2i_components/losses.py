"""Adversarial losses (LSGAN, vanilla, hinge, WGAN-GP) and pixel losses (L1, MSE)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class AdversarialLoss:
    """``generator(D(fake))`` is the generator's loss; ``discriminator(D, real, fake)`` is real + fake terms."""

    def __init__(self, criterion: Callable[[torch.Tensor, bool], torch.Tensor]) -> None:
        self.criterion = criterion

    def generator(self, pred_fake: torch.Tensor) -> torch.Tensor:
        return self.criterion(pred_fake, True)

    def discriminator(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor, batched: bool = False
                      ) -> torch.Tensor:
        """Real and fake terms; ``batched`` runs D once on both (exact when D has no batch statistics) where their
        shapes match."""
        if batched and real.shape == fake.shape:
            pred = D(torch.cat([real, fake]))
            pred_real, pred_fake = pred[: real.shape[0]], pred[real.shape[0] :]
        else:
            pred_real, pred_fake = D(real), D(fake)
        return self.criterion(pred_real, True) + self.criterion(pred_fake, False)


def _target(pred: torch.Tensor, real: bool) -> torch.Tensor:
    return torch.full_like(pred, 1.0 if real else 0.0)


def lsgan() -> AdversarialLoss:
    """Least-squares GAN (Mao et al.): MSE to 1 for real, 0 for fake. CycleGAN's default."""
    return AdversarialLoss(lambda pred, real: F.mse_loss(pred, _target(pred, real)))


def vanilla() -> AdversarialLoss:
    """The original GAN's cross-entropy on logits."""
    return AdversarialLoss(lambda pred, real: F.binary_cross_entropy_with_logits(pred, _target(pred, real)))


class HingeLoss(AdversarialLoss):
    """Hinge loss: D minimizes relu(1 − D(real)) + relu(1 + D(fake)); G minimizes −D(fake)."""

    def __init__(self) -> None:
        super().__init__(lambda pred, real: F.relu(1 - pred).mean() if real else F.relu(1 + pred).mean())

    def generator(self, pred_fake: torch.Tensor) -> torch.Tensor:
        return -pred_fake.mean()


class WGANGPLoss(AdversarialLoss):
    """Wasserstein loss with gradient penalty (Gulrajani et al.) on random real/fake interpolates."""

    def __init__(self, gp_weight: float = 10.0) -> None:
        super().__init__(lambda pred, real: -pred.mean() if real else pred.mean())
        self.gp_weight = gp_weight

    def discriminator(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor, batched: bool = False
                      ) -> torch.Tensor:
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
        # images of differing sizes (data.preprocess=none, a pooled fake of another size): the penalty's
        # interpolates are taken at the real image's size
        other = fake if fake.shape == real.shape else F.interpolate(fake, size=real.shape[-2:], mode="bilinear",
                                                                   align_corners=False)
        mix = (alpha * real + (1 - alpha) * other).requires_grad_(True)
        (grad,) = torch.autograd.grad(D(mix).sum(), mix, create_graph=True)
        penalty = ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
        return super().discriminator(D, real, fake, batched) + self.gp_weight * penalty


def l1() -> nn.Module:
    """Mean absolute error: the cycle-consistency and identity loss of the paper."""
    return nn.L1Loss()


def mse() -> nn.Module:
    """Mean squared error."""
    return nn.MSELoss()
