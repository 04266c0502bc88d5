"""CPU threads on a quiet and on a shared machine: it/s of a small CycleGAN training step under torch's default
threads, one thread, torch's threads with ``OMP_WAIT_POLICY=PASSIVE``, torch's threads with i2i's import only (its
shorter ``GOMP_SPINCOUNT``: a run whose threads were chosen before the load came) and i2i's default (its import and
``i2i.device.apply_cpu_threads``, as a training run), each in a process of its own (threads are fixed as torch
starts), first on the machine as it is, then with a competing load the script starts: one torch process with torch's
default threads (another training) and ``os.cpu_count() - 1`` Python busy loops. Each mode is measured ``--rounds``
times in turns (the order rotated) and its best kept, so that a burst of someone else's work on the "quiet" machine
counts less. Prints a markdown table with the ratios measured in this run.

    python benchmarks/threads.py [--steps 20] [--max-seconds 8] [--rounds 2] [--size 64] [--ngf 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {"default": "torch default", "one": "1 thread", "passive": "torch threads, passive",
         "spin": "torch threads, i2i import", "i2i": "i2i default"}
OMP_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

BUSY_LOOP = "while True: pass"
TORCH_LOAD = """
import torch
x = torch.randn(1, 32, 64, 64, requires_grad=True)
w = torch.randn(32, 32, 3, 3, requires_grad=True)
torch.nn.functional.conv2d(x, w, padding=1).sum().backward()
print("ready", flush=True)
while True:
    torch.nn.functional.conv2d(x, w, padding=1).sum().backward()
"""


def child(mode: str, args: argparse.Namespace) -> dict:
    """it/s of the training step in this process, threads as ``mode`` says (the parent set the environment)."""
    sys.path.insert(0, str(ROOT))
    if mode in ("spin", "i2i"):
        import i2i  # noqa: F401  (first: it sets GOMP_SPINCOUNT before it imports torch)
    wait = ("passive" if os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"  # as torch's OpenMP runtime reads it
            else f"spin {os.environ.get('GOMP_SPINCOUNT', '300000')}")
    import torch

    from i2i import Components, load_registry
    from i2i.config import parse_overrides, resolve
    from i2i.device import apply_cpu_threads
    from i2i.precision import Precision

    threads = apply_cpu_threads(None) if mode == "i2i" else torch.get_num_threads()
    registry = load_registry()
    cfg = resolve(registry, "cyclegan", [parse_overrides(["generator=resnet_6blocks", f"generator.ngf={args.ngf}",
                                                          f"discriminator.ndf={args.ndf}"])])
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    method = registry.get("method", "cyclegan").build(
        Components(registry, cfg, {"A": 3, "B": 3}, cpu, Precision("fp32", cpu), False), **cfg.method.params)
    method.configure_optimizers()
    g = torch.Generator().manual_seed(1)
    batch = {k: torch.rand(1, 3, args.size, args.size, generator=g) * 2 - 1 for k in ("A", "B")}
    method.train_step(batch)  # warm-up: allocations, oneDNN primitives
    steps, t0 = 0, time.perf_counter()
    while steps < args.steps and (steps < 2 or time.perf_counter() - t0 < args.max_seconds):
        method.train_step(batch)
        steps += 1
    return {"its": steps / (time.perf_counter() - t0), "steps": steps, "threads": threads, "wait": wait}


def measure(mode: str, args: argparse.Namespace) -> dict:
    """Run one mode in a fresh process with its environment: no OpenMP variables but OMP_NUM_THREADS=1 for ``one``
    and OMP_WAIT_POLICY=PASSIVE for ``passive``."""
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARIABLES}
    if mode == "one":
        env["OMP_NUM_THREADS"] = "1"
    if mode == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    cmd = [sys.executable, __file__, "--child", mode, "--steps", str(args.steps), "--max-seconds",
           str(args.max_seconds), "--size", str(args.size), "--ngf", str(args.ngf), "--ndf", str(args.ndf)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.max_seconds + 180)
    if res.returncode != 0:
        sys.exit(f"{mode} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def start_load() -> list[subprocess.Popen]:
    """Another training (a torch process, default threads) and cpu_count - 1 busy loops; returns once all run."""
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARIABLES}
    torch_load = subprocess.Popen([sys.executable, "-c", TORCH_LOAD], env=env, stdout=subprocess.PIPE, text=True)
    procs = [torch_load] + [subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
                            for _ in range(max(1, (os.cpu_count() or 1) - 1))]
    assert torch_load.stdout is not None
    torch_load.stdout.readline()
    time.sleep(1)
    return procs


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement (at least 2)")
    ap.add_argument("--max-seconds", type=float, default=8.0, help="stop a measurement after this long")
    ap.add_argument("--rounds", type=int, default=2, help="measurements per mode and machine state (best kept)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--ndf", type=int, default=64)
    ap.add_argument("--child", choices=tuple(MODES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.steps < 2 or args.rounds < 1:
        ap.error("--steps must be >= 2 and --rounds >= 1")
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    rows: dict[str, dict[str, dict]] = {}
    for machine in ("quiet", "loaded"):
        procs = start_load() if machine == "loaded" else []
        try:
            rows[machine] = {}
            for r in range(args.rounds):
                load, modes = os.getloadavg()[0], list(MODES)
                for mode in modes[r % len(modes):] + modes[:r % len(modes)]:
                    m = measure(mode, args)
                    if mode not in rows[machine] or m["its"] > rows[machine][mode]["its"]:
                        rows[machine][mode] = m
                    progress(f"{machine} round {r + 1} {mode}: {m} (1-min load average {load:.2f} at its start)")
        finally:
            for p in procs:
                p.kill()
                p.wait()
    cores = os.cpu_count()
    print(f"\nCycleGAN step, resnet_6blocks ngf {args.ngf}, PatchGAN ndf {args.ndf}, {args.size}², batch 1, fp32, "
          f"{cores} CPUs; loaded: one torch process (default threads) + {max(1, (cores or 1) - 1)} busy loop(s); "
          f"best of {args.rounds}\n")
    print("| machine | " + " | ".join(MODES.values()) + " |")
    print("|---|" + "---:|" * len(MODES))
    for machine, r in rows.items():
        cells = [f"{r[m]['its']:.2f} it/s ({r[m]['threads']} thr, {r[m]['wait']})" for m in MODES]
        print(f"| {machine} | " + " | ".join(cells) + " |")
    q, lo = rows["quiet"], rows["loaded"]

    def ratio(a: dict, b: dict) -> str:
        return f"{a['its'] / b['its']:.2f}"

    print(f"\nloaded: torch default / 1 thread {ratio(lo['default'], lo['one'])}, i2i default / 1 thread "
          f"{ratio(lo['i2i'], lo['one'])}, i2i default / torch default {ratio(lo['i2i'], lo['default'])}; "
          f"threads chosen before the load (i2i import) / torch default {ratio(lo['spin'], lo['default'])}, "
          f"passive / torch default {ratio(lo['passive'], lo['default'])}")
    print(f"quiet: i2i default / torch default {ratio(q['i2i'], q['default'])}, i2i import / torch default "
          f"{ratio(q['spin'], q['default'])}, passive / torch default {ratio(q['passive'], q['default'])}, "
          f"1 thread / torch default {ratio(q['one'], q['default'])}")


if __name__ == "__main__":
    main()
