"""`i2i report`: the self-contained HTML page of a training run, for any run folder (old ones included)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import I2IError
from .base import app, cli_errors, out


@app.command("report")
@cli_errors
def report_cmd(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="the run folder (the --out of `i2i train`)"),
    output: Path = typer.Option(None, "-o", "--output", metavar="FILE",
                                help="where to write the page (default RUN_DIR/report.html)"),
) -> None:
    """(Re)write a run's report.html: samples, losses, validation, learning rates, speed, settings, provenance."""
    from ..evaluate import check_report_path
    from ..report import REPORT, write_report
    from ..training.run_folder import is_run

    if not run_dir.exists():
        raise I2IError(f"run folder not found: {run_dir}; give the --out folder of an `i2i train` run")
    if not run_dir.is_dir():
        raise I2IError(f"{run_dir} is a file, not a run folder; give the --out folder of an `i2i train` run")
    if not is_run(run_dir):
        raise I2IError(f"{run_dir} is not an i2i training run (no log.jsonl or checkpoints/last.pt of one); give the "
                       f"--out folder of an `i2i train` run")
    target = output if output is not None else run_dir / REPORT
    check_report_path(target, "-o", "report.html")
    out.print(f"wrote {write_report(run_dir, out=target)}", highlight=False, markup=False, soft_wrap=True)
