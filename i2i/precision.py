"""Mixed precision for a training step: autocast for the forward passes, gradient scaling for fp16."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Literal

import torch

from .distributed import Distributed

PrecisionName = Literal["fp32", "bf16", "fp16"]
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """``autocast()`` around forward passes; ``backward(loss)`` and ``step(optimizer)`` scale for fp16 and, in
    distributed training, average the gradients over processes first; the engine calls ``update()`` once per
    iteration."""

    def __init__(self, name: PrecisionName, device: torch.device, distributed: Distributed | None = None) -> None:
        self.name, self.device, self.dtype = name, device, DTYPES[name]
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None
        self.distributed = distributed or Distributed()

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        self.distributed.average_gradients(p for group in optimizer.param_groups for p in group["params"])
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
