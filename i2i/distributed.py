"""Data-parallel training across processes (``torchrun``): every rank holds the full networks, takes its share of
each batch, and gradients are averaged over ranks before every optimizer step.

Gradients are all-reduced explicitly at the optimizer step rather than by wrapping networks in
DistributedDataParallel: a GAN step runs each discriminator several times (frozen in the generator step, trained in
its own), which DDP's once-per-forward gradient hooks do not support without restrictions. The arithmetic is the
same: the mean over ranks of each parameter's gradient.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .errors import I2IError

#: set by :func:`launch` for the processes it starts: a rank that loses a peer leaves the report to the launcher
LAUNCHED_ENV = "I2I_LAUNCHED"
#: the exit code of such a rank
LOST_PEER_EXIT = 75


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average a dict of numbers over ranks (same keys everywhere)."""
        if not self.enabled or not values:
            return values
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return dict(zip(values, (t / self.world).tolist(), strict=True))

    def any(self, flag: bool) -> bool:
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast_module(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers everywhere."""
        if self.enabled:
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, 0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def on_main(self, fn: Callable[[], Any], error: Callable[[I2IError], I2IError] = lambda exc: exc) -> None:
        """Run ``fn`` on rank 0 alone (work the other ranks do not need, such as building validation's feature
        extractor); an I2IError it raises, reworded by ``error``, is raised on every rank, so no rank goes on to wait
        for one that has stopped. Every rank must call this at the same point."""
        failure: BaseException | None = None
        if self.main:
            try:
                fn()
            except I2IError as exc:
                failure = error(exc)
                failure.__cause__ = exc
            except Exception as exc:  # a bug, or the machine: rank 0 reports it, the others stop quietly
                failure = exc
        if self.enabled:
            verdict = self.gather(None if failure is None else (isinstance(failure, I2IError), str(failure)))[0]
            if failure is None and verdict is not None:
                user_error, text = verdict
                raise I2IError(text if user_error else f"rank 0 stopped: {text}")
        if failure is not None:
            raise failure

    def _device(self) -> torch.device:
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


def setup(device: str | None) -> tuple[Distributed, str | None]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns it and the device to use (in a
    single process, ``device`` unchanged: ``None`` leaves the choice to ``train.device``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), device
    device = device or "auto"
    if device != "auto":
        from .device import resolve_device

        resolve_device(device)  # e.g. cuda where CUDA is not available: said so, not "local rank 0 has no GPU"
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise I2IError(f"local rank {local} has no GPU ({torch.cuda.device_count()} visible); lower --nproc")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    elif device == "auto":
        device = "cpu"
    if not dist.is_initialized():
        if use_cuda:
            dist.init_process_group("nccl", device_id=torch.device("cuda", local))
        else:
            dist.init_process_group("gloo")
    return Distributed(rank, world, local), device


def teardown(d: Distributed) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc: int, args: list[str]) -> int:
    """``torchrun --standalone --nproc_per_node nproc -m i2i ARGS`` in this process, with one line instead of
    torchrun's failure report: the error a rank handed over (:func:`hand_to_launcher`, with that rank's exit code: 2
    for a user's error, 1 for a bug), or the process the system killed (128 + its signal); otherwise the first failed
    rank's exit code. 130 when this process is stopped by Ctrl-C or SIGTERM (rank 0 says what it saved; 128 + N for
    another signal N)."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # the ranks inherit this environment: each rank its share of the cores (torchrun would set 1, with a warning,
    # where this is unset), and the mark by which they hand their errors here; this process's own is restored after
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // nproc)),
           LAUNCHED_ENV: "1"}
    with _environment(env), _quiet_launcher(logging):
        try:
            run(get_args_parser().parse_args(["--standalone", "--nproc_per_node", str(nproc), "-m", "i2i", *args]))
        except ChildFailedError as exc:
            handed = [(line, f.exitcode) for _, f in sorted(exc.failures.items())
                      if (line := _handed_line(f.error_file_data))]
            if handed:  # see hand_to_launcher; the ranks usually meet the same problem: rank 0's line, else the first
                sys.stderr.write(f"error: {handed[0][0]}\n")
                return handed[0][1] if handed[0][1] and handed[0][1] > 0 else 2  # 2: the user's to fix, 1: a bug
            codes = {rank: f.exitcode or 1 for rank, f in exc.failures.items()}
            reported = [c for _, c in sorted(codes.items()) if c > 0 and c != LOST_PEER_EXIT]
            if reported:  # a rank said why it stopped (torchrun then stopped the others with SIGTERM)
                return reported[0]
            # a process the system killed said nothing; the others stopped quietly (see lost_peer) or were stopped by
            # torchrun with SIGTERM, so another signal names the process that was killed first
            killed = sorted((c == -signal.SIGTERM, rank, c) for rank, c in codes.items() if c < 0)
            if not killed:
                sys.stderr.write("error: the training processes lost contact with each other; the run keeps its last "
                                 "checkpoint: continue it with --resume\n")
                return 1
            _, rank, code = killed[0]
            why = " (out of memory?)" if code == -signal.SIGKILL else ""
            sys.stderr.write(f"error: training process {rank} of {nproc} was killed by {_signal_name(-code)}{why}; the "
                             f"run keeps its last checkpoint: continue it with --resume\n")
            return 128 - code
        except SignalException as exc:  # Ctrl-C / SIGTERM: torchrun has passed it on to the ranks and waited for them
            # both ask the run to stop and save, as in one process: 130, as the README says; other signals 128 + N
            return 130 if exc.sigval in (signal.SIGINT, signal.SIGTERM) else 128 + int(exc.sigval)
        return 0


def hand_to_launcher(text: str) -> bool:
    """In a process started by :func:`launch`, leave the error line ``text`` for the launcher to print (in the error
    file torchelastic reads when the process has failed) rather than printing it: no rank can be cut off before its
    line, and the launcher prints one. False where there is no launcher to hand it to."""
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if os.environ.get(LAUNCHED_ENV) != "1" or not error_file:
        return False
    record = {"message": {"message": text, "i2i": True, "extraInfo": {"timestamp": int(time.time())}}}
    try:
        with open(error_file, "w") as f:
            json.dump(record, f)
    except OSError:
        return False
    return True


def _handed_line(data: Any) -> str | None:
    """The error line a rank left in its error file with :func:`hand_to_launcher`, if any."""
    message = data.get("message") if isinstance(data, dict) else None
    return str(message["message"]) if isinstance(message, dict) and message.get("i2i") else None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective operation failing because another process of the job is gone."""
    text = str(exc)
    return any(s in text for s in ("Connection reset by peer", "Connection closed by peer", "Broken pipe"))


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set meanwhile (what child processes inherit), as it was afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet_launcher(logging: Any) -> Iterator[None]:
    """Keep torchrun's own log lines (its failure reports, "Received 2 death signal, shutting down workers") off
    the terminal meanwhile: the ranks word what happened. Its module loggers set their own levels, so a level on
    their parent is not enough; their records stop at the parent instead (not at Python's last-resort handler)."""
    parent = logging.getLogger("torch.distributed.elastic")
    saved = parent.level, parent.propagate
    quiet = logging.NullHandler()
    parent.setLevel(logging.CRITICAL)
    parent.propagate = False
    parent.addHandler(quiet)
    try:
        yield
    finally:
        parent.setLevel(saved[0])
        parent.propagate = saved[1]
        parent.removeHandler(quiet)
