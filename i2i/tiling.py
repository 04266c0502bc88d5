"""Translating images too large for memory in tiles, with the whole image's result (or a close, seam-free one).

Geometry: the image (padded to the generator's size multiple m) is cut into cores of about N px whose edges lie on
multiples of m, so every strided layer samples a tile on the same grid as the whole image. Each tile runs with a halo
of M px of context on every side, clamped at the image's true borders (where the network's own padding then acts as
on the whole image); when M covers the receptive field, a tile's output over its core is the whole image's. Outputs
are added with separable weights that ramp from one tile to the next across the part of the halo beyond the
receptive field (a quarter of the halo where that is unknown) and divided by the weights' sum. Only that float32
accumulator grows with the image: the network holds one tile's activations at a time.

Statistics: instance/group norm normalise an input by its own statistics, so a tile would use its own (seams, colour
shifts). Under :func:`i2i.norm_stats.normalized_by` every tile uses the whole image's, found in one of two ways:
``exact``: passes over the tiles, each stopping at the first layer whose statistics are unknown after adding up that
layer's sums over each tile's core, until all are known (about L/2 forward passes for L norm layers, then the final
one); the result is the whole image's up to float rounding. ``lowres`` (default): one pass of the image downscaled to
about one tile's input area records them (no more memory than a tile); cheap and approximate (exact when the
image fits that area).

A generator is tiled only if a probe (a smooth random image of 2×2 small tiles) tiled matches its whole-image pass to
:data:`TOLERANCE` of the output's range; otherwise (global pooling, attention, a receptive field wider than any
sensible halo) images are translated whole, with one warning.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from . import device as devices
from .device import out_of_memory
from .errors import I2IError, did_you_mean
from .norm_stats import Policy, active_policy, normalized_by
from .receptive_field import Profile, profile, smooth_probe

if TYPE_CHECKING:
    from .translate import Translator

STATS = ("lowres", "exact")
#: largest difference between a tiled probe and its whole pass, relative to the output's range, for a generator to
#: count as exactly tileable: fp32 rounding of tiles against the whole image (other convolution algorithms for other
#: shapes, statistics summed tile by tile) stays near 1e-6; a halo short of the receptive field by a few pixels, or a
#: global operation, differs by 1e-3 and more (tests/test_tiling.py)
TOLERANCE = 1e-4
#: widest default halo, px: beyond it (e.g. a 256 px U-Net's) tiles cost several times the whole image
HALO_CAP = 256
#: the halo where the receptive field cannot be computed
UNKNOWN_HALO = 32
#: smallest tile core, px (rounded up to the size multiple)
MIN_TILE = 16
#: first tile size tried after CUDA ran out of memory (halved while it still does)
CUDA_TILE = 512
#: bounds of the tile size chosen on the CPU when an image would not fit
AUTO_TILES = (64, 1024)
#: an image is translated whole on the CPU while its estimated memory times this fits in the available memory
MEMORY_MARGIN = 1.5
#: activation bytes per pixel no generator i2i knows comes near (ResNet-9 ngf 64: ~900): images that fit at this
#: rate are translated whole without measuring the generator
SURE_BYTES_PER_PIXEL = 8192
#: side of the probe that measures the receptive field and activation memory (rounded up to the size multiple)
PROFILE_SIDE = 64


def check_options(tile: int | None, overlap: int | None, stats: str, train_mode: bool = False) -> None:
    """One-line errors for tile options that cannot work (before anything is loaded)."""
    if tile is not None and tile < 1:
        raise I2IError(f"--tile must be at least 1 px (got {tile}); e.g. --tile 512")
    if overlap is not None and overlap < 0:
        raise I2IError(f"--overlap must be >= 0 px (got {overlap}); leave it out for the generator's receptive field")
    if stats not in STATS:
        raise I2IError(f"unknown --tile-stats '{stats}'{did_you_mean(stats, STATS)}; use lowres or exact")
    if tile is not None and train_mode:
        raise I2IError("--tile cannot be combined with --train-mode: batch norm would normalise each tile by its own "
                       "statistics; leave one of them out")


def round_up(value: float, multiple: int) -> int:
    return -(-math.ceil(value) // multiple) * multiple


def default_halo(radius: int | None, multiple: int) -> int:
    """The halo tiles get unless ``--overlap`` says: the receptive-field radius rounded up to the size multiple,
    at most :data:`HALO_CAP` (rounded down to a multiple, at least one); :data:`UNKNOWN_HALO` where it is unknown."""
    if radius is None:
        return round_up(UNKNOWN_HALO, multiple)
    return min(round_up(radius, multiple), max(multiple, HALO_CAP // multiple * multiple))


@dataclass(frozen=True)
class Span:
    """One tile along an axis: its core (the output it stands for) and its input (core plus halo), [start, stop)."""

    core: tuple[int, int]
    tile: tuple[int, int]


def spans(length: int, core: int, halo: int, multiple: int, least: int) -> list[Span]:
    """Tiles along an axis of ``length`` px (a multiple of ``multiple``): about equal cores of at most ``core`` px
    with edges on multiples, inputs of at least ``least`` px where the axis allows."""
    n = max(1, -(-length // core))
    edges = [round(k * length / n / multiple) * multiple for k in range(n + 1)]
    out = []
    for c0, c1 in zip(edges, edges[1:], strict=False):
        t0, t1 = max(0, c0 - halo), min(length, c1 + halo)
        if t1 - t0 < least:  # grow a tile the generator would reject, within the image
            t1 = min(length, t0 + least)
            t0 = max(0, t1 - least)
        out.append(Span((c0, c1), (t0, t1)))
    return out


def ramp(span: Span, length: int, blend: int) -> torch.Tensor:
    """A tile's weights along one axis: 1 over its core, ramping linearly to 0 across ``blend`` px either side of an
    edge shared with the next tile (a step where ``blend`` is 0), 1 up to the image's true borders."""
    (c0, c1), (t0, t1) = span.core, span.tile
    p = torch.arange(t0, t1, dtype=torch.float64) + 0.5
    w = torch.ones_like(p)
    b = min(blend, (c1 - c0) // 2)
    if c0 > 0:
        w *= ((p - (c0 - b)) / (2 * b)).clamp(0, 1) if b else (p >= c0).double()
    if c1 < length:
        w *= ((c1 + b - p) / (2 * b)).clamp(0, 1) if b else (p < c1).double()
    return w.float()


class _Stop(Exception):
    """Ends a tile's pass once the policy has gathered the statistics the pass was run for."""


class TileStats:
    """The normalisation policy of tiled passes: each (layer, how many times it ran before in this pass) gets the
    whole image's statistics when known. Recording, it keeps the input's own (the whole image, or its low-resolution
    copy); otherwise, at the first unknown layer, it adds the tile's core (at that layer's resolution) to that layer's
    sums and stops the pass. ``outer``: the policy of an enclosing block, handed each layer's statistics once."""

    def __init__(self, outer: Policy | None = None) -> None:
        self.outer, self.recording = outer, False
        self.known: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self.calls: Counter[int] = Counter()
        self.region: tuple[int, int, int, int, int, int] = (1, 1, 0, 1, 0, 1)  # tile h, w; core rows, cols
        self.gathered: list | None = None  # [key, count, mean, M2, last input] of the layer being gathered

    def begin(self, region: tuple[int, int, int, int, int, int] | None = None) -> None:
        self.calls.clear()
        self.region = region or self.region

    def _hand_over(self, layer: int, x: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        return stats if self.outer is None else self.outer(layer, x, stats)

    def __call__(self, layer: int, x: torch.Tensor, own: tuple[torch.Tensor, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        key = (layer, self.calls[layer])
        self.calls[layer] += 1
        if key in self.known:
            return self.known[key]
        if self.recording:
            self.known[key] = self._hand_over(layer, x, own)
            return self.known[key]
        self._gather(key, x, own[0].shape[1])
        raise _Stop

    def _gather(self, key: tuple[int, int], x: torch.Tensor, groups: int) -> None:
        th, tw, r0, r1, c0, c1 = self.region
        fh, fw = x.shape[-2:]  # the core mapped to this layer's resolution
        part = x[..., r0 * fh // th: r1 * fh // th, c0 * fw // tw: c1 * fw // tw].float()
        n, c = part.shape[:2]
        var, mean = torch.var_mean(part.reshape(n, groups, c // groups, *part.shape[-2:]), dim=(2, 3, 4),
                                   unbiased=False)
        count, wide = part[0, : c // groups].numel(), torch.float32 if x.device.type == "mps" else torch.float64
        mean, m2 = mean.to(wide), var.to(wide) * count
        if self.gathered is None:
            self.gathered = [key, count, mean, m2, x]
            return
        if self.gathered[0] != key:
            raise RuntimeError(f"tiles stopped at different layers ({self.gathered[0]} and {key})")
        _, total, acc_mean, acc_m2, _ = self.gathered  # Chan et al.'s pairwise update: no cancellation
        delta, both = mean - acc_mean, total + count
        self.gathered = [key, both, acc_mean + delta * (count / both), acc_m2 + m2 + delta**2 * (total * count / both),
                         x]

    def settle(self) -> bool:
        """Turn the sums of the pass just made into that layer's statistics; False when nothing was gathered."""
        if self.gathered is None:
            return False
        key, count, mean, m2, x = self.gathered
        self.gathered = None
        self.known[key] = self._hand_over(key[0], x, (mean.float(), (m2 / count).float()))
        return True


def seam(out: torch.Tensor, edges: list[int]) -> float:
    """How much a tiled output changes across the tile borders ``edges`` (the first row/column of each tile but the
    first) against elsewhere: the mean |difference| between neighbouring columns (and rows) there over the same at
    all others, the larger of the two directions (about 1 where no seam shows)."""
    ratios = []
    for t in (out, out.transpose(-1, -2)):
        d = (t[..., 1:] - t[..., :-1]).abs().mean(dim=tuple(range(t.dim() - 1)))
        at = torch.zeros_like(d, dtype=torch.bool)
        at[[e - 1 for e in edges]] = True
        ratios.append(float(d[at].mean() / d[~at].mean()))
    return max(ratios)


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _downscaled(x: torch.Tensor, pixels: int, multiple: int, least: int) -> torch.Tensor:
    """``x`` averaged down to about ``pixels`` per image (sides multiples of ``multiple``); itself if it fits."""
    h, w = x.shape[-2:]
    f = math.sqrt(pixels / (h * w))
    if f >= 1:
        return x
    size = [max(least, multiple, round(s * f / multiple) * multiple) for s in (h, w)]
    return F.interpolate(x.float(), size=size, mode="area")


def _add(out: torch.Tensor | None, y: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor, r: Span, c: Span,
         size: tuple[int, int]) -> torch.Tensor:
    """Accumulate a tile's output ``y``, weighted, into ``out`` (N×C×H×W float32 on the CPU, made at the first)."""
    if out is None:
        out = torch.zeros(*y.shape[:2], *size)
    (a0, a1), (b0, b1) = ((int(i[0]), int(i[-1]) + 1) for i in (wy.nonzero(), wx.nonzero()))
    part = y[..., a0:a1, b0:b1].float().cpu().mul_(wy[a0:a1, None] * wx[b0:b1])
    out[..., r.tile[0] + a0: r.tile[0] + a1, c.tile[0] + b0: c.tile[0] + b1] += part
    return out


class Tiling:
    """Tiled translation for one :class:`~i2i.translate.Translator`: its options, the generator's profile and
    exactness verdict (each found once), when to tile, and the tiled passes."""

    def __init__(self, translator: Translator, tile: int | None, overlap: int | None, stats: str) -> None:
        check_options(tile, overlap, stats, translator.train_mode)
        self.tr, self.tile, self.overlap, self.stats = translator, tile, overlap, stats
        self._profile: Profile | None = None
        self._verdict: tuple[bool, str] | None = None
        self.noted: set[str] = set()  # warnings given (each once per run)
        self.stats_passes = 0  # statistics passes over the tiles of the last tiled batch

    def note(self, key: str, text: str) -> None:
        if key not in self.noted:
            self.noted.add(key)
            self.tr.on_warning(text)

    @property
    def profile_side(self) -> int:
        return round_up(max(PROFILE_SIDE, self.tr.min_side), self.tr.multiple)

    @property
    def profile(self) -> Profile:
        if self._profile is None:
            # each layer's own statistics: an enclosing policy (a video's smoothing) does not see the probe
            with torch.no_grad(), normalized_by(self.tr.G, lambda layer, x, own: own):
                self._profile = profile(self.tr.G, self.tr._run, smooth_probe(self.tr.in_channels, self.profile_side))
        return self._profile

    @property
    def halo(self) -> int:
        if self.overlap is not None:
            return round_up(self.overlap, self.tr.multiple)
        return default_halo(self.profile.radius, self.tr.multiple)

    @property
    def blend(self) -> int:
        """Half the width of the ramp between tiles: the halo beyond the receptive field, where both are exact."""
        r = self.profile.radius
        return self.halo // 4 if r is None else max(0, self.halo - r)

    def core(self, tile: int) -> int:
        return round_up(max(tile, MIN_TILE, self.tr.min_side), self.tr.multiple)

    def verdict(self) -> tuple[bool, str]:
        """Whether the generator can be tiled exactly, and if not why: a probe of 2×2 small tiles, with the whole
        probe's statistics, against its whole pass in fp32."""
        if self._verdict is None:
            self._verdict = self._check()
        return self._verdict

    @torch.no_grad()
    def _check(self) -> tuple[bool, str]:
        prof, halo, m = self.profile, self.halo, self.tr.multiple
        if self.overlap is None and prof.radius is not None and prof.radius > halo:
            return False, (f"its receptive field, ~{prof.radius} px, is wider than the widest default overlap "
                           f"({halo} px); --overlap N tries a wider one")
        core = round_up(max(halo + m, MIN_TILE, self.tr.min_side), m)  # tiles then see less than the probe
        x = smooth_probe(self.tr.in_channels, 2 * core)

        def run(t: torch.Tensor) -> torch.Tensor:
            return self.tr._run(t, fp32=True)

        policy = TileStats()
        with normalized_by(self.tr.G, policy):
            policy.recording = True
            whole = run(x).cpu()
            policy.recording = False
            tiled = self._tiled(x, core, policy, run)
        err = float((tiled - whole).abs().max() / (whole.max() - whole.min()).clamp_min(1e-12))
        if err <= TOLERANCE:
            return True, ""
        why = f"tiles of a probe differ from its whole-image pass by {err:.1g} of the output's range"
        if prof.radius is None:
            return False, f"{why}; its {prof.unknown} layers may see the whole image"
        if prof.radius > halo:
            return False, f"{why}; the {halo} px overlap is narrower than its receptive field, ~{prof.radius} px"
        return False, f"{why}: it has operations beyond its layers' reach (global pooling or attention?)"

    def _tiled(self, x: torch.Tensor, core: int, policy: TileStats, run: Callable[[torch.Tensor], torch.Tensor]
               ) -> torch.Tensor:
        """``x`` translated in tiles: passes over them until one runs through, gathering statistics on the way."""
        (h, w), least, m = x.shape[-2:], self.tr.min_side, self.tr.multiple
        rows, cols = spans(h, core, self.halo, m, least), spans(w, core, self.halo, m, least)
        wr, wc = [ramp(s, h, self.blend) for s in rows], [ramp(s, w, self.blend) for s in cols]
        self.stats_passes = 0
        while True:
            out = None
            for r, wy in zip(rows, wr, strict=True):
                for c, wx in zip(cols, wc, strict=True):
                    (r0, r1), (c0, c1) = r.tile, c.tile
                    policy.begin((r1 - r0, c1 - c0, r.core[0] - r0, r.core[1] - r0, c.core[0] - c0, c.core[1] - c0))
                    tile = x[..., r0:r1, c0:c1]
                    try:
                        y = self.tr._checked(run(tile), tile)
                    except _Stop:
                        continue
                    out = _add(out, y, wy, wx, r, c, (h, w))
            if out is not None and policy.gathered is not None:
                raise RuntimeError("some tiles ran through while others stopped for statistics")
            if out is not None:
                break
            policy.settle()
            self.stats_passes += 1
        for axis, spans_, weights in ((-2, rows, wr), (-1, cols, wc)):  # divide by the weights' (separable) sum
            total = torch.zeros(x.shape[axis])
            for s, wt in zip(spans_, weights, strict=True):
                total[s.tile[0]: s.tile[1]] += wt
            out /= total[:, None] if axis == -2 else total
        return out

    @torch.no_grad()
    def forward(self, x: torch.Tensor, tile: int) -> torch.Tensor | None:
        """``x`` (N×C×H×W, sides multiples of the size multiple) translated in tiles of about ``tile`` px, on the
        CPU; None, after one warning, where the generator cannot be tiled exactly."""
        ok, why = self.verdict()
        if not ok:
            self.note("inexact", f"the generator cannot be tiled exactly ({why}): translating whole images")
            return None
        core, G = self.core(tile), self.tr.G
        policy = TileStats(active_policy(G))  # an enclosing policy (a video's smoothing) gets each layer's once
        with normalized_by(G, policy) as norms:
            if norms and self.stats == "lowres":  # the statistics of a copy of one tile's input area: no more memory
                policy.recording = True
                self.tr._run(_downscaled(x, (core + 2 * self.halo) ** 2, self.tr.multiple, self.tr.min_side))
                policy.recording = False
            return self._tiled(x, core, policy, self.tr._run)

    def tile_for(self, batch: torch.Tensor) -> int | None:
        """The tile size for ``batch`` (None: whole): ``tile`` where an image is larger than one; without it, on the
        CPU, one that fits where the whole image's estimated memory would not."""
        n, _, h, w = batch.shape
        if self.tile is not None:
            return self.tile if max(h, w) > self.core(self.tile) else None
        if self.tr.train_mode or self.tr.device.type != "cpu" or n * h * w <= self.profile_side ** 2:
            return None
        free = devices.available_memory()
        if free is None or SURE_BYTES_PER_PIXEL * n * h * w * MEMORY_MARGIN <= free:
            return None
        need = self.profile.bytes_per_pixel * n * h * w
        if need * MEMORY_MARGIN <= free:
            return None
        budget = free / MEMORY_MARGIN - 4 * n * self.tr.out_channels * h * w  # less the output's accumulator
        side = math.sqrt(max(budget, 0) / (self.profile.bytes_per_pixel * n))
        m = self.tr.multiple
        tile = max(AUTO_TILES[0], min(AUTO_TILES[1], int(side) - 2 * self.halo)) // m * m
        tile = max(m, min(tile, round_up(max(h, w) / 2, m)))
        if self.verdict()[0]:  # otherwise forward() says why the image is translated whole
            images = f"a batch of {n} {w}×{h} images" if n > 1 else f"a {w}×{h} image"
            self.note("auto", f"{images} needs ~{_size(need)} to translate whole, {_size(free)} is "
                              f"available: translating in {self.core(tile)} px tiles with a {self.halo} px overlap "
                              f"({self.stats} statistics); --tile N sets the tile size")
        return tile

    def may_retry(self, exc: BaseException) -> bool:
        """Whether ``exc``, from a whole-image pass, is CUDA running out of memory that tiles may avoid."""
        return self.tile is None and not self.tr.train_mode and self.tr.device.type == "cuda" and out_of_memory(exc)

    def retry(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in tiles after its whole pass ran out of GPU memory: :data:`CUDA_TILE` px, halved while they do."""
        h, w = x.shape[-2:]
        tile = min(CUDA_TILE, round_up(max(h, w) / 2, self.tr.multiple))
        out = None
        while out is None:
            torch.cuda.empty_cache()
            try:
                out = self.forward(x, tile)
            except RuntimeError as exc:
                if not out_of_memory(exc) or tile // 2 < AUTO_TILES[0]:
                    raise
                tile //= 2
                continue
            if out is None:
                raise I2IError(f"out of GPU memory for a {w}×{h} image, and the generator cannot be tiled exactly; "
                               f"lower --batch-size or --size")
        self.note("cuda", f"out of GPU memory for a {w}×{h} image: translated in {self.core(tile)} px tiles with a "
                          f"{self.halo} px overlap ({self.stats} statistics); --tile N sets the tile size")
        return out
