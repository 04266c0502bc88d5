"""`i2i eval`: scoring a generator beside the identity baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import I2IError, warn
from ..plugins import load_plugins
from .base import app, cli_errors, out


@app.command("eval")
@cli_errors
def eval_cmd(
    ckpt: Path = typer.Option(..., "--ckpt", help="exported generator (G.pt)"),
    source: Path = typer.Option(None, "--source", help="images to translate"),
    target: Path = typer.Option(None, "--target", help="real images of the target domain (FID, KID)"),
    truth: Path = typer.Option(None, "--truth", help="paired ground truth for --source, matched by file name"),
    data: Path = typer.Option(None, "--data", metavar="DIR",
                              help="a dataset folder: score the held-out pairs of its --split (instead of --source "
                                   "and --truth)"),
    split: str = typer.Option(None, "--split", help="with --data: the held-out split (default test; e.g. val)"),
    dataset: str = typer.Option(None, "--dataset", help="with --data: the dataset kind (default: the one the "
                                                        "generator was trained on; see `i2i list dataset`)"),
    direction: str = typer.Option(None, "--direction", help="with --data, for a generator that does not record its "
                                                            "domains (an imported one): AtoB or BtoA"),
    metrics: str = typer.Option(None, "--metrics", help="comma-separated NAME or NAME:key=value (default: fid,kid "
                                                         "with --target; psnr,ssim,mae with --truth or --data); see "
                                                         "`i2i list metric`"),
    json_path: Path = typer.Option(None, "--json", help="also write the report as JSON"),
    html_path: Path = typer.Option(None, "--html", metavar="FILE",
                                   help="also write a self-contained page of each image's source | output | truth "
                                        "with its paired scores beside identity, sortable (needs --truth or --data)"),
    features: str = typer.Option("inception", "--features", help="FID/KID features: inception or timm:NAME"),
    feature_weights: Path = typer.Option(None, "--feature-weights", help="local weights for --features timm:NAME"),
    inception_weights: Path = typer.Option(None, "--inception-weights", help="local InceptionV3 FID weights"),
    size: int = typer.Option(None, "--size", help="resize the source's shorter side before translating"),
    device: str = typer.Option("auto", "--device"),
    strict_sizes: bool = typer.Option(False, "--strict-sizes", help="fail if truth and output sizes differ"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 (the exact outputs), or auto (fp16 on CUDA), "
                                                               "bf16, fp16 for speed"),
) -> None:
    """Score a generator: FID/KID against --target, PSNR/SSIM/MAE against --truth (or the held-out pairs of a
    dataset's --split), each beside identity."""
    import json

    from ..checkpoint import read_generator
    from ..device import resolve_device
    from ..evaluate import check_report_path, evaluate
    from ..features import build_extractor
    from ..heldout import generator_pairs
    from ..translate import Translator

    if size is not None and size < 1:
        raise I2IError("--size must be >= 1")
    _check_sources(source, truth, data, {"--split": split, "--dataset": dataset, "--direction": direction})
    if json_path is not None:
        check_report_path(json_path)
    if html_path is not None:
        check_report_path(html_path, "--html", "report.html")
    registry = load_plugins().registry
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    from ..metric import metric_specs

    specs = metric_specs(registry, names or [], "--metrics")  # NAME or NAME:key=value: a typo fails before the model
    if html_path is not None:
        _check_html(registry, specs if names else None, truth is not None or data is not None)
    split = split or "test"
    pairs = (generator_pairs(read_generator(ckpt), registry, data, split, dataset, direction) if data is not None
             else None)
    translator = Translator.from_checkpoint(ckpt, resolve_device(device), size, registry, precision=precision)
    from ..report_page import PairThumbnails

    thumbs = PairThumbnails() if html_path is not None else None
    report = evaluate(translator, registry, source, target, truth, names,
                      lambda: build_extractor(features, feature_weights, inception_weights), strict_sizes,
                      pairs=pairs, per_image=thumbs is not None, on_pair=thumbs)
    if data is not None:
        source = Path(f"{data} ({split} split)")
    for note in report.warnings:
        warn(note)
    out.print(_table(ckpt, report, source, truth is not None))
    if report.extractor:
        out.print(f"features: {report.extractor}", highlight=False, markup=False)
    if json_path is not None:
        from ..files import atomic_write

        text = json.dumps({"checkpoint": str(ckpt), **report.to_dict()}, indent=2)
        atomic_write(json_path, lambda tmp: tmp.write_text(text))
        out.print(f"wrote {json_path}", highlight=False, markup=False)
    if thumbs is not None:
        _write_html(html_path, ckpt, report, source, thumbs.images)


def _check_html(registry: Any, specs: dict[str, Any] | None, paired_data: bool) -> None:
    """--html shows each image against its truth: it needs paired data and, among the metrics asked for (None: the
    defaults, paired ones with truth), a paired one."""
    from ..evaluate import needs_features

    if not paired_data:
        raise I2IError("--html shows each image's scores against its ground truth and needs paired metrics: pass "
                       "--truth DIR (or --data DIR) with psnr, ssim or mae")
    if specs is not None and all(needs_features(registry.get("metric", n).factory) for n in specs):
        raise I2IError(f"--html needs paired metrics (e.g. --metrics psnr,ssim,mae): {', '.join(specs)} score the "
                       f"whole set of outputs, not each image")


def _write_html(path: Path, ckpt: Path, report: Any, source: Path, thumbs: dict[str, tuple[str, str, str]]) -> None:
    """The per-image page of ``report`` (its paired scores), written atomically."""
    from ..files import atomic_write
    from ..report_page import eval_page

    notes = [*report.warnings, *([f"features: {report.extractor}"] if report.extractor else [])]
    dist = [f"{n} {row['translated']:.4f} (identity {row['identity']:.4f})" for n, row in report.scores.items()
            if not any(n in r["scores"] for r in report.images)]  # FID/KID: of the whole set only
    if dist:
        notes.append("scores of the whole set: " + ", ".join(dist))
    html = eval_page(f"{ckpt.name} on {report.counts['truth']} image(s) of {source}", report, thumbs, notes)
    atomic_write(path, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    out.print(f"wrote {path}", highlight=False, markup=False, soft_wrap=True)


def _check_sources(source: Path | None, truth: Path | None, data: Path | None, with_data: dict[str, Any]) -> None:
    """One kind of held-out data: folders (--source, with --truth/--target) or a dataset's split (--data, whose
    options mean nothing without it)."""
    if data is not None and (source is not None or truth is not None):
        raise I2IError("--data scores a dataset's held-out pairs, --source/--truth folders; give one or the other")
    if data is None and source is None:
        raise I2IError("nothing to score: give --data DIR (a dataset's held-out pairs) or --source DIR")
    given = [option for option, value in with_data.items() if value is not None]
    if data is None and given:
        raise I2IError(f"{given[0]} chooses among a dataset's held-out pairs and needs --data DIR; leave it out with "
                       f"--source")


def _table(ckpt: Path, report: Any, source: Path, truth_folder: bool) -> Table:
    """The report as a table: each metric, translated beside identity, and whether it beats identity."""
    counts = report.counts
    partly = truth_folder and counts["truth"] != counts["source"]
    paired = f" ({counts['truth']} with their truth)" if partly else ""
    table = Table(title=escape(f"{ckpt.name} on {counts['source']} image(s) of {source}{paired}"))
    for col in ("metric", "translated", "identity (untranslated)", "better than identity"):
        table.add_column(col)
    for name, row in report.scores.items():
        better = (row["translated"] > row["identity"]) == row["higher_is_better"]
        arrow = "↑" if row["higher_is_better"] else "↓"
        table.add_row(escape(f"{name} {arrow}"), f"{row['translated']:.4f}", f"{row['identity']:.4f}",
                      "[green]yes[/]" if better else "[red]no[/]")
    return table
