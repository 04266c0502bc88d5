"""Stopping long jobs cleanly: the first Ctrl-C / SIGTERM becomes a flag the job checks at a safe point (between
training steps, between video frames); the job then raises ``Interrupted``, which the CLI reports in one line."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(Exception):
    """A job stopped by Ctrl-C / SIGTERM at a safe point; the CLI exits with 130."""


@contextmanager
def stop_requests() -> Iterator[dict[str, bool]]:
    """Turn the first Ctrl-C / SIGTERM into ``flag["stop"]``; a second Ctrl-C aborts at once. Outside the main
    thread (where signal handlers cannot be set) the flag never rises."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["stop"] = True

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)
