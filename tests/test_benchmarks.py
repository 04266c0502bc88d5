"""The training-step benchmark compares like with like: its reference loop has networks of its own, in the official
layer configuration, never compiled; and the script runs end to end (at a tiny size; no timing is asserted)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"
sys.path.insert(0, str(BENCH.parent))

import train_step  # noqa: E402


def _args(**kw) -> argparse.Namespace:
    base = {"size": 32, "batch": 1, "ngf": 8, "ndf": 8, "n_blocks": 6, "device": "cpu", "precision": "auto",
            "compile": False, "overrides": []}
    return argparse.Namespace(**{**base, **kw})


def test_reference_loop_has_its_own_official_networks():
    from i2i_components.narrow_conv import NarrowConv2d
    from i2i_components.norms import InstanceNorm
    from i2i_components.winograd_conv import WinogradConv2d

    cpu = torch.device("cpu")
    i2i, ref = train_step.Loop("i2i", _args(compile=True), cpu), train_step.Loop("reference", _args(compile=True), cpu)
    ref_nets = [ref.method.G_A, ref.method.G_B, ref.method.D_A, ref.method.D_B]
    ref_params = {id(p) for n in ref_nets for p in n.parameters()}
    assert not ref_params & {id(p) for p in i2i.method.nets.parameters()}
    assert all(getattr(n, "_compiled_call_impl", None) is None for n in ref_nets)  # i2i's are compiled, not these
    assert all(n._compiled_call_impl is not None for n in i2i.method.nets.values())
    ref_modules = [m for n in ref_nets for m in n.modules()]
    assert not any(isinstance(m, NarrowConv2d | InstanceNorm | WinogradConv2d) for m in ref_modules)
    assert any(type(m) is nn.InstanceNorm2d for m in ref_modules)
    assert all(m.inplace for m in ref_modules if isinstance(m, nn.ReLU | nn.LeakyReLU))
    i2i_modules = list(i2i.method.nets.modules())
    assert all(any(isinstance(m, cls) for m in i2i_modules) for cls in (NarrowConv2d, InstanceNorm, WinogradConv2d))
    # same initial weights, so the two loops time the same computation
    for a, b in zip(ref.method.G_A.state_dict().values(), i2i.method.nets.G_AB.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_reference_step_updates_only_its_networks():
    cpu = torch.device("cpu")
    i2i, ref = train_step.Loop("i2i", _args(), cpu), train_step.Loop("reference", _args(), cpu)
    before = {k: v.clone() for k, v in i2i.method.nets.state_dict().items()}
    ref_before = [p.detach().clone() for p in ref.method.G_A.parameters()]
    assert ref.step() > 0
    assert all(torch.equal(v, i2i.method.nets.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(a, b) for a, b in zip(ref_before, ref.method.G_A.parameters(), strict=True))


def test_train_step_script_prints_its_figures():
    res = subprocess.run([sys.executable, str(BENCH), "--size", "32", "--ngf", "8", "--ndf", "8", "--n-blocks", "6",
                          "--iters", "2", "--warmup", "0", "--device", "cpu"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    rows = {li.split()[0]: li.split() for li in lines if li.split() and li.split()[0] in ("reference", "i2i")}
    assert set(rows) == {"reference", "i2i"} and all(float(r[1]) > 0 for r in rows.values())
    assert any(li.startswith("time ratio i2i / reference:") for li in lines)
    assert any(li.startswith("goals: time ratio <= 0.9:") for li in lines)


def test_winograd_script_times_every_mode():
    """Each case gets a train and an inference row with three timings and the two ratios."""
    res = subprocess.run([sys.executable, str(BENCH.parent / "winograd.py"), "32:8", "40:8", "--blocks", "2",
                          "--rounds", "1"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [li.split() for li in res.stdout.splitlines() if li[:1].isdigit()]
    assert [(r[0], r[2]) for r in rows] == [("32:8", "train"), ("32:8", "inference"), ("40:8", "train"),
                                            ("40:8", "inference")]
    assert all(len(r) == 8 and all(float(v.rstrip("s")) > 0 for v in r[3:]) for r in rows)
