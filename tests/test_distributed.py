"""Two processes on CPU (torchrun, gloo): ranks stay identical, checkpoints load and resume, and the result matches a
single process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import TINY
from i2i.distributed import Distributed

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def _i2i(*args, timeout=300):
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "i2i", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _log(out):
    return [json.loads(li) for li in (out / "log.jsonl").read_text().splitlines()]


def test_two_processes_match_one_with_the_same_global_batch(small_data, tmp_path):
    common = ["train", "-m", "cyclegan", "--data", small_data, *TINY, "--max-steps", "3", "method.pool_size=0",
              "train.checkpoint_every=2"]
    two, one = tmp_path / "two", tmp_path / "one"
    res = _i2i(*common, "--out", two, "--batch-size", "1", "--nproc", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "× 2 processes" in res.stderr
    log = _log(two)
    assert log[0]["settings"]["processes"] == 2
    sums = [r["rank_checksums"] for r in log if "rank_checksums" in r]
    assert [len(s) for s in sums] == [2, 2] and all(s[0] == s[1] for s in sums)  # steps 2 and 3

    state = torch.load(two / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 3 and state["processes"] == 2 and len(state["rank_states"]) == 2

    res = _i2i(*common, "--out", one, "--batch-size", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    first_two = next(r["losses"] for r in log if "losses" in r)
    first_one = next(r["losses"] for r in _log(one) if "losses" in r)
    for k in first_one:  # step 1: same weights, same samples -> the ranks' mean loss is the batch-2 loss
        assert first_two[k] == pytest.approx(first_one[k], rel=1e-5, abs=1e-6), k
    single = torch.load(one / "checkpoints" / "last.pt", weights_only=True)["nets"]
    for net, params in state["nets"].items():
        diffs = torch.cat([(value - single[net][key]).abs().flatten() for key, value in params.items()])
        # Adam moves a weight by at most ~lr per step, so 3 steps differ by at most 6·lr even where a gradient at
        # float-noise level (a bias before instance norm) flips sign; on the whole the two runs agree closely
        assert diffs.max() <= 3 * 2 * 2e-4 + 1e-6, net
        assert diffs.mean() <= 5e-5, (net, float(diffs.mean()))


def test_distributed_resume_continues_and_needs_the_same_process_count(small_data, tmp_path):
    out = tmp_path / "run"
    res = _i2i("train", "-m", "cyclegan", "--data", small_data, *TINY, "--max-steps", "2", "--out", out,
               "--nproc", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    res = _i2i("train", "--out", out, "--resume", "--max-steps", "3", "--device", "cpu")
    assert res.returncode == 2 and "resume it with --nproc 2" in res.stderr and "Traceback" not in res.stderr
    res = _i2i("train", "--out", out, "--resume", "--max-steps", "4", "--device", "cpu", "--nproc", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 4
    sums = [r["rank_checksums"] for r in _log(out) if "rank_checksums" in r]
    assert sums and all(s[0] == s[1] for s in sums)


def test_a_user_error_under_nproc_is_one_line(tmp_path):
    """A mistake in a torchrun job is reported once, with the error's exit code and no launcher report."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # torchrun warns where it is unset
    res = subprocess.run([sys.executable, "-m", "i2i", "train", "-m", "cyclegan", "--data", str(tmp_path / "nope"),
                          "--out", str(tmp_path / "run"), "--nproc", "2"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 2
    lines = [li for li in res.stderr.splitlines() if li.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: data folder") and "does not exist" in lines[0], lines
    assert not (tmp_path / "run").exists()


@dataclass
class OneRankOfTwo(Distributed):
    """This process as one rank of a two-process job, without a process group: ``gather`` returns rank 0's
    ``rank0`` beside this rank's object (or records what rank 0 shares, in ``shared``)."""

    rank0: Any = None
    shared: list = field(default_factory=list)

    def gather(self, obj: Any) -> list[Any]:
        if self.main:
            self.shared.append(obj)
            return [obj, None]
        return [self.rank0, obj]

    def barrier(self) -> None:
        pass

    def broadcast_module(self, module) -> None:
        pass


def _validating_config(registry, small_data, *extra: str):
    from i2i.config import parse_overrides, resolve

    cfg = resolve(registry, "cyclegan", [parse_overrides(
        ["generator=resnet_6blocks", "generator.ngf=8", "discriminator.ndf=8", "data.crop_size=32",
         "data.load_size=36", "train.device=cpu", "validation.every=2", "validation.truth=testB"]),
        parse_overrides(list(extra))])
    cfg.data.root = str(small_data)
    return cfg


def test_only_rank_0_plans_validation_and_its_verdict_stops_every_rank(registry, small_data, tmp_path, monkeypatch):
    """Validation's plan (and its feature extractor) is built by rank 0 alone, the one that validates; an error in
    it fails every rank with rank 0's message, before the first step."""
    import i2i.training.validation
    from i2i import I2IError
    from i2i.training import Trainer

    shutil.copytree(small_data / "trainA", small_data / "testA")
    shutil.copytree(small_data / "trainA", small_data / "testB")
    calls = []
    monkeypatch.setattr(i2i.training.validation, "plan",
                        lambda *a, f=i2i.training.validation.plan, **k: calls.append(1) or f(*a, **k))
    cfg = _validating_config(registry, small_data)
    Trainer(cfg, registry, tmp_path / "run", distributed=OneRankOfTwo(rank=1, world=2))
    assert calls == []
    main = OneRankOfTwo(rank=0, world=2)
    Trainer(cfg, registry, tmp_path / "run", distributed=main)
    assert calls == [1] and main.shared[-1] is None

    bad = _validating_config(registry, small_data, "validation.truth=null")
    main = OneRankOfTwo(rank=0, world=2)
    with pytest.raises(I2IError, match=r"validation: .*need paired ground truth: pass validation.truth=DIR") as exc:
        Trainer(bad, registry, tmp_path / "run", distributed=main)
    assert main.shared[-1] == (True, str(exc.value))
    other = OneRankOfTwo(rank=1, world=2, rank0=main.shared[-1])
    with pytest.raises(I2IError) as exc_1:
        Trainer(bad, registry, tmp_path / "run", distributed=other)
    assert str(exc_1.value) == str(exc.value) and calls == [1, 1]
    assert not (tmp_path / "run").exists()


def test_a_bad_validation_setting_under_nproc_is_one_line(small_data, tmp_path):
    shutil.copytree(small_data / "trainA", small_data / "testA")
    res = _i2i("train", "-m", "cyclegan", "--data", small_data, *TINY, "--max-steps", "2", "--out", tmp_path / "run",
               "--nproc", "2", "validation.every=1")
    assert res.returncode == 2, res.stderr[-3000:]
    lines = [li for li in res.stderr.splitlines() if li.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: validation: ") and "validation.truth=DIR" in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_an_error_on_a_rank_other_than_0_is_reported_with_its_rank(cli, tmp_path, monkeypatch):
    """A rank other than 0 waits for rank 0 to report (the launcher would cut rank 0 off), then reports what rank 0
    did not stop on, naming its rank; rank 0 reports at once."""
    import time

    import i2i.cli.base

    waits = []
    monkeypatch.setattr(time, "sleep", waits.append)
    monkeypatch.setattr(i2i.cli.base, "RANK_GRACE_S", 1.5)
    for rank, prefix, slept in (("1", "error: (rank 1) ", [1.5]), ("0", "error: ", [])):
        monkeypatch.setenv("RANK", rank)
        waits.clear()
        res = cli("translate", tmp_path / "missing.jpg", "--ckpt", tmp_path / "G.pt", "-o", tmp_path / "out")
        assert res.exit_code == 2
        lines = [li for li in res.stderr.splitlines() if li.strip()]
        assert len(lines) == 1 and lines[0].startswith(prefix) and "(rank" not in lines[0][len(prefix):], lines
        assert waits == slept


@pytest.mark.parametrize("signame, processes", [("SIGINT", ["--nproc", "2"]), ("SIGTERM", ["--nproc", "2"]),
                                                ("SIGTERM", ["--workers", "2"])])
def test_a_stop_signal_to_the_process_group_saves_and_exits_130_without_a_traceback(small_data, tmp_path, signame,
                                                                                    processes):
    """Ctrl-C (SIGINT to the launcher's process group, as a terminal sends it) under --nproc: rank 0 says what it
    saved, in one line; the launcher adds no log line or traceback of its own and exits 130. SIGTERM to the group
    (docker stop, systemd, Slurm) reaches the data-loading processes too: they leave stopping to the trainer."""
    import signal

    out = tmp_path / "run"
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "i2i", "train", "-m", "cyclegan", "--data", str(small_data), *TINY,
                             "--max-steps", "400", "--out", str(out), *processes],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        seen = []
        while not seen or not seen[-1].startswith("step "):  # training has started: the first step's log line
            line = proc.stderr.readline()
            assert line, "".join(seen)
            seen.append(line)
        os.killpg(proc.pid, getattr(signal, signame))
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines = [li for li in stderr.splitlines() if li.strip()]
    assert proc.returncode == 130, (proc.returncode, stderr[-3000:])
    assert "Traceback" not in stderr + stdout and "SignalException" not in stderr, stderr[-3000:]
    assert not [li for li in lines if "death signal" in li or "api.py" in li], lines
    interrupted = [li for li in lines if li.startswith("interrupted")]
    assert len(interrupted) == 1 and "saved" in interrupted[0] and "--resume" in interrupted[0], lines
    assert [li for li in lines if not li.startswith("step ")] == interrupted, lines  # after the log, that line alone
    step = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert f"interrupted at step {step}: saved" in interrupted[0]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the ranks through /proc")
def test_a_rank_killed_by_the_system_is_named_in_one_line(small_data, tmp_path):
    """A training process killed outright (the OOM killer's SIGKILL) says nothing; the others lose their peer: the
    launcher names the killed process in one line and exits 128 + 9, with no traceback from the survivors."""
    import signal

    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "i2i", "train", "-m", "cyclegan", "--data", str(small_data), *TINY,
                             "--max-steps", "400", "--out", str(tmp_path / "run"), "--nproc", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        seen = []
        while not seen or not seen[-1].startswith("step "):
            line = proc.stderr.readline()
            assert line, "".join(seen)
            seen.append(line)
        ranks = _children(proc.pid)
        assert len(ranks) == 2, ranks
        os.kill(max(ranks), signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines = [li for li in stderr.splitlines() if li.strip() and not li.startswith("step ")]
    assert proc.returncode == 137, (proc.returncode, stderr[-3000:])
    assert "Traceback" not in stderr + stdout, stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: training process ") and "of 2 was killed by SIGKILL" in \
        lines[0] and "continue it with --resume" in lines[0], lines


def test_under_nproc_a_ranks_error_line_goes_to_the_launcher(cli, tmp_path, monkeypatch, capsys):
    """Under --nproc a rank writes its error line into torchelastic's error file instead of printing it (nothing is
    cut off before it is printed), and the launcher prints rank 0's line, or else the first failed rank's."""
    import json
    import time

    import torch.distributed.run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    import i2i.cli.base
    from i2i.distributed import LAUNCHED_ENV, launch

    waits = []
    monkeypatch.setattr(time, "sleep", waits.append)

    def leave(code):  # os._exit in a real rank
        raise i2i.cli.base.typer.Exit(code)

    monkeypatch.setattr(i2i.cli.base, "_leave", leave)
    error_file = tmp_path / "1" / "error.json"
    error_file.parent.mkdir()
    monkeypatch.setenv(LAUNCHED_ENV, "1")
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    monkeypatch.setenv("RANK", "1")
    res = cli("translate", tmp_path / "missing.jpg", "--ckpt", tmp_path / "G.pt", "-o", tmp_path / "out")
    assert res.exit_code == 2 and res.stderr.strip() == "" and waits == [i2i.cli.base.RANK_GRACE_S]
    line = json.loads(error_file.read_text())["message"]["message"]
    assert line == f"generator checkpoint not found: {tmp_path / 'G.pt'}", line

    def failed(_args):  # rank 1 reported; rank 0 was stopped (or aborted) before it wrote anything
        raise ChildFailedError("i2i", {1: ProcessFailure(local_rank=1, pid=1, exitcode=-6, error_file=str(error_file)),
                                       0: ProcessFailure(local_rank=0, pid=2, exitcode=-15,
                                                         error_file=str(tmp_path / "none.json"))})

    monkeypatch.setattr(torch.distributed.run, "run", failed)
    capsys.readouterr()
    assert launch(2, ["train"]) == 2
    assert capsys.readouterr().err == f"error: {line}\n"

    def bug(_args):  # a rank's line about a bug (exit 1) keeps its exit code
        raise ChildFailedError("i2i", {1: ProcessFailure(local_rank=1, pid=1, exitcode=1, error_file=str(error_file))})

    monkeypatch.setattr(torch.distributed.run, "run", bug)
    assert launch(2, ["train"]) == 1 and capsys.readouterr().err == f"error: {line}\n"


def test_the_launcher_leaves_its_own_process_as_it_was(monkeypatch):
    """The ranks inherit the core share and the launched mark; the launching process (a Python session calling
    launch(), a test) gets its environment and torchrun's logger back, so that a later run in it is not taken for a
    launched rank."""
    import logging

    import torch.distributed.run

    from i2i.distributed import LAUNCHED_ENV, launch

    seen = {}

    def fake_run(args):
        seen.update(env=os.environ.get(LAUNCHED_ENV), omp=os.environ.get("OMP_NUM_THREADS"),
                    propagate=logging.getLogger("torch.distributed.elastic").propagate)

    monkeypatch.setattr(torch.distributed.run, "run", fake_run)
    monkeypatch.delenv(LAUNCHED_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    parent = logging.getLogger("torch.distributed.elastic")
    before = parent.level, parent.propagate, list(parent.handlers)
    assert launch(2, ["train"]) == 0
    assert seen == {"env": "1", "omp": str(max(1, (os.cpu_count() or 1) // 2)), "propagate": False}
    assert LAUNCHED_ENV not in os.environ and "OMP_NUM_THREADS" not in os.environ
    assert (parent.level, parent.propagate, list(parent.handlers)) == before
