"""Stopping long jobs cleanly: the first Ctrl-C / SIGTERM becomes a flag the job checks at a safe point (between
training steps, between video frames); the job then raises ``Interrupted``, which the CLI reports in one line. A
second Ctrl-C stops the job at once (its cleanup still runs) and becomes an ``Interrupted`` that says so."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: what a second Ctrl-C does, unless the job words it itself
ABORTED = "interrupted again: stopped at once, without saving; files saved before are kept"


class Interrupted(Exception):
    """A job stopped by Ctrl-C / SIGTERM at a safe point; the CLI exits with 130."""


class _Abort(KeyboardInterrupt):
    """A second Ctrl-C, raised wherever the job is (a KeyboardInterrupt, so that no ``except Exception`` stops it)."""


@contextmanager
def stop_requests(aborted: str = ABORTED) -> Iterator[dict[str, bool]]:
    """Turn the first Ctrl-C / SIGTERM into ``flag["stop"]``; a second Ctrl-C aborts at once and leaves the block as
    ``Interrupted(aborted)``: one line saying what that means for the job's output. Outside the main thread (where
    signal handlers cannot be set) the flag never rises."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"] and signum == signal.SIGINT:
            raise _Abort
        flag["stop"] = True

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    except _Abort:
        raise Interrupted(aborted) from None
    finally:
        for s, h in old.items():
            signal.signal(s, h)
