"""Where the CPU Winograd convolution pays: a ResNet generator's time with and without it, same process, interleaved.

For each image size and ngf, times (a) a training pass — three generator passes with a backward, as a CycleGAN step
runs them — and (b) an inference forward, once with ``WinogradConv2d`` taking its path wherever its rule allows
(``default``), once with it forced on every residual-block layer (``forced``) and once off (``conv2d``), alternating
for ``--rounds`` rounds, and prints the medians and the ratios to ``conv2d``. The rule in winograd_conv.py
(``MIN_CHANNELS``, ``MIN_TILES``) should leave ``default`` ≤ 1 everywhere and < 1 where it applies.

    python benchmarks/winograd.py                  # 256:64 128:64 256:32 192:64
    python benchmarks/winograd.py 512:64 --passes inference --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import i2i_components.winograd_conv as wc
from i2i_components.generators import ResnetGenerator

MODES = {"conv2d": (10**9, 10**9), "default": (wc.MIN_CHANNELS, wc.MIN_TILES), "forced": (1, 1)}


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="*", default=["256:64", "128:64", "256:32", "192:64"], help="size:ngf")
    ap.add_argument("--blocks", type=int, default=9)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--passes", default="train,inference", help="comma-separated: train, inference")
    args = ap.parse_args()
    if not set(args.passes.split(",")) <= {"train", "inference"}:
        ap.error(f"--passes takes train and/or inference, got {args.passes!r}")
    torch.manual_seed(0)
    print(f"CPU, {torch.get_num_threads()} threads; torch {torch.__version__}; resnet {args.blocks} blocks, "
          f"batch {args.batch}; medians of {args.rounds} interleaved rounds")
    print(f"{'size:ngf':<9} {'blocks':<13} {'pass':<9}" + "".join(f"{m:>11}" for m in MODES)
          + f"{'default/conv2d':>16}{'forced/conv2d':>15}")
    for case in args.cases:
        size, ngf = (int(v) for v in case.split(":"))
        G = ResnetGenerator(3, 3, args.blocks, ngf)
        x = torch.randn(args.batch, 3, size, size)

        def train(G: torch.nn.Module = G, x: torch.Tensor = x) -> None:
            y = G(G(x))
            (y.mean() + G(x).mean()).backward()

        def infer(G: torch.nn.Module = G, x: torch.Tensor = x) -> None:
            with torch.no_grad():
                G(x)

        passes = {"train": train, "inference": infer}
        for name, fn in ((p, passes[p]) for p in args.passes.split(",")):
            fn()  # warm-up
            times: dict[str, list[float]] = {m: [] for m in MODES}
            for _ in range(args.rounds):
                for mode, (channels, tiles) in MODES.items():
                    wc.MIN_CHANNELS, wc.MIN_TILES = channels, tiles
                    times[mode].append(timed(fn))
            med = {m: statistics.median(t) for m, t in times.items()}
            blocks = f"{4 * ngf}ch@{size // 4}²"
            print(f"{case:<9} {blocks:<13} {name:<9}" + "".join(f" {med[m]:9.3g}s" for m in MODES)
                  + f"{med['default'] / med['conv2d']:16.3f}{med['forced'] / med['conv2d']:15.3f}", flush=True)
    wc.MIN_CHANNELS, wc.MIN_TILES = MODES["default"]


if __name__ == "__main__":
    main()
