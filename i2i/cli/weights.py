"""`i2i import-official`, `i2i export` and `i2i inspect`: generator files in and out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from .. import __version__
from ..errors import I2IError
from ..plugins import load_plugins
from .base import app, cli_errors, out


@app.command("import-official")
@cli_errors
def import_official(
    src: Path = typer.Argument(..., help="official generator weights, e.g. latest_net_G_A.pth"),
    out_path: Path = typer.Option(..., "--out", "-o", help="i2i generator checkpoint to write (G.pt)"),
    net_g: str = typer.Option(None, "--netG", help="architecture (inferred from the file when omitted)"),
    ngf: int = typer.Option(None, "--ngf", help="generator width (inferred when omitted)"),
    norm: str = typer.Option(None, "--norm", help="instance or batch (inferred when omitted)"),
    dropout: bool = typer.Option(None, "--dropout/--no-dropout", help="generator built with dropout"),
    importer: str = typer.Option("official_cyclegan", "--from", help="importer (see `i2i list importer`)"),
) -> None:
    """Convert another project's generator weights into a self-describing i2i checkpoint."""
    from ..checkpoint import (
        GENERATOR_FORMAT,
        TRAIN_FORMAT,
        atomic_save,
        generator_record,
        safe_load,
        state_dict_mismatch,
    )

    if out_path.resolve() == src.resolve():
        raise I2IError(f"-o {out_path} is the input file; choose another output path")
    registry = load_plugins().registry
    entry = registry.get("importer", importer)
    state = safe_load(src, "weights file")
    kind = state.get("format") if isinstance(state, dict) else None
    if kind == GENERATOR_FORMAT:
        raise I2IError(f"{src} is already an i2i generator checkpoint: use it directly with --ckpt {src} "
                       f"(import-official converts other projects' weights)")
    if kind == TRAIN_FORMAT:
        raise I2IError(f"{src} is an i2i training checkpoint: use a generator exported beside it (RUN_DIR/G.pt, "
                       f"RUN_DIR/G_AB.pt, ...) directly with --ckpt")
    stated = {"netG": net_g, "ngf": ngf, "norm": norm, "dropout": dropout}
    name, params, cin, cout, sd = entry.build(state, **{k: v for k, v in stated.items() if v is not None})
    gen = registry.get("generator", name)
    net = gen.build(cin, cout, **params)
    try:
        net.load_state_dict(sd)
    except RuntimeError as exc:
        raise I2IError(f"{src} does not fit {name} {params}: {state_dict_mismatch(exc)}") from None
    provenance = {"method": "imported", "importer": importer, "importer_plugin": entry.plugin,
                  "generator_plugin": gen.plugin, "generator_distribution": gen.distribution,
                  "imported_from": src.name,
                  "versions": {"i2i": __version__, entry.plugin: entry.version, gen.plugin: gen.version}}
    atomic_save(generator_record(net, name, gen.validate(params), cin, cout, provenance), out_path)
    out.print(f"[green]wrote[/] {escape(f'{out_path}: {name} {params}, {cin}→{cout} channels')}", highlight=False,
              soft_wrap=True)


@app.command("export")
@cli_errors
def export_cmd(
    ckpt: Path = typer.Option(..., "--ckpt", help="exported generator (G.pt)"),
    fmt: str = typer.Option(None, "--format", "-f", help="onnx or torchscript (default: from the file's suffix, "
                                                          ".onnx or .pt)"),
    out_path: Path = typer.Option(..., "--out", "-o", help="file to write"),
    opset: int = typer.Option(None, "--opset", help="ONNX opset (default 17)"),
) -> None:
    """Export a generator to ONNX or TorchScript (dynamic batch, height and width)."""
    from ..checkpoint import load_generator
    from ..export import check_export, export

    fmt, opset = check_export(fmt, opset, out_path)
    if out_path.resolve() == ckpt.resolve():
        raise I2IError(f"-o {out_path} is the input checkpoint; choose another output path")
    net = load_generator(ckpt)
    export(net, out_path, fmt, opset)
    io = net.i2i_info["io"]
    out.print(f"[green]wrote[/] {escape(str(out_path))} ({fmt}; inputs N×{io['in_channels']}×H×W in [-1, 1], "
              f"H and W multiples of {io['size_multiple']})", highlight=False, soft_wrap=True)


@app.command("inspect")
@cli_errors
def inspect_cmd(ckpt: Path = typer.Argument(..., help="exported generator (G.pt) or training checkpoint (last.pt)")
                ) -> None:
    """Show a generator's architecture, channels, size multiple, provenance and size; or a training checkpoint's
    step, method, networks, settings and the run's exports."""
    from ..checkpoint import TRAIN_FORMAT, read_generator, safe_load

    record = safe_load(ckpt, "checkpoint")
    if isinstance(record, dict) and record.get("format") == TRAIN_FORMAT:
        rows = _training_rows(ckpt, record)
    else:
        rows = _generator_rows(ckpt, read_generator(ckpt))
    table = Table(title=escape(str(ckpt)), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")  # long paths wrap on a narrow terminal, never cut
    for field, value in rows:  # names, paths and values from the file: shown as they are, never as markup
        table.add_row(field, escape(value))
    out.print(table)


def _shown(value: Any) -> str:
    """A value as a person writes it: lists as ``A, B``, mappings as ``k=v, ...``."""
    if isinstance(value, (list, tuple)):
        return ", ".join(_shown(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_shown(v)}" for k, v in value.items()) or "-"
    return str(value)


def _generator_rows(ckpt: Path, record: dict[str, Any]) -> list[tuple[str, str]]:
    comp, io, prov = record["component"], record["io"], record.get("provenance") or {}
    n_params = sum(t.numel() for t in record["state_dict"].values() if t.is_floating_point())
    rows = [("architecture", f"{comp['name']} (plugin {prov.get('generator_plugin', '?')})"),
            ("parameters", _shown(comp["params"])),
            ("channels", f"{io['in_channels']} → {io['out_channels']}"),
            ("value range", f"{io['range'][0]:g} .. {io['range'][1]:g}"),
            ("size multiple", str(io["size_multiple"])),
            ("weights", f"{n_params:,} parameters ({ckpt.stat().st_size / 1e6:.1f} MB file)")]
    rows += [(key, _shown(prov[key])) for key in ("method", "network", "domains", "step", "importer",
                                                  "imported_from") if key in prov]
    if prov.get("versions"):
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in prov["versions"].items())))
    return rows


def _training_rows(ckpt: Path, record: dict[str, Any]) -> list[tuple[str, str]]:
    """A training checkpoint: where the run is, what trains, how, and what it exported (beside ``checkpoints/``)."""
    from ..runlog import settings_records

    cfg = record.get("config") or {}
    method, train, data = cfg.get("method") or {}, cfg.get("train") or {}, cfg.get("data") or {}
    nets = cfg.get("networks") or {}
    rows = [("kind", f"training checkpoint ({record['format']}; resume with i2i train --out RUN_DIR --resume)"),
            ("method", f"{method.get('name', '?')}" + (f" ({_shown(method['params'])})" if method.get("params")
                                                       else "")),
            ("step", f"{record.get('step', '?')}" + (f" of max {train['max_steps']}" if train.get("max_steps")
                                                     else "")),
            ("networks", "; ".join(f"{role}={(c or {}).get('name', '?')}" + (
                f" ({_shown(c['params'])})" if (c or {}).get("params") else "") for role, c in nets.items()) or "-"),
            ("data", f"{data.get('name', '?')} at {data.get('root', '?')}, batch {data.get('batch_size', '?')}")]
    if train:
        rows.append(("schedule", _shown({k: train[k] for k in ("epochs", "decay_epochs", "lr", "seed")
                                          if k in train})))
    if record.get("settings"):
        rows.append(("settings", _shown(record["settings"])))
    if (record.get("best") or {}).get("metric"):
        best = record["best"]
        rows.append(("best", f"{best['metric']} {best['value']:.4g} at step {best['step']}"))
    if record.get("run_id"):
        rows.append(("run id", str(record["run_id"])))
    run = ckpt.resolve().parent.parent
    logged = settings_records(run / "log.jsonl")
    names = logged[-1].get("exports", []) if logged else []
    present = [n for n in names if (run / n).is_file()]
    rows.append(("run folder", str(run)))
    rows.append(("exports", ", ".join(present) if present else "none yet"))
    if record.get("versions"):
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in record["versions"].items())))
    return rows
