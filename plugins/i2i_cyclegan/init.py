"""Weight initialization as in the official implementation (normal(0, 0.02) by default)."""

from __future__ import annotations

from typing import Literal

from torch import nn

InitType = Literal["normal", "xavier", "kaiming", "orthogonal"]


def init_weights(net: nn.Module, init_type: InitType = "normal", gain: float = 0.02) -> nn.Module:
    """Conv/linear weights by ``init_type`` (biases 0); batch-norm weights normal(1, gain), biases 0.

    Sub-modules with a true ``i2i_keep_weights`` attribute (e.g. a pretrained encoder) are left as they are.
    """
    kept = {id(m) for k in net.modules() if getattr(k, "i2i_keep_weights", False) for m in k.modules()}
    for m in net.modules():
        if id(m) in kept:
            continue
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if init_type == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(m.weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net
