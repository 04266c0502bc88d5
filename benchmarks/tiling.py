"""Tiled translation against the whole image: peak memory, time, and seams.

For each image size, translates one smooth random image whole and in tiles with a random-init ResNet generator
(speed and memory do not depend on the weights), each in a fresh process whose peak resident memory (VmHWM) is
reported above what it held before translating (torch, the generator and the image loaded), with the estimate that
decides the automatic switch. Whole-image sizes whose estimate exceeds the available memory are skipped (and said
so). Then the seam measure (mean |difference| across tile edges over the same at other lines, relative to the whole
image's own) of our tiles against tiles that keep their own statistics and tiles translated separately, with a
low-pass network (a random one's texture would hide any seam).

    python benchmarks/tiling.py [--sizes 4,12,24] [--ngf 32] [--n-blocks 9] [--tile 512] [--stats lowres] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins"))

import i2i.tiling as tiling  # noqa: E402
from i2i.device import available_memory  # noqa: E402
from i2i.translate import Translator  # noqa: E402
from i2i_components.generators import ResnetGenerator  # noqa: E402


def smooth(h: int, w: int, seed: int = 3) -> torch.Tensor:
    low = torch.rand(1, 3, 6, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1)


def shape(megapixels: float, multiple: int = 4) -> tuple[int, int]:
    """A 3:4 (height:width) image of about ``megapixels``, sides multiples of ``multiple``."""
    h = round((megapixels * 1e6 * 3 / 4) ** 0.5 / multiple) * multiple
    return h, round(h * 4 / 3 / multiple) * multiple


def generator(args: argparse.Namespace) -> ResnetGenerator:
    torch.manual_seed(0)
    return ResnetGenerator(3, 3, n_blocks=args.n_blocks, ngf=args.ngf).eval()


def vm_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def child(args: argparse.Namespace) -> None:
    """In this process: translate one image whole or tiled; print seconds and memory as JSON."""
    mode, megapixels = args.child[0], float(args.child[1])
    h, w = shape(megapixels)
    tr = Translator(generator(args), precision="fp32", tile=args.tile if mode == "tiled" else None,
                    tile_stats=args.stats)
    t0 = time.perf_counter()
    _ = tr.tiling.profile  # the generator's checks, made once per run: timed apart
    if mode == "tiled":
        tr.tiling.verdict()
    probe_s = time.perf_counter() - t0
    Translator(tr.G, precision="fp32").forward(smooth(128, 128))  # warm-up: the first pass's one-off costs
    x = smooth(h, w)
    base = vm_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS (Linux >= 4.0)
        f.write("5")
    t0 = time.perf_counter()
    out = tr.forward(x)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "probe_s": probe_s, "peak_mb": (vm_kb("VmHWM") - base) / 1024,
                      "out": list(out.shape), "passes": tr.tiling.stats_passes}))


def measure(args: argparse.Namespace, mode: str, megapixels: float) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(megapixels), *sys.argv[1:]]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def seams(side: int, tile: int) -> None:
    """The seam measure of whole, ours (lowres, exact), own-statistics tiles and separately translated tiles."""
    torch.manual_seed(0)
    G = ResnetGenerator(3, 3, n_blocks=2, ngf=8, upsampling="resize").eval()
    with torch.no_grad():  # kernels constant per channel pair: a low-pass network
        for m in G.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(*m.weight.shape[:2], 1, 1).expand_as(m.weight) / m.weight[0, 0].numel())
    x = smooth(side, side)
    ref = Translator(G, precision="fp32").forward(x)
    cores = tiling.spans(side, tile, 0, 4, 4)
    edges = [s.core[0] for s in cores[1:]]
    separate = torch.zeros_like(ref)
    for r in cores:
        for c in cores:
            (r0, r1), (c0, c1) = r.core, c.core
            separate[..., r0:r1, c0:c1] = Translator(G, precision="fp32").forward(x[..., r0:r1, c0:c1])
    results = {name: Translator(G, precision="fp32", tile=tile, tile_stats=name).forward(x)
               for name in ("lowres", "exact")}
    own_stats = Translator(G, precision="fp32", tile=tile)
    own_stats.tiling.verdict()
    base_stats = tiling.TileStats

    class OwnStats(base_stats):
        def __call__(self, layer, inp, own):
            return super().__call__(layer, inp, own) if self.recording else own

    tiling.TileStats = OwnStats
    try:
        results["own statistics per tile"] = own_stats.forward(x)
    finally:
        tiling.TileStats = base_stats
    results["tiles translated separately"] = separate
    base = tiling.seam(ref, edges)
    print(f"seams ({side}² smooth image, {tile} px tiles, low-pass ResNet-2 ngf 8; 1.0 = the whole image's own "
          f"measure {base:.2f} at those lines):")
    for name, out in results.items():
        err = float((out - ref).abs().max() / (ref.max() - ref.min()))
        print(f"  {name:28s} seam {tiling.seam(out, edges) / base:6.2f}×   max |error| {err:.1e} of the output's range")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4,12,24", help="image sizes in megapixels")
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--n-blocks", type=int, default=9)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--stats", default="lowres", choices=tiling.STATS)
    ap.add_argument("--quick", action="store_true", help="tiny sizes and network: finishes in seconds")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.ngf, args.n_blocks, args.tile = "0.1,0.5", 8, 2, 128
    if args.child:
        child(args)
        return
    tr = Translator(generator(args), precision="fp32", tile=args.tile)
    bpp, free = tr.tiling.profile.bytes_per_pixel, available_memory() or 0
    print(f"ResNet-{args.n_blocks} ngf {args.ngf}, fp32 on the CPU, {torch.get_num_threads()} torch threads; tiles "
          f"{args.tile} px + {tr.tiling.halo} px halo, {args.stats} statistics; estimate {bpp:.0f} B/px, "
          f"{free / 2**30:.1f} GiB available")
    print("| MP | whole s | tiled s | × time | whole peak MB | tiled peak MB | × memory | estimate MB (whole) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for megapixels in (float(s) for s in args.sizes.split(",")):
        h, w = shape(megapixels)
        estimate = bpp * h * w
        tiled = measure(args, "tiled", megapixels)
        if estimate * tiling.MEMORY_MARGIN > free:
            print(f"| {megapixels:g} ({w}×{h}) | skipped: estimate {estimate / 2**20:.0f} MB × "
                  f"{tiling.MEMORY_MARGIN} > available | {tiled['seconds']:.2f} | | | {tiled['peak_mb']:.0f} | | |")
            continue
        whole = measure(args, "whole", megapixels)
        print(f"| {megapixels:g} ({w}×{h}) | {whole['seconds']:.2f} | {tiled['seconds']:.2f} | "
              f"{tiled['seconds'] / whole['seconds']:.2f} | {whole['peak_mb']:.0f} | {tiled['peak_mb']:.0f} | "
              f"{tiled['peak_mb'] / whole['peak_mb']:.2f} | {estimate / 2**20:.0f} |")
    print(f"(the tiled runs' one-off checks of the generator took {tiled['probe_s']:.2f} s, not counted above)")
    seams(160 if args.quick else 512, 32 if args.quick else 128)


if __name__ == "__main__":
    main()
