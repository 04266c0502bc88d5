"""CPU threads: an explicit count wins, OMP_NUM_THREADS leaves torch's alone, otherwise the cores other processes
leave idle (at least 1, chosen once per process); runs record the count; i2i's import shortens idle threads'
spinning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY, one_line_error, run_settings
from i2i import I2IError, device, load_registry
from i2i.config import parse_overrides, resolve


@pytest.fixture(autouse=True)
def threads_restored(monkeypatch):
    """No OMP_NUM_THREADS, no automatic choice made yet in this process; torch's thread count restored after."""
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(device, "_automatic", None)
    yield
    torch.set_num_threads(before)


def machine(monkeypatch, *, cpus: int, torch_threads: int, busy: float) -> None:
    """A machine with ``cpus`` allowed CPUs, torch defaulting to ``torch_threads``, other processes on ``busy``."""
    monkeypatch.setattr(device, "allowed_cpus", lambda: list(range(cpus)))
    monkeypatch.setattr(device, "_TORCH_THREADS", torch_threads)
    monkeypatch.setattr(device, "busy_cpus", lambda seconds=0.25: busy)


@pytest.mark.parametrize(("busy", "threads"), [(0.0, 8), (0.3, 8), (1.0, 7), (3.0, 5), (7.6, 1), (40.0, 1)])
def test_automatic_threads_are_the_idle_cores(monkeypatch, busy, threads):
    machine(monkeypatch, cpus=8, torch_threads=8, busy=busy)
    assert device.cpu_threads(None) == threads


def test_automatic_threads_keep_to_torch_default_and_the_affinity(monkeypatch):
    machine(monkeypatch, cpus=16, torch_threads=8, busy=0.0)  # hyper-threads: torch uses the physical cores
    assert device.cpu_threads(None) == 8
    machine(monkeypatch, cpus=16, torch_threads=8, busy=8.0)  # half the CPUs busy: half the cores
    assert device.cpu_threads(None) == 4
    machine(monkeypatch, cpus=2, torch_threads=8, busy=0.0)  # a process pinned to 2 CPUs
    assert device.cpu_threads(None) == 2


def test_an_explicit_count_wins(monkeypatch):
    machine(monkeypatch, cpus=2, torch_threads=2, busy=2.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert device.cpu_threads(3) == 3
    assert device.apply_cpu_threads(3) == 3 and torch.get_num_threads() == 3


def test_omp_num_threads_leaves_torch_alone(monkeypatch):
    machine(monkeypatch, cpus=8, torch_threads=8, busy=7.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    assert device.cpu_threads(None) == 2 and device.apply_cpu_threads(None) == 2
    assert calls == []


def test_a_count_the_process_set_itself_is_left_alone(monkeypatch):
    machine(monkeypatch, cpus=2, torch_threads=2, busy=0.0)
    torch.set_num_threads(1)  # as a script using i2i as a library may
    assert device.apply_cpu_threads(None) == 1 and torch.get_num_threads() == 1


def test_the_automatic_choice_is_made_once_per_process(monkeypatch):
    """Every run in a process then computes alike (the count changes the order of sums)."""
    machine(monkeypatch, cpus=2, torch_threads=2, busy=1.0)
    assert device.apply_cpu_threads(None) == 1 and torch.get_num_threads() == 1
    machine(monkeypatch, cpus=2, torch_threads=2, busy=0.0)
    assert device.apply_cpu_threads(None) == 1
    assert device.apply_cpu_threads(2) == 2 and torch.get_num_threads() == 2  # an explicit count still applies


def test_busy_cpus_counts_the_allowed_cpus_idle_time(monkeypatch):
    samples = iter([{0: (100, 50), 1: (100, 100), 2: (100, 0)}, {0: (200, 50), 1: (200, 190), 2: (200, 100)}])
    monkeypatch.setattr(device, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(device, "allowed_cpus", lambda: [0, 1])  # CPU 2 is not this process's
    assert device.busy_cpus(0.05) == pytest.approx(1.1, abs=0.1)  # CPU 0 all busy, CPU 1 a tenth


def test_busy_cpus_is_0_where_the_system_does_not_say(monkeypatch):
    def missing():
        raise FileNotFoundError("/proc/stat")

    monkeypatch.setattr(device, "_cpu_times", missing)
    assert device.busy_cpus(0.0) == 0.0


def test_busy_cpus_sees_a_busy_process():
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert device.busy_cpus(0.5) >= 0.5
    finally:
        loop.kill()
        loop.wait()


def test_zero_threads_is_refused(cli, small_data, tmp_path):
    with pytest.raises(I2IError, match=r"train.threads must be >= 1 \(or null: automatic\), got 0"):
        resolve(load_registry(), "cyclegan", [parse_overrides(["train.threads=0"])])
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", tmp_path / "run", *TINY, "train.threads=0")
    one_line_error(res, "train.threads must be >= 1")


def test_a_run_records_and_uses_its_threads(cli, small_data, tmp_path):
    out = tmp_path / "run"
    res = cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, *TINY, "--max-steps", "1",
              "train.threads=1")
    assert res.exit_code == 0, res.stderr
    assert run_settings(out)["threads"] == 1 and torch.get_num_threads() == 1


def test_an_automatic_run_records_the_count_it_chose(cli, small_data, tmp_path, monkeypatch):
    machine(monkeypatch, cpus=2, torch_threads=2, busy=1.0)
    out = tmp_path / "run"
    assert cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, *TINY, "--max-steps", "1").exit_code == 0
    assert run_settings(out)["threads"] == 1 and torch.get_num_threads() == 1


def test_a_resumed_run_keeps_the_count_it_was_trained_with(cli, small_data, tmp_path, monkeypatch):
    """The count changes the arithmetic: an automatic resume under another load keeps the saved one (bit for bit);
    an explicit train.threads on resume is taken, with the usual warning that the run is no longer exact."""
    machine(monkeypatch, cpus=2, torch_threads=2, busy=1.0)
    out = tmp_path / "run"
    assert cli("train", "-m", "cyclegan", "--data", small_data, "--out", out, *TINY, "--max-steps", "1").exit_code == 0
    machine(monkeypatch, cpus=2, torch_threads=2, busy=0.0)  # the machine is quiet now, the process a new one
    monkeypatch.setattr(device, "_automatic", None)
    torch.set_num_threads(2)
    res = cli("train", "--out", out, "--resume", "--max-steps", "2")
    assert res.exit_code == 0, res.stderr
    records = [json.loads(li)["settings"] for li in (out / "log.jsonl").read_text().splitlines() if '"settings"' in li]
    assert [r["threads"] for r in records] == [1, 1] and "no longer" not in res.stderr
    res = cli("train", "--out", out, "--resume", "--max-steps", "3", "train.threads=2")
    assert res.exit_code == 0, res.stderr
    assert "threads 1 → 2" in res.stderr


#: prints GOMP_SPINCOUNT as it is when `import i2i` first imports torch
AT_TORCH_IMPORT = """
import os, sys
seen = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("GOMP_SPINCOUNT"))
sys.meta_path.insert(0, Spy())
import i2i
print(seen)
"""


@pytest.mark.parametrize(("given", "seen"), [({}, "3000"), ({"GOMP_SPINCOUNT": "50"}, "50"),
                                             ({"OMP_WAIT_POLICY": "ACTIVE"}, None)])
def test_importing_i2i_shortens_the_spinning_of_idle_threads_unless_told(given, seen):
    """Set before i2i imports torch, whose OpenMP runtime reads it as it loads."""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")} | given
    res = subprocess.run([sys.executable, "-c", AT_TORCH_IMPORT], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str([seen])


def test_the_threads_benchmark_times_a_step_in_i2i_default():
    """benchmarks/threads.py's measuring process (the whole script takes minutes, with a load it starts)."""
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "threads.py"
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    res = subprocess.run([sys.executable, str(bench), "--child", "i2i", "--steps", "2", "--size", "32", "--ngf", "8",
                          "--ndf", "8"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    measured = json.loads(res.stdout.splitlines()[-1])
    assert measured["its"] > 0 and measured["steps"] == 2 and measured["threads"] >= 1
    assert measured["wait"] == "spin 3000"
