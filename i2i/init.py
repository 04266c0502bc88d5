"""Weight initialization as in the official implementation (normal(0, 0.02) by default)."""

from __future__ import annotations

from typing import Literal

from torch import nn

InitType = Literal["normal", "xavier", "kaiming", "orthogonal"]

#: init_type -> how a conv/linear weight is drawn (gain as in the official implementation)
SCHEMES = {
    "normal": lambda w, gain: nn.init.normal_(w, 0.0, gain),
    "xavier": lambda w, gain: nn.init.xavier_normal_(w, gain=gain),
    "kaiming": lambda w, gain: nn.init.kaiming_normal_(w, a=0, mode="fan_in"),
    "orthogonal": lambda w, gain: nn.init.orthogonal_(w, gain=gain),
}


def init_weights(net: nn.Module, init_type: InitType = "normal", gain: float = 0.02) -> nn.Module:
    """Conv/linear weights by ``init_type`` (biases 0); batch-norm weights normal(1, gain), biases 0.

    Sub-modules with a true ``i2i_keep_weights`` attribute (e.g. a pretrained encoder) are left as they are.
    """
    kept = {id(m) for k in net.modules() if getattr(k, "i2i_keep_weights", False) for m in k.modules()}
    for m in net.modules():
        if id(m) in kept:
            continue
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            SCHEMES[init_type](m.weight, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net
