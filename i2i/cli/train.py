"""`i2i train`: the command's options, the table mapping them to config keys, and one process's run."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from ..config import FLAG_KEYS, method_name, parse_overrides, resolve
from ..errors import I2IError, first_line, warn
from ..plugins import load_plugins
from ..presets import demo_name, load_preset
from .base import RANK_GRACE_S, _leave, app, cli_errors, err, out

#: keys that may differ when resuming (everything else must match the checkpoint, or the run would not continue
#: exactly: the schedule, the seed and the data order included)
RESUMABLE = {"train.max_steps", "train.device", "train.checkpoint_every", "train.sample_every", "train.log_every",
             "train.precision", "train.channels_last", "train.compile", "train.cudnn_benchmark", "train.fused_adam",
             "train.threads",
             "validation", "data.workers", "data.root"}


def flag_values(options: dict[str, Any]) -> dict[str, Any]:
    """The values of the options that set config keys (:data:`i2i.config.FLAG_KEYS`), by option name, from the
    command's arguments (``--compile/--no-compile`` is the parameter ``compile_nets``; ``--strict`` counts only
    when given)."""
    renamed = {"compile": "compile_nets"}
    values = {k: options.get(renamed.get(k, k)) for k in FLAG_KEYS}
    values["strict"] = values["strict"] or None
    return values


@app.command()
@cli_errors
def train(
    overrides: list[str] = typer.Argument(None, metavar="KEY=VALUE...",
                                          help="config overrides, e.g. generator.ngf=32 train.seed=1"),
    method: str = typer.Option(None, "--method", "-m", help="training method (see `i2i list method`)"),
    data: str = typer.Option(None, "--data", metavar="DIR",
                             help="dataset folder, in the layout of the method's dataset (`i2i list dataset`); omit "
                                  "for data.root or the method's demo"),
    out_dir: str = typer.Option(None, "--out", "-o", metavar="DIR", help="run folder (default runs/METHOD-TIME)"),
    config: str = typer.Option(None, "--config", "-c", metavar="FILE",
                               help="YAML config file or preset name (a relative data.root in it is relative to "
                                    "the file's folder; --data and data.root=DIR are relative to the current one)"),
    epochs: int = typer.Option(None, "--epochs", help="epochs at the initial learning rate"),
    decay_epochs: int = typer.Option(None, "--decay-epochs", help="epochs of linear decay towards zero"),
    max_steps: int = typer.Option(None, "--max-steps", help="stop after this many iterations"),
    batch_size: int = typer.Option(None, "--batch-size"),
    size: int = typer.Option(None, "--size", help="crop size"),
    load_size: int = typer.Option(None, "--load-size", help="resize to this before cropping"),
    device: str = typer.Option(None, "--device", help="auto (CUDA when available), cpu, cuda, cuda:N"),
    seed: int = typer.Option(None, "--seed"),
    workers: int = typer.Option(None, "--workers", help="data-loading processes"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out exactly where it stopped"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the run already in --out"),
    strict: bool = typer.Option(False, "--strict", help="fail on unreadable images instead of skipping them"),
    precision: str = typer.Option(None, "--precision",
                                  help="auto (default: bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16 (autocast)"),
    compile_nets: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the networks"),
    channels_last: bool = typer.Option(None, "--channels-last/--no-channels-last",
                                       help="NHWC memory format (default: on for CUDA)"),
    nproc: int = typer.Option(None, "--nproc", help="processes (GPUs) on this machine: launches torchrun"),
) -> None:
    """Train a method on a dataset folder (or, with no data, on the method's demo)."""
    options = dict(locals())
    from ..config import flag_conflict
    from ..device import resolve_device
    from ..distributed import LAUNCHED_ENV, LOST_PEER_EXIT, launch, lost_peer, setup, teardown

    for flag, value in (("--out", out_dir), ("--data", data)):
        if value is not None and not value.strip():
            raise I2IError(f"{flag} is empty; pass a folder, or leave the option out")
    if nproc is not None and nproc < 1:
        raise I2IError(f"--nproc must be at least 1 (the processes to start on this machine), got {nproc}")
    given = flag_values(options)
    names = {"compile": "--compile" if compile_nets else "--no-compile",
             "channels_last": "--channels-last" if channels_last else "--no-channels-last", "strict": "--strict"}
    flag_conflict({FLAG_KEYS[k]: names.get(k) or f"--{k.replace('_', '-')} {v}" for k, v in given.items()
                   if v is not None}, overrides or [])
    if device is not None:
        resolve_device(device)  # a device this machine lacks: one line here, before any process starts
    options.update(out_dir=None if out_dir is None else Path(out_dir), data=None if data is None else Path(data))
    if nproc is not None and nproc > 1 and "WORLD_SIZE" not in os.environ:
        args, skip = [], False
        for arg in sys.argv[1:]:
            if skip or arg.startswith("--nproc="):
                skip = False
                continue
            skip = arg == "--nproc"
            if not skip:
                args.append(arg)
        raise typer.Exit(launch(nproc, args))
    distributed, rank_device = setup(device)
    try:
        _train(distributed, rank_device, **options)
        if distributed.enabled and os.environ.get(LAUNCHED_ENV) == "1":  # `--nproc`, finished: leave as on an error
            distributed.barrier()  # every rank is done; rank 0 first, the others after it (see _error)
            if distributed.rank != 0:
                time.sleep(RANK_GRACE_S)
            _leave(0)
    except RuntimeError as exc:
        if not (distributed.enabled and lost_peer(exc)):
            raise
        if os.environ.get(LAUNCHED_ENV) == "1":  # `--nproc`: the launcher names the process that stopped
            _leave(LOST_PEER_EXIT)
        raise I2IError(f"another process of this training job stopped ({first_line(exc, 100)}); the run keeps its "
                       f"last checkpoint: continue it with --resume") from None
    finally:
        teardown(distributed)


def _train(distributed: Any, rank_device: str | None, *, overrides: list[str] | None, method: str | None,
           data: Path | None, out_dir: Path | None, config: str | None, epochs: int | None,
           decay_epochs: int | None, max_steps: int | None, batch_size: int | None, size: int | None,
           load_size: int | None, device: str | None, seed: int | None, workers: int | None, resume: bool,
           overwrite: bool, strict: bool, precision: str | None, compile_nets: bool | None,
           channels_last: bool | None, nproc: int | None) -> None:
    """`i2i train` in one process (of a torchrun job, possibly)."""
    from ..config import flag_layer
    from ..config_edits import changed_keys, ignored_edits
    from ..config_files import absolute_root, data_root
    from ..training import Trainer, check_providers, prepare_run_dir

    main = distributed.main

    plugins = load_plugins()
    registry = plugins.registry
    options, flags = flag_layer(flag_values(locals()))
    options.setdefault("data", {})
    cli_layers = [options, absolute_root(parse_overrides(overrides or []))]  # data.root: from the current folder

    if resume:
        if out_dir is None:
            raise I2IError("--resume needs --out RUN_DIR (the run to continue)")
        if overwrite:
            raise I2IError("--resume continues the run in --out and --overwrite replaces it; pass one of them")
        if config is not None:
            raise I2IError("--config cannot be combined with --resume: the run continues with the settings saved in "
                           "its checkpoint; change those that may change with key=value (e.g. train.max_steps=N)")
        state = prepare_run_dir(out_dir, resume=True, overwrite=False)
        changed = check_providers(state, registry, out_dir / "checkpoints" / "last.pt")
        if changed and main:
            warn(changed)
        if data is not None:
            options["data"]["root"] = os.path.abspath(data)
        base = state["config"]
        if method is not None and method != base["method"]["name"]:
            raise I2IError(f"this run trains method '{base['method']['name']}', not '{method}'; drop --method")
        cfg = resolve(registry, base["method"]["name"], [base, *cli_layers], flags)
        saved = resolve(registry, base["method"]["name"], [base]).to_dict()  # defaults added since, filled in

        def resumable(key: str) -> bool:
            return any(key == r or key.startswith(r + ".") for r in RESUMABLE)

        bad = [k for k in changed_keys(saved, cfg.to_dict()) if not resumable(k)]
        if bad:
            raise I2IError(f"cannot change {', '.join(bad)} when resuming; start a new run with another --out")
        root = cfg.data.root
        if data is None and data_root(cli_layers[1]) is None and root and not Path(root).is_dir():
            where = "" if Path(root).is_absolute() else f" (relative to the current folder, {Path.cwd()})"
            raise I2IError(f"this run's data folder {root}{where} does not exist; pass --data DIR to resume on the "
                           f"same images where they are now")
        note = ignored_edits(out_dir / "config.yaml", registry, base, saved, cfg.to_dict(), resumable) if main else None
        if note:
            warn(note)
    else:
        layers: list[dict[str, Any]] = []
        config_layer = load_preset(config, registry) if config else {}
        demo_data = data is None and not any(data_root(layer) for layer in (config_layer, *cli_layers))
        named = [n for layer in (config_layer, *cli_layers) if (n := method_name(layer)) is not None]
        name = method or (named[-1] if named else None)
        demo = None
        if demo_data:
            if not name:
                raise I2IError("pass --method NAME (see `i2i list method`), and --data DIR or nothing for the demo")
            registry.get("method", name)
            demo = registry.entries["preset"].get(demo_name(name))
            if demo is None:
                raise I2IError(f"method '{name}' has no demo (no preset {demo_name(name)}); pass --data DIR")
            layers.append(load_preset(demo.name, registry))
        if config:
            layers.append(config_layer)
        cfg = resolve(registry, method, [*layers, *cli_layers], flags)
        if out_dir is None:
            out_dir = Path("runs") / f"{cfg.method.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        state = prepare_run_dir(out_dir, resume=False, overwrite=overwrite)
        if demo is not None and main:
            err.print(f"[cyan]No --data given: training on the demo of {escape(name)}[/] ({escape(demo.description)}; "
                      f"{escape(str(cfg.data.root))})", highlight=False, soft_wrap=True)
        elif data is not None:
            cfg.data.root = os.path.abspath(data)

    trainer = Trainer(cfg, registry, out_dir, state=state, overwrite=overwrite, console=err if main else None,
                      distributed=distributed, device=rank_device)
    verb = "resuming" if resume else "training"
    procs = f" × {distributed.world} processes" if distributed.enabled else ""
    if resume and trainer.step >= trainer.total_steps:  # nothing left: say so instead of a 300→300 run
        if main:
            out.print(f"[green]complete[/]: {escape(_complete(trainer, out_dir))}", highlight=False, soft_wrap=True)
        return
    if not main:
        trainer.run()
        return
    err.print(
        f"{verb} {cfg.method.name}: {' '.join(f'{role}={c.name}' for role, c in cfg.networks.items())} on "
        f"{trainer.device}{procs}, "
        f"{len(trainer.dataset)} images/epoch, steps {trainer.step}→{trainer.total_steps} → {out_dir}",
        highlight=False, soft_wrap=True, markup=False,
    )
    result = trainer.run()
    out.print(f"[green]done[/]: {result.step} steps in {escape(str(result.out_dir))}", highlight=False)
    out.print(f"  samples:    {result.samples}", highlight=False, soft_wrap=True, markup=False)
    if (result.out_dir / "report.html").is_file():
        out.print(f"  report:     {result.out_dir / 'report.html'} (open it in a browser)", highlight=False,
                  soft_wrap=True, markup=False)
    best = trainer.best if trainer.best.get("metric") else None
    for name, path in result.exports.items():
        out.print(f"  generator:  {path}  ({name})", highlight=False, soft_wrap=True, markup=False)
        kept = path.with_name(f"{path.stem}_best{path.suffix}")
        if best is not None and kept.is_file():
            out.print(f"  best:       {kept}  ({name} at its best validation {best['metric']}, {best['value']:.4g} at "
                      f"step {best['step']})", highlight=False, soft_wrap=True, markup=False)
    out.print(f"  checkpoint: {result.out_dir / 'checkpoints' / 'last.pt'} (continue with --resume)",
              highlight=False, soft_wrap=True, markup=False)


def _complete(trainer: Any, out_dir: Path) -> str:
    """What a finished run is, and how it can train longer."""
    t, steps, schedule = trainer.cfg.train, trainer.total_steps, trainer.schedule_steps
    if steps < schedule:
        return (f"{out_dir} has trained all {steps} steps asked for; to train longer, resume with --max-steps N "
                f"(N > {steps}, up to the schedule's {schedule})")
    return (f"{out_dir} has trained its whole schedule ({schedule} steps: {t.epochs} epochs + {t.decay_epochs} decay "
            f"epochs); a schedule cannot be extended on resume: start a new run with more --epochs or --decay-epochs")
