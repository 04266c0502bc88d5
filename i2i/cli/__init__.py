"""The ``i2i`` command line (Typer + rich), one module per command; every user error ends in one line and a
non-zero exit (:func:`i2i.cli.base.cli_errors`)."""

from __future__ import annotations

from . import evaluate, listing, report, serve, train, translate, video, weights  # noqa: F401  (register commands)
from .base import RANK_GRACE_S, app, cli_errors, err, main, one_line, out

__all__ = ["RANK_GRACE_S", "app", "cli_errors", "err", "main", "one_line", "out"]
