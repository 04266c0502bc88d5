"""Methods compared at equal settings: seconds per training iteration and peak memory of CycleGAN, CUT and FastCUT
with the same image size, network widths, generator depth and batch, in one run (each method in its own process, so
that peak memory is its own; the timings interleave nothing, so run it on a quiet machine).

    python benchmarks/methods.py [--size 128] [--batch 1] [--ngf 32] [--n-blocks 9] [--device cpu] [--iters 5]

Prints a markdown table with each method's s/it and peak memory (CUDA: allocated; CPU: resident, above the
process's memory before building), and their ratios to CycleGAN's (the paper reports
FastCUT at about half CycleGAN's memory and twice its speed on a GPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from i2i import Components, load_registry  # noqa: E402
from i2i.config import parse_overrides, resolve  # noqa: E402
from i2i.precision import Precision  # noqa: E402

#: per method, its generator of the asked depth (CUT's is the anti-aliased one, as the paper's)
GENERATORS = {"cyclegan": "resnet_{n}blocks", "cut": "cut_resnet_{n}blocks", "fastcut": "cut_resnet_{n}blocks"}


def measure(method: str, args: argparse.Namespace) -> dict[str, float]:
    """In this process: build ``method``, run ``args.iters`` timed steps after 2 warm-up steps on random images."""
    device = torch.device(args.device)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the interpreter and torch, loaded
    registry = load_registry()
    overrides = [f"generator={GENERATORS[method].format(n=args.n_blocks)}", f"generator.ngf={args.ngf}",
                 f"discriminator.ndf={args.ngf}"]
    cfg = resolve(registry, method, [parse_overrides(overrides)])
    build = Components(registry, cfg, {"A": 3, "B": 3}, device, Precision(args.precision, device))
    m = registry.get("method", method).build(build, **cfg.method.params)
    torch.manual_seed(0)
    batch = {k: torch.rand(args.batch, 3, args.size, args.size, device=device) * 2 - 1 for k in ("A", "B")}
    m.probe(batch)
    m.configure_optimizers()
    times = []
    for i in range(2 + args.iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        m.train_step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    # on the CPU: the process's peak resident memory above what it held before building anything
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline)
    return {"sec_per_iter": statistics.median(times), "peak_mb": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--n-blocks", type=int, default=9, choices=(6, 9))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--only", help=argparse.SUPPRESS)  # the child process's method
    args = ap.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args)))
        return
    rows = {}
    for method in GENERATORS:
        cmd = [sys.executable, __file__, "--only", method, *sys.argv[1:]]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows[method] = json.loads(res.stdout.strip().splitlines()[-1])
    base = rows["cyclegan"]
    print(f"{args.size}² batch {args.batch}, ngf/ndf {args.ngf}, {args.n_blocks} blocks, {args.device} "
          f"{args.precision}, median of {args.iters} steps")
    print("| method | s/it | × CycleGAN's speed | peak MB | × CycleGAN's memory |")
    print("| --- | --- | --- | --- | --- |")
    for method, r in rows.items():
        print(f"| {method} | {r['sec_per_iter']:.3f} | {base['sec_per_iter'] / r['sec_per_iter']:.2f} | "
              f"{r['peak_mb']:.0f} | {r['peak_mb'] / base['peak_mb']:.2f} |")


if __name__ == "__main__":
    main()
