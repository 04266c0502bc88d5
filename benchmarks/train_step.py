"""CycleGAN training-step speed: i2i's step against a reference loop that mirrors the official implementation.

For one size / batch / ngf / n_blocks / device / precision it prints seconds per iteration, images/s, peak memory
and achieved GFLOP/s (convolution and matmul FLOPs of one step, forward and backward, counted by
torch.utils.flop_counter) for both, their ratio, and the machine's own ceiling measured in the same run: a large
fp32 matmul and a 3×3 convolution, with i2i's fraction of each. The two loops are timed interleaved in one process
(so drift in the machine's speed affects both alike); FLOPs and peak memory come from a process per loop.

    python benchmarks/train_step.py [--size 128] [--batch 1] [--ngf 32] [--n-blocks 9] [--device cpu]
                                    [--precision fp32] [--iters 6] [i2i key=value overrides ...]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from i2i import Components, load_registry  # noqa: E402
from i2i.config import parse_overrides, resolve  # noqa: E402
from i2i.precision import Precision  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build_i2i(args, device):
    """i2i's CycleGAN method with the settings the trainer uses by default on this device (not yet compiled)."""
    registry = load_registry()
    name = "resnet_9blocks" if args.n_blocks == 9 else "resnet_6blocks"
    cfg = resolve(registry, "cyclegan", [parse_overrides([f"generator={name}", f"generator.ngf={args.ngf}",
                                                          f"discriminator.ndf={args.ndf}", *args.overrides])])
    cuda = device.type == "cuda"
    precision = args.precision if args.precision != "auto" else ("bf16" if cuda else "fp32")
    build = Components(registry, cfg, {"A": 3, "B": 3}, device, Precision(precision, device), cuda)
    method = registry.get("method", "cyclegan").build(build, **cfg.method.params)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    for net in method.nets.values():
        net.to(memory_format=fmt)
    return method, fmt


def as_official(nets: torch.nn.Module) -> torch.nn.Module:
    """The official layer configuration of the same networks: plain ``nn.Conv2d`` output and residual-block layers,
    stock ``nn.InstanceNorm2d`` and in-place activations (i2i computes the same functions faster; see
    narrow_conv.py, winograd_conv.py, norms.py and generators.py)."""
    from i2i_components.narrow_conv import NarrowConv2d
    from i2i_components.norms import InstanceNorm
    from i2i_components.winograd_conv import WinogradConv2d

    for m in nets.modules():
        if isinstance(m, NarrowConv2d | WinogradConv2d):
            m.__class__ = torch.nn.Conv2d
        if isinstance(m, InstanceNorm):
            m.__class__ = torch.nn.InstanceNorm2d
        if isinstance(m, torch.nn.ReLU | torch.nn.LeakyReLU):
            m.inplace = True
    return nets


class Reference:
    """The official CycleGAN step (cycle_gan_model.py): fp32, contiguous tensors, six generator passes (fake,
    reconstruction and identity for each direction), D frozen through requires_grad during the G step, G backward,
    then each D on real and pooled fake separately with detach and the 0.5 factor, two Adam optimizers."""

    def __init__(self, nets, lr=2e-4, lambda_A=10.0, lambda_B=10.0, lambda_idt=0.5):
        from i2i_cyclegan.pool import ImagePool

        self.G_A, self.G_B = nets["G_AB"], nets["G_BA"]
        self.D_A, self.D_B = nets["D_B"], nets["D_A"]  # official D_A judges domain B
        self.opt_G = torch.optim.Adam(itertools.chain(self.G_A.parameters(), self.G_B.parameters()), lr=lr,
                                      betas=(0.5, 0.999))
        self.opt_D = torch.optim.Adam(itertools.chain(self.D_A.parameters(), self.D_B.parameters()), lr=lr,
                                      betas=(0.5, 0.999))
        self.pool_A, self.pool_B = ImagePool(50), ImagePool(50)
        self.l = (lambda_A, lambda_B, lambda_idt)

    @staticmethod
    def gan(pred, real):
        return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))

    def train_step(self, batch):
        real_A, real_B = batch["A"], batch["B"]
        lA, lB, li = self.l
        fake_B = self.G_A(real_A)
        rec_A = self.G_B(fake_B)
        fake_A = self.G_B(real_B)
        rec_B = self.G_A(fake_A)
        for net in (self.D_A, self.D_B):
            net.requires_grad_(False)
        self.opt_G.zero_grad()
        loss_idt_A = F.l1_loss(self.G_A(real_B), real_B) * lB * li
        loss_idt_B = F.l1_loss(self.G_B(real_A), real_A) * lA * li
        loss_G = (self.gan(self.D_A(fake_B), True) + self.gan(self.D_B(fake_A), True)
                  + F.l1_loss(rec_A, real_A) * lA + F.l1_loss(rec_B, real_B) * lB + loss_idt_A + loss_idt_B)
        loss_G.backward()
        self.opt_G.step()
        for net in (self.D_A, self.D_B):
            net.requires_grad_(True)
        self.opt_D.zero_grad()
        for D, real, fake in ((self.D_A, real_B, self.pool_B.query(fake_B)),
                              (self.D_B, real_A, self.pool_A.query(fake_A))):
            loss_D = (self.gan(D(real), True) + self.gan(D(fake.detach()), False)) * 0.5
            loss_D.backward()
        self.opt_D.step()


class Loop:
    """One training loop ready to step on a fixed batch: i2i's method, or the reference built from a copy of the
    same freshly initialized networks (before any compilation) in the official layer configuration."""

    def __init__(self, which: str, args, device: torch.device) -> None:
        torch.manual_seed(0)
        method, fmt = build_i2i(args, device)
        self.cudnn_benchmark = device.type == "cuda" and which == "i2i"  # the official code leaves it off
        if which == "reference":
            fmt = torch.contiguous_format
            method = Reference(as_official(copy.deepcopy(method.nets)).to(memory_format=fmt))
        else:
            if args.compile:
                for net in method.nets.values():
                    net.compile()
            method.configure_optimizers()
        self.after = getattr(method, "amp", None)  # the trainer updates the fp16 loss scale after each step
        g = torch.Generator().manual_seed(1)
        self.batch = {k: (torch.rand(args.batch, 3, args.size, args.size, generator=g) * 2 - 1)
                      .to(device, memory_format=fmt) for k in ("A", "B")}
        self.method, self.device = method, device

    def step(self) -> float:
        """One training step; its wall time in seconds."""
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        sync(self.device)
        t0 = time.perf_counter()
        self.method.train_step(self.batch)
        if self.after is not None:
            self.after.update()
        sync(self.device)
        return time.perf_counter() - t0


def footprint(which: str, args) -> dict:
    """FLOPs of one step and peak memory over a few steps, in a process of its own."""
    device = torch.device(args.device)
    loop = Loop(which, args, device)
    with FlopCounterMode(display=False) as counter:
        loop.step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        loop.step()
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"flops": counter.get_total_flops(), "peak_mb": peak}


def timings(args, device: torch.device) -> dict[str, float]:
    """Median seconds per step of both loops, measured interleaved in one process (alternating which goes first)
    so that drift in the machine's speed affects both alike."""
    loops = {which: Loop(which, args, device) for which in ("reference", "i2i")}
    for _ in range(args.warmup):
        for loop in loops.values():
            loop.step()
    times: dict[str, list[float]] = {which: [] for which in loops}
    for i in range(args.iters):
        for which in list(loops)[:: 1 if i % 2 == 0 else -1]:
            times[which].append(loops[which].step())
    return {which: statistics.median(t) for which, t in times.items()}


def ceiling(device: torch.device) -> dict:
    """GFLOP/s of a large fp32 and bf16 matmul and of an fp32 3×3 convolution (256 channels, as in the ResNet
    blocks)."""
    n = 8192 if device.type == "cuda" else 1536
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a16, b16 = a.bfloat16(), b.bfloat16()
    x = torch.randn(4, 256, 64, 64, device=device)
    w = torch.randn(256, 256, 3, 3, device=device)

    def rate(fn, flop, reps):
        fn()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(device)
        return flop * reps / (time.perf_counter() - t0) / 1e9

    reps = 20 if device.type == "cuda" else 5
    return {"matmul": rate(lambda: a @ b, 2 * n**3, reps),
            "bf16 matmul": rate(lambda: a16 @ b16, 2 * n**3, reps),
            "conv3x3": rate(lambda: F.conv2d(x, w, padding=1), 2 * 4 * 256 * 256 * 9 * 64 * 64, reps)}


def progress(msg: str) -> None:
    """A stderr line as each phase ends, so that a run stopped by a timeout still shows how far it got."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--ndf", type=int, default=64)
    ap.add_argument("--n-blocks", type=int, default=9, choices=(6, 9))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                    help="i2i's precision (auto: bf16 on CUDA, fp32 on the CPU, as the trainer); the reference "
                         "loop is always fp32")
    ap.add_argument("--compile", action="store_true", help="torch.compile i2i's networks")
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--child", choices=("i2i", "reference"), help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="i2i config overrides, e.g. method.batched=false")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(footprint(args.child, args)))
        return
    device = torch.device(args.device)
    passthrough = [a for a in sys.argv[1:]]
    results = {}
    for which in ("reference", "i2i"):
        res = subprocess.run([sys.executable, __file__, *passthrough, "--child", which], capture_output=True,
                             text=True)
        if res.returncode != 0:
            sys.exit(f"{which} loop failed:\n{res.stderr[-2000:]}")
        results[which] = json.loads(res.stdout.strip().splitlines()[-1])
        progress(f"{which} footprint {results[which]}")
    before = ceiling(device)
    progress(f"ceiling {before}")
    sec = timings(args, device)
    progress(f"timings {sec}")
    after = ceiling(device)
    top = {k: max(before[k], after[k]) for k in before}
    flops = results["reference"]["flops"]  # the same computation in both; NarrowConv2d's count differs slightly
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; {args.size}² batch {args.batch}, resnet {args.n_blocks} "
          f"blocks ngf {args.ngf}, PatchGAN ndf {args.ndf}, i2i precision {args.precision}"
          f"{', compiled' if args.compile else ''}")
    print(f"{'loop':<10} {'s/iter':>9} {'images/s':>9} {'GFLOP/s':>9} {'GFLOP/iter':>11} {'peak MB':>9}")
    for which, r in results.items():
        print(f"{which:<10} {sec[which]:9.4f} {args.batch / sec[which]:9.2f} {flops / sec[which] / 1e9:9.1f} "
              f"{flops / 1e9:11.1f} {r['peak_mb']:9.0f}")
    achieved = flops / sec["i2i"] / 1e9
    ratio, mem = sec["i2i"] / sec["reference"], results["i2i"]["peak_mb"] / results["reference"]["peak_mb"]
    print(f"time ratio i2i / reference: {ratio:.3f}   speed-up: {1 / ratio:.2f}×   memory ratio: {mem:.3f}")
    print(f"ceiling (best of before and after the timing): fp32 matmul {top['matmul']:.0f}, bf16 matmul "
          f"{top['bf16 matmul']:.0f}, fp32 3×3 conv {top['conv3x3']:.0f} GFLOP/s; i2i reaches "
          f"{achieved / top['matmul']:.0%}, {achieved / top['bf16 matmul']:.0%} and {achieved / top['conv3x3']:.0%}")
    goals = ({"time ratio <= 0.9": ratio <= 0.9, "conv fraction >= 80 %": achieved >= 0.8 * top["conv3x3"]}
             if device.type == "cpu" else
             {"speed-up >= 3": ratio <= 1 / 3, "bf16 matmul fraction >= 30 %": achieved >= 0.3 * top["bf16 matmul"],
              "memory ratio <= 0.75": mem <= 0.75})
    print("goals: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in goals.items()))


if __name__ == "__main__":
    main()
