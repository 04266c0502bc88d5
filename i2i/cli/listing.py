"""`i2i list` and `i2i plugins`: what is installed."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import I2IError
from ..plugins import load_plugins
from ..registry import KINDS
from .base import app, cli_errors, err, out


@app.command("list")
@cli_errors
def list_components(kind: str = typer.Argument(None, help=f"one of: {', '.join(KINDS)}")) -> None:
    """List registered components with one-line descriptions (and parameters when KIND is given)."""
    registry = load_plugins().registry
    if kind is not None:
        kind = next((k for k in (kind, kind.removesuffix("s"), kind.removesuffix("es")) if k in KINDS), kind)
        if kind not in KINDS:
            from ..errors import did_you_mean

            raise I2IError(f"unknown component kind '{kind}'{did_you_mean(kind, KINDS)}; kinds: {', '.join(KINDS)}")
    table = Table(title="i2i components")
    for col in ("kind", "name", "plugin", "description"):
        table.add_column(col, overflow="fold")  # wrapped, never cut off (a pipe or CI log is 80 columns)
    if kind:
        table.add_column("parameters", overflow="fold")
    for e in registry.list(kind):
        row = [e.kind, e.name, e.plugin, e.description]
        if kind:
            row.append(", ".join(str(p) for p in e.parameters().values()))
        table.add_row(*map(escape, row))
    out.print(table)


@app.command()
@cli_errors
def plugins() -> None:
    """Show every plugin with its version, components and status."""
    loaded = load_plugins()
    table = Table(title="i2i plugins")
    for col in ("plugin", "version", "status", "components", "source"):
        table.add_column(col, overflow="fold")  # wrapped, never cut off: the status says why a plugin failed
    for info in loaded.infos.values():
        status = "[green]ok[/]" if info.status == "ok" else f"[red]{info.status}[/]: {escape(str(info.reason))}"
        if info.status in ("blocked", "empty", "off", "unknown"):
            status = f"[yellow]{info.status}[/]: {escape(str(info.reason))}"
        comps = ", ".join(f"{k}:{n}" for k, n in info.components) or "-"
        table.add_row(escape(info.name), escape(str(info.version)), status, escape(comps), escape(str(info.source)))
    if not loaded.infos:
        err.print("no plugins installed")
    out.print(table)
