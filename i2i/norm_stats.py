"""Per-image normalisation layers (instance norm, group norm) made to normalise with statistics chosen from outside.

A generator with instance norm normalises every input by that input's own mean and variance. Translating a huge
image in tiles, or a video frame by frame, then changes those statistics from tile to tile (seams, colour shifts)
or from frame to frame (global flicker). :func:`normalized_by` lets a policy decide, for each such layer, which
statistics it uses: the whole image's (tiling), ones smoothed over time (video), or the input's own.

Blocks nest: the innermost policy decides while it is active, and leaving it restores the enclosing one.
:func:`active_policy` names the enclosing policy, so that an inner one can hand it the statistics it computes (the
tiles of a video frame: the frame's statistics gathered from its tiles, then smoothed over time).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

#: ``policy(layer, x, (mean, var)) -> (mean, var)``: ``layer`` is the layer's position in ``model.modules()``,
#: ``x`` its input, the pair the input's own statistics, each (N, groups) in float32
Policy = Callable[[int, torch.Tensor, tuple[torch.Tensor, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]

#: per model, the policies of the ``normalized_by`` blocks now open on it, innermost last
_open: weakref.WeakKeyDictionary[nn.Module, list[Policy]] = weakref.WeakKeyDictionary()


def groups_of(module: nn.Module) -> int | None:
    """How many groups ``module`` normalises each image's channels in, with that image's own statistics; None for
    any other layer (batch norm, or instance norm with running statistics in eval mode)."""
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return None if (module.track_running_stats and not module.training) else module.num_features
    if isinstance(module, nn.GroupNorm):
        return module.num_groups
    return None


def per_image_norms(model: nn.Module) -> list[tuple[int, nn.Module]]:
    """``(position in model.modules(), layer)`` of every layer normalising with per-image statistics."""
    return [(i, m) for i, m in enumerate(model.modules()) if groups_of(m) is not None]


def group_stats(x: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance of each image's channel groups, (N, groups) in float32."""
    return _normalized(x, groups)[1:]


def _normalized(x: torch.Tensor, groups: int, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x`` normalised by its own group statistics (no affine), with those statistics: one fused pass."""
    n, c = x.shape[:2]
    out, mean, rstd = torch.native_group_norm(x, None, None, n, c, x[0, 0].numel(), groups, eps)
    mean, rstd = mean.float().reshape(n, groups), rstd.float().reshape(n, groups)
    return out, mean, (rstd ** -2 - eps).clamp_min(0)


def _normalize(module: nn.Module, layer: int, policy: Policy, x: torch.Tensor) -> torch.Tensor:
    groups, n, c = groups_of(module), x.shape[0], x.shape[1]
    x = x.contiguous()  # channels_last tensors too: the batch-norm view below needs N·C planes
    own, mean, var = _normalized(x, groups, module.eps)
    chosen = policy(layer, x, (mean, var))
    if chosen[0] is mean and chosen[1] is var:  # the input's own: the normalisation is done
        out = own
    else:  # a batch norm over N·C channels with the chosen statistics: one fused pass
        # float32 statistics for any input: fp16 would overflow a variance over 65504, bf16 round the mean
        per_channel = [s.repeat_interleave(c // groups, dim=1).reshape(-1).float() for s in chosen]
        out = F.batch_norm(x.reshape(1, n * c, *x.shape[2:]), *per_channel, training=False, eps=module.eps
                           ).reshape(x.shape)
    if getattr(module, "weight", None) is not None:
        shape = (1, c) + (1,) * (x.dim() - 2)
        out = torch.addcmul(module.bias.reshape(shape), out, module.weight.reshape(shape))
    return out


def active_policy(model: nn.Module) -> Policy | None:
    """The policy of the innermost ``normalized_by`` block open on ``model`` (None outside any)."""
    stack = _open.get(model)
    return stack[-1] if stack else None


@contextlib.contextmanager
def normalized_by(model: nn.Module, policy: Policy) -> Iterator[int]:
    """Within the block, every per-image normalisation layer of ``model`` normalises with the statistics ``policy``
    returns; yields how many such layers there are (0: the model's output does not depend on per-image
    statistics, and nothing changes)."""
    layers = per_image_norms(model)
    outer = {i: m.__dict__.get("forward") for i, m in layers}  # an enclosing block's, restored after this one
    _open.setdefault(model, []).append(policy)
    try:
        for i, m in layers:
            m.forward = lambda x, m=m, i=i: _normalize(m, i, policy, x)  # an instance attribute shadows the method
        yield len(layers)
    finally:
        for i, m in layers:
            if outer[i] is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = outer[i]
        _open[model].pop()
