"""Choosing the compute device from a user's string, and how many CPU threads torch's operations use."""

from __future__ import annotations

import os
import time

import torch

from .errors import I2IError

#: torch's intra-op thread count when i2i was imported: its default (the physical cores) unless set before
_TORCH_THREADS = torch.get_num_threads()
#: the automatic thread count, chosen once per process (every run in it then computes alike)
_automatic: int | None = None


def out_of_memory_error() -> type[BaseException]:
    """The exception a device raises when its memory runs out (``torch.OutOfMemoryError`` where it exists)."""
    return getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out: a GPU's, or the CPU allocator's (a RuntimeError), or Python's."""
    said = ("out of memory", "can't allocate memory", "Cannot allocate memory", "not enough memory")
    return isinstance(exc, (out_of_memory_error(), MemoryError)) or isinstance(exc, RuntimeError) and any(
        s in str(exc) for s in said)


def available_memory() -> int | None:
    """Bytes of memory a new allocation can take: /proc/meminfo's MemAvailable (os.sysconf's free pages where there
    is none), lowered to what a cgroup v2 limit leaves; None where the system does not say."""
    free = None
    try:
        with open("/proc/meminfo") as f:
            free = next((int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")), None)
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    try:  # a container's limit, which MemAvailable (the host's) does not show
        with open("/sys/fs/cgroup/memory.max") as f, open("/sys/fs/cgroup/memory.current") as g:
            limit = f.read().strip()
            if limit != "max":
                free = min(free, int(limit) - int(g.read()))
    except (OSError, ValueError):
        pass
    return max(0, free)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; an unavailable device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise I2IError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise I2IError(f"device '{name}' requested but CUDA is not available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise I2IError(f"device '{name}' does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    if device.type not in ("cpu", "cuda") and not _available(device.type):
        raise I2IError(f"device '{name}' is not available here; use {usable_devices()}")
    return device


def _available(kind: str) -> bool:
    """Whether this torch can run on device type ``kind`` here (mps, xpu, ...: ``torch.<kind>.is_available()``)."""
    backend = getattr(torch.backends, kind, None) if kind == "mps" else getattr(torch, kind, None)
    check = getattr(backend, "is_available", None)
    try:
        return bool(check()) if callable(check) else False
    except Exception:  # a backend that cannot even say
        return False


def usable_devices() -> str:
    """The --device values that work on this machine, for error messages."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda", "cuda:N"]
    names += [kind for kind in ("mps", "xpu") if _available(kind)]
    return ", ".join(names[:-1]) + f" or {names[-1]}"


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity; all of them where the system does not say)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def _cpu_times() -> dict[int, tuple[int, int]]:
    """Each CPU's (total, idle) time in ticks so far, from /proc/stat (idle includes waiting for I/O)."""
    times = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                times[int(name[3:])] = (sum(ticks), ticks[3] + ticks[4])
    return times


def busy_cpus(seconds: float = 0.25) -> float:
    """How many of :func:`allowed_cpus` other processes keep busy, measured over ``seconds`` (this process's own
    use in that time taken off); 0 where the system does not say (no /proc/stat)."""
    try:
        before, own, wall = _cpu_times(), time.process_time(), time.perf_counter()
        time.sleep(seconds)
        after, own, wall = _cpu_times(), time.process_time() - own, time.perf_counter() - wall
    except (OSError, ValueError, IndexError):
        return 0.0
    busy = 0.0
    for cpu in allowed_cpus():
        if cpu in before and cpu in after and (total := after[cpu][0] - before[cpu][0]) > 0:
            busy += 1 - (after[cpu][1] - before[cpu][1]) / total
    return max(0.0, busy - own / wall)


def cpu_threads(requested: int | None) -> int:
    """The intra-op thread count for a run: ``requested`` when given; torch's when ``OMP_NUM_THREADS`` is set;
    otherwise torch's default (at most one per allowed CPU) in proportion to the allowed CPUs that other processes
    leave idle, at least 1. Threads sharing busy cores wait on each other at every operation: on 2 cores with other
    work running, a training step ran 3.4 times slower on 2 threads than on 1 (benchmarks/threads.py; 30 times in
    the run that found it). For load that comes after the choice, i2i's import shortens how long idle threads spin
    (``GOMP_SPINCOUNT``, see i2i/__init__.py): 1.9 times torch's default speed then, the same on a quiet machine."""
    if requested is not None:
        return requested
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    allowed = len(allowed_cpus())
    cores = max(1, min(_TORCH_THREADS, allowed))
    return max(1, min(cores, round(cores * (1 - busy_cpus() / allowed))))


def apply_cpu_threads(requested: int | None) -> int:
    """Set torch's intra-op threads to :func:`cpu_threads` and return the count in force. The automatic choice is
    made once per process, and not at all where ``OMP_NUM_THREADS`` is set or the process has set another count
    itself (``torch.set_num_threads`` since i2i's import)."""
    global _automatic
    current = torch.get_num_threads()
    if requested is None and (os.environ.get("OMP_NUM_THREADS") or current not in (_TORCH_THREADS, _automatic)):
        return current
    if requested is None:
        if _automatic is None:
            _automatic = cpu_threads(None)
        requested = _automatic
    torch.set_num_threads(requested)
    return requested
