"""The learning-rate schedule of the CycleGAN paper: constant for ``epochs``, then a linear decay towards zero
(the official one: the last of ``decay_epochs`` trains at 1/(decay_epochs + 1) of the rate)."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


class LinearDecay:
    """Multiplier for epoch e (0-based): 1 for e < epochs, then 1 − (e + 1 − epochs) / (decay_epochs + 1).

    A plain callable object, so LambdaLR saves its attributes in the scheduler state and resume is exact.
    """

    def __init__(self, epochs: int, decay_epochs: int) -> None:
        self.epochs, self.decay_epochs = epochs, decay_epochs

    def __call__(self, epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - self.epochs) / float(self.decay_epochs + 1)


def linear_decay(optimizer: torch.optim.Optimizer, epochs: int, decay_epochs: int) -> LambdaLR:
    """A scheduler stepped once per epoch."""
    return LambdaLR(optimizer, LinearDecay(epochs, decay_epochs))
