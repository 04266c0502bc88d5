"""CUT's patchwise contrastive loss (PatchNCE) and the projection heads it compares features through.

The heads (the official ``PatchSampleF``) sample the same patch locations of the query's and the key's feature maps,
project each patch by a per-layer 2-layer MLP and L2-normalise it. The MLPs are created on the first call, from the
feature shapes, so the heads exist only after the generator has run once (the engine makes optimizers after the
first probe for this).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from i2i import init_weights
from i2i.init import InitType


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` divided by their L2 norm (+1e-7, as the official ``Normalize``)."""
    return x.div(x.pow(2).sum(1, keepdim=True).pow(0.5) + 1e-7)


class PatchProjector(nn.Module):
    """Projection heads: ``forward(feats, num_patches, patch_ids=None) -> (projected, patch_ids)``.

    Layer ``i``'s head is ``mlp_i`` (Linear(C_i, nc), ReLU, Linear(nc, nc)), named as the official heads so their
    weights load unchanged; ``patch_ids`` (one index tensor per layer) are drawn from ``generator`` when not given,
    and are the same for every image of the batch."""

    def __init__(self, nc: int = 256, init_type: InitType = "xavier", init_gain: float = 0.02) -> None:
        super().__init__()
        self.nc, self.init_type, self.init_gain = nc, init_type, init_gain
        self.layers = 0

    def create(self, feats: Sequence[torch.Tensor]) -> None:
        """The MLPs for these feature maps' channels, initialised as the official heads (xavier 0.02)."""
        for i, feat in enumerate(feats):
            mlp = nn.Sequential(nn.Linear(feat.shape[1], self.nc), nn.ReLU(), nn.Linear(self.nc, self.nc))
            setattr(self, f"mlp_{i}", mlp.to(device=feat.device))
        init_weights(self, self.init_type, self.init_gain)
        self.layers = len(feats)

    def forward(self, feats: Sequence[torch.Tensor], num_patches: int, patch_ids: Sequence[torch.Tensor] | None = None,
                generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if not self.layers:
            self.create(feats)
        out, ids = [], []
        for i, feat in enumerate(feats):
            flat = feat.permute(0, 2, 3, 1).flatten(1, 2)  # B × HW × C
            if patch_ids is None:
                idx = torch.randperm(flat.shape[1], generator=generator)[: min(num_patches, flat.shape[1])]
            else:
                idx = patch_ids[i]
            idx = idx.to(device=feat.device, dtype=torch.long)
            sample = getattr(self, f"mlp_{i}")(flat[:, idx, :].flatten(0, 1))  # (B·P) × nc
            out.append(l2_normalize(sample))
            ids.append(idx)
        return out, ids


def patch_nce(query: torch.Tensor, key: torch.Tensor, batch: int, tau: float = 0.07,
              all_negatives: bool = False) -> torch.Tensor:
    """PatchNCE per patch: each query patch (of ``batch`` images × P patches, rows of unit vectors) against its
    key patch (the positive) and the other key patches of the same image (negatives; of the whole batch with
    ``all_negatives``, as SinCUT), softmax cross-entropy at temperature ``tau``. Keys carry no gradient."""
    key = key.detach()
    n, dim = query.shape
    positive = torch.bmm(query.view(n, 1, -1), key.view(n, -1, 1)).view(n, 1)
    groups = 1 if all_negatives else batch
    q, k = query.view(groups, -1, dim), key.view(groups, -1, dim)
    patches = q.shape[1]
    negative = torch.bmm(q, k.transpose(2, 1))
    eye = torch.eye(patches, device=query.device, dtype=torch.bool)[None]
    negative = negative.masked_fill(eye, -10.0).view(-1, patches)  # a patch with itself is no negative
    logits = torch.cat([positive, negative], 1) / tau
    return F.cross_entropy(logits, torch.zeros(n, dtype=torch.long, device=query.device), reduction="none")
