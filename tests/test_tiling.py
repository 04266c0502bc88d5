"""`i2i translate --tile`: tiles with the whole image's result, seam-free approximations, and the fallbacks.

Tolerance: tiled and whole outputs are compared to ``TOLERANCE`` (1e-4) of the output's range in fp32. Their fp32
rounding differs (convolution algorithms chosen per shape, statistics summed tile by tile) by ~2e-6 here, while a halo
a few pixels short of the receptive field differs by 2e-3 and more (tested below): the bound is far from both.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import i2i.device
import i2i.tiling
from conftest import one_line_error
from i2i.norm_stats import normalized_by
from i2i.receptive_field import profile, smooth_probe
from i2i.tiling import TOLERANCE, TileStats, default_halo, seam, spans
from i2i.translate import Translator
from i2i_components.generators import ResnetGenerator, UnetGenerator


def smooth(side: int, seed: int = 1) -> torch.Tensor:
    """A smooth 1×3×side×side test image in [-1, 1]."""
    low = torch.rand(1, 3, 5, 5, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return F.interpolate(low, size=(side, side), mode="bicubic", align_corners=False).clamp(-1, 1)


def resnet(**kw) -> ResnetGenerator:
    torch.manual_seed(0)
    return ResnetGenerator(3, 3, n_blocks=2, ngf=8, **kw).eval()


def low_pass_resnet() -> ResnetGenerator:
    """A ResNet generator (resize up-sampling) whose kernels are constant per channel pair: a low-pass network, so its
    output shows any offset between tiles (a random one's texture would hide them; per-tile statistics give every
    tile of a random network the same output distribution)."""
    G = resnet(upsampling="resize")
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(*m.weight.shape[:2], 1, 1).expand_as(m.weight) / m.weight[0, 0].numel())
    return G


def whole(G: nn.Module, x: torch.Tensor, **kw) -> torch.Tensor:
    return Translator(G, precision="fp32", **kw).forward(x)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / (b.max() - b.min()))


def test_receptive_field_of_the_resnet_bounds_its_reach_and_sets_the_default_halo():
    """The layer walk gives the ResNet generators' receptive-field radius (7×7 in and out, two stride-2 convolutions,
    2 or 9 blocks at 1/4 resolution); an input change reaches no further; the halo is it rounded up to 4."""
    G = resnet()
    prof = profile(G, G, smooth_probe(3, 64))
    assert prof.radius == 31 and prof.unknown is None and prof.bytes_per_pixel > 0
    assert default_halo(prof.radius, 4) == 32 and default_halo(None, 4) == 32 and default_halo(1000, 4) == 256
    G9 = ResnetGenerator(3, 3, n_blocks=9, ngf=8).eval()
    assert profile(G9, G9, smooth_probe(3, 64)).radius == 87  # the official ResNet-9: an 88 px default halo
    x = smooth(128)
    policy = TileStats()
    with torch.no_grad(), normalized_by(G, policy):  # fixed (whole-image) statistics: only the convolutions reach
        policy.recording = True
        G(x)
        policy.recording = False
        policy.begin()
        base = G(x)
        x[..., 64, 64] += 1
        policy.begin()
        changed = ((G(x) - base).abs().amax(dim=(0, 1)) > 0).nonzero()
    reach = int((changed - 64).abs().max())
    assert 20 <= reach <= prof.radius


def test_exact_statistics_give_the_whole_image_result():
    """(a) ResNet with instance norm, exact statistics, the default halo (the receptive field): equal to the whole
    image's output within 1e-4 of its range (fp32; see the module docstring), in 9 statistics passes (its 9 norm
    layers); a halo 8 px short is refused by the exactness probe, its error well above the tolerance."""
    G, x = resnet(), smooth(128)
    tr = Translator(G, precision="fp32", tile=32, tile_stats="exact")
    out = tr.forward(x)
    assert tr.tiling.halo == 32 and tr.tiling.stats_passes == 9
    assert rel_err(out, whole(G, x)) < TOLERANCE
    short = Translator(G, precision="fp32", tile=32, overlap=24)
    ok, why = short.tiling.verdict()
    assert not ok and "narrower than its receptive field, ~31 px" in why
    assert float(why.split("by ")[1].split(" ")[0]) > 10 * TOLERANCE


def test_lowres_statistics_are_exact_when_the_image_fits_and_seam_free_when_not(monkeypatch):
    """(b) lowres statistics: exact when the image fits one tile's input area; otherwise approximate, but tiles meet
    without a seam (the seam measure within 1.25× the whole image's own at those lines: 1.04× here), where tiles
    with their own statistics show one (1.8×, with the same halos and blending; 10× translated separately)."""
    G = low_pass_resnet()
    x = smooth(128)
    lowres = Translator(G, precision="fp32", tile=64).forward(x)  # 64 + 2·36 px ≥ 128: the statistics are exact
    exact = Translator(G, precision="fp32", tile=64, tile_stats="exact").forward(x)
    assert rel_err(lowres, exact) < TOLERANCE
    x = smooth(160, seed=3)
    ref = whole(G, x)
    ours = Translator(G, precision="fp32", tile=32).forward(x)  # 160² > (32 + 2·36)²: statistics of a 0.65× copy
    assert rel_err(ours, ref) > 100 * TOLERANCE  # approximate
    cores = spans(160, 32, 0, 4, 4)
    separate = torch.zeros_like(ref)
    for r in cores:
        for c in cores:
            (r0, r1), (c0, c1) = r.core, c.core
            separate[..., r0:r1, c0:c1] = whole(G, x[..., r0:r1, c0:c1])

    class OwnStats(TileStats):  # each tile normalised by its own statistics
        def __call__(self, layer, inp, own):
            return super().__call__(layer, inp, own) if self.recording else own

    naive = Translator(G, precision="fp32", tile=32)
    naive.tiling.verdict()
    monkeypatch.setattr(i2i.tiling, "TileStats", OwnStats)
    own = naive.forward(x)
    edges = [s.core[0] for s in cores[1:]]
    baseline = seam(ref, edges)  # the whole image's own measure at those lines
    assert seam(ours, edges) < 1.25 * baseline
    assert seam(own, edges) > 1.5 * baseline and seam(separate, edges) > 5 * baseline


class GlobalPool(nn.Module):
    """A plugin-like generator that adds its feature map's global average to its output (cannot be tiled exactly)."""

    size_multiple = 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.tanh(y + y.mean((2, 3), keepdim=True))


def test_a_generator_that_cannot_be_tiled_exactly_is_translated_whole_with_one_warning():
    """(c) Global average pooling: one warning line naming why, and exactly the whole-image result; the U-Net 256
    (8 levels) is refused by its receptive field without a probe."""
    torch.manual_seed(0)
    G, io = GlobalPool(), {"in_channels": 3, "out_channels": 3, "size_multiple": 1}
    tr, notes = Translator(G, io=io, tile=32), []
    tr.on_warning = notes.append
    x = smooth(96)
    outs = [tr.forward(x), tr.forward(x)]
    assert len(notes) == 1 and "\n" not in notes[0]
    assert notes[0].startswith("the generator cannot be tiled exactly (") and "global pooling" in notes[0]
    assert notes[0].endswith("translating whole images")
    assert all(torch.equal(o, Translator(G, io=io).forward(x)) for o in outs)
    unet = Translator(UnetGenerator(3, 3, num_downs=8, ngf=4).eval(), tile=256)
    ok, why = unet.tiling.verdict()
    assert not ok and why.startswith("its receptive field, ~765 px, is wider than the widest default overlap")


def test_the_cpu_switches_to_tiles_when_an_image_would_not_fit(monkeypatch):
    """(d) With (monkeypatched) 2 MB available, a 160² image's estimate does not fit: it is translated in tiles,
    with one warning for the run, and the result equals the whole image's."""
    G, x = resnet(), smooth(160)
    ref = whole(G, x)
    tr, notes = Translator(G, precision="fp32", tile_stats="exact"), []
    tr.on_warning = notes.append
    assert torch.equal(tr.forward(x), ref)  # enough memory: the whole image, no estimate printed
    monkeypatch.setattr(i2i.device, "available_memory", lambda: 2 * 2**20)
    outs = [tr.forward(x), tr.forward(x)]
    assert tr.tiling.stats_passes == 9  # it did tile (the whole pass gathers no statistics)
    assert all(rel_err(o, ref) < TOLERANCE for o in outs)
    assert len(notes) == 1 and notes[0].startswith("a 160×160 image needs ~")
    assert notes[0].endswith("MiB is available: translating in 64 px tiles with a 32 px overlap (exact statistics); "
                             "--tile N sets the tile size")


def test_cuda_running_out_of_memory_retries_in_tiles(monkeypatch):
    """CUDA's out-of-memory error (simulated on the CPU) retries in tiles, halving them while it recurs, with one
    warning naming the tile size that worked."""
    from i2i.tiling import Tiling

    G, x = resnet(), smooth(256)
    tr, notes = Translator(G, precision="fp32", tile_stats="exact"), []
    tr.on_warning = notes.append
    run, tiles = tr._run, []

    def whole_fails(batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    def small_tiles_only(batch, fp32=False):
        tiles.append(batch.shape[-1])
        if batch.shape[-1] > 128:  # the first tiles (128 px, 160 with the halo) are too large: halved to 64
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return run(batch, fp32)

    monkeypatch.setattr(tr, "_whole", whole_fails)
    monkeypatch.setattr(Tiling, "may_retry", lambda self, exc: i2i.device.out_of_memory(exc))
    tr.tiling.verdict()  # the probe runs before the tiles are made to fail
    monkeypatch.setattr(tr, "_run", small_tiles_only)
    assert rel_err(tr.forward(x), whole(G, x)) < TOLERANCE
    assert 160 in tiles and max(tiles[tiles.index(160) + 1:]) == 128
    assert notes == ["out of GPU memory for a 256×256 image: translated in 64 px tiles with a 32 px overlap (exact "
                     "statistics); --tile N sets the tile size"]


def test_a_batch_norm_unet_tiles_exactly_without_statistics_passes():
    """(f) U-Net of 5 levels with batch norm (eval mode): no per-image statistics, so the tiles run once each."""
    torch.manual_seed(0)
    G = UnetGenerator(3, 3, num_downs=5, ngf=8, norm="batch").eval()
    x = smooth(256)
    tr = Translator(G, precision="fp32", tile=64)
    tr.tiling.verdict()
    calls = []
    hook = G.register_forward_pre_hook(lambda m, inp: calls.append(inp[0].shape[-2:]))
    out = tr.forward(x)
    hook.remove()
    assert tr.tiling.halo == 96 and tr.tiling.stats_passes == 0 and len(calls) == 16  # 4×4 tiles, nothing else
    assert rel_err(out, whole(G, x)) < TOLERANCE


def test_an_enclosing_policy_gets_each_layers_whole_image_statistics_once():
    """Tiles inside another ``normalized_by`` block (a video's smoothing): that policy sees each norm layer once per
    image, with the whole image's statistics, and the result is the whole image's under it."""
    G, x = resnet(), smooth(128)
    seen = []

    def doubled(layer, inp, stats):
        seen.append(layer)
        return stats[0], stats[1] * 2

    with normalized_by(G, doubled):
        ref = whole(G, x)
        seen.clear()
        out = Translator(G, precision="fp32", tile=32, tile_stats="exact").forward(x)
    assert len(seen) == len(set(seen)) == 9
    assert rel_err(out, ref) < TOLERANCE


def test_cli_tiles_and_refuses_bad_values_in_one_line(cli, make_ckpt, tmp_path):
    """(e) ``--tile 32`` on a 96×128 photo-like image: the whole image's result (its statistics fit the low-resolution
    budget, so they are exact) to 1 of 255; bad values are one line, before the checkpoint is read."""
    img = (np.clip(smooth(128)[0, :, :96].permute(1, 2, 0).numpy(), -1, 1) * 127.5 + 127.5).astype(np.uint8)
    src = tmp_path / "img.png"
    cv2.imwrite(str(src), img)
    ckpt = make_ckpt()
    for name, extra in (("whole.png", []), ("tiled.png", ["--tile", "32"])):
        res = cli("translate", src, "--ckpt", ckpt, "-o", tmp_path / name, "--device", "cpu", *extra)
        assert res.exit_code == 0, res.stderr
        assert not res.stderr.strip()
    a, b = (cv2.imread(str(tmp_path / n)).astype(int) for n in ("whole.png", "tiled.png"))
    assert a.shape == b.shape == (96, 128, 3) and np.abs(a - b).max() <= 1
    missing = tmp_path / "missing.pt"
    one_line_error(cli("translate", src, "--ckpt", missing, "-o", tmp_path / "x", "--tile", "0"),
                   "--tile must be at least 1 px (got 0)")
    one_line_error(cli("translate", src, "--ckpt", missing, "-o", tmp_path / "x", "--overlap", "-1"),
                   "--overlap must be >= 0 px (got -1)")
    one_line_error(cli("translate", src, "--ckpt", missing, "-o", tmp_path / "x", "--tile-stats", "exakt"),
                   "unknown --tile-stats 'exakt' (did you mean 'exact'?); use lowres or exact")
    one_line_error(cli("translate", src, "--ckpt", missing, "-o", tmp_path / "x", "--tile", "64", "--train-mode"),
                   "--tile cannot be combined with --train-mode")


@pytest.mark.parametrize("bad", [{"tile": 0}, {"overlap": -2}, {"tile_stats": "median"}])
def test_translator_validates_tile_options(bad):
    from i2i import I2IError

    with pytest.raises(I2IError):
        Translator(resnet(), **bad)
