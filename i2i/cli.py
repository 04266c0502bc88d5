"""The ``i2i`` command line (Typer + rich). Every user error ends in one line and a non-zero exit."""

from __future__ import annotations

import errno
import functools
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .config import method_name, parse_overrides, resolve
from .errors import I2IError, first_line, warn
from .plugins import load_plugins
from .presets import demo_name, load_preset
from .registry import KINDS


class _Command(typer.core.TyperCommand):
    """A command whose usage line and argument rows name arguments as users write them (``INPUTS...``, ``SRC``,
    ``[KIND]``), not in Typer's notation (``{inputs}...``, ``inputs... <list[str]>``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:  # also what click's errors name ("Missing argument 'INPUTS...'")
            if param.param_type_name == "argument":
                param.metavar = self._name(param)

    @staticmethod
    def _name(param: Any) -> str:
        name = param.metavar or param.name.upper()
        return name if param.nargs == 1 or name.endswith("...") else f"{name}..."

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = self._name(param)
                base = name.removesuffix("...")
                pieces.append(name if param.required else f"[{base}]{name[len(base):]}")
            else:
                pieces += param.get_usage_pieces(ctx)
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        rows: dict[str, list[tuple[str, str]]] = {"argument": [], "option": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and param.param_type_name in rows:
                name = self._name(param) if param.param_type_name == "argument" else record[0]
                rows[param.param_type_name].append((name, record[1]))
        for title, kind in (("Arguments", "argument"), ("Options", "option")):
            if rows[kind]:
                with formatter.section(title):
                    formatter.write_dl(rows[kind])


class _App(typer.Typer):
    """Every command a :class:`_Command`."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["cls"] = kwargs.get("cls") or _Command
        return super().command(*args, **kwargs)


app = _App(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    help="i2i: image-to-image translation (CycleGAN and plugins).",
    context_settings={"help_option_names": ["-h", "--help"]},  # -h on `i2i` and on every command
)
out = Console()
err = Console(stderr=True)

#: keys that may differ when resuming (everything else must match the checkpoint, or the run would not continue
#: exactly: the schedule, the seed and the data order included)
RESUMABLE = {"train.max_steps", "train.device", "train.checkpoint_every", "train.sample_every", "train.log_every",
             "train.precision", "train.channels_last", "train.compile", "train.cudnn_benchmark", "train.fused_adam",
             "validation", "data.workers", "data.root"}


def cli_errors(fn):
    """Turn I2IError, a refused path (OSError) or an interruption into one line on stderr and an exit code (2 for
    errors, 130 for Ctrl-C), and any other exception (a bug) into a line naming whose code raised, its traceback
    saved to a file (exit 1: :mod:`i2i.bugs`); Python warnings (e.g. a training image found corrupt) are one
    ``warning:`` line each, and OpenCV's own warnings about such files are not printed."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .device import out_of_memory, out_of_memory_error
        from .interrupts import Interrupted

        quiet = os.environ.get("RANK", "0") != "0"  # in a torchrun job, rank 0 alone reports interruptions
        import cv2

        shown, cv_level = warnings.showwarning, cv2.utils.logging.getLogLevel()
        warnings.showwarning = _one_line_warning  # also in data-loading processes forked from here
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # i2i words its own warnings
        try:
            return fn(*args, **kwargs)
        except I2IError as exc:
            _error(one_line(exc))
        except out_of_memory_error() as exc:
            _error(f"out of GPU memory ({first_line(exc, 100)}); lower --batch-size or --size, or use --precision bf16")
        except OSError as exc:  # a path the OS refused (permissions, a folder where a file goes, a full disk)
            if exc.errno == errno.ENOMEM:  # e.g. starting a data-loading process
                _error(f"out of memory ({exc.strerror}); use smaller images (--size N), batches (--batch-size) or "
                       f"fewer --workers, or a machine with more memory")
            where = f" {exc.filename}" if exc.filename else ""
            _error(f"cannot use{where}: {exc.strerror or exc}; check the path, its permissions and free space")
        except Interrupted as exc:
            if not quiet:
                err.print(f"[yellow]{escape(str(exc))}[/]", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        except KeyboardInterrupt:
            if not quiet:
                err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except Exception as exc:
            if hasattr(exc, "exit_code"):  # typer.Exit, and click's usage errors (main() words those)
                raise
            if out_of_memory(exc):  # the CPU's allocator (the GPU's is above)
                _error(f"out of memory ({first_line(exc, 100)}); use smaller images (--size N) or batches "
                       f"(--batch-size), or a machine with more memory")
            from .bugs import describe
            from .plugins import ENTRY_POINT_GROUP

            _error(describe(exc, ENTRY_POINT_GROUP, __version__), code=1)
        finally:
            warnings.showwarning = shown
            cv2.utils.logging.setLogLevel(cv_level)

    return wrapper


#: how long a rank other than 0 of a plain torchrun job waits before reporting an error (see :func:`_error`)
RANK_GRACE_S = 2.0


def _error(text: str, code: int = 2) -> NoReturn:
    """One ``error:`` line, then exit ``code`` (2: a problem the user can fix; 1: a bug).

    Under ``--nproc`` a rank hands its line to the launcher (torchelastic's error file), which prints rank 0's line,
    or else the first failed rank's, once every rank has stopped (ranks other than 0 still wait before exiting: two
    tearing the process group down at once can abort). Under a plain
    torchrun a rank other than 0 first gives rank 0 time to report (ranks usually meet the same problem, and the
    launcher stops every rank as soon as one exits, which would cut rank 0 off before its line); it reports only an
    error that rank 0 did not stop on, naming its rank."""
    from .distributed import hand_to_launcher

    rank = os.environ.get("RANK", "0")
    if hand_to_launcher(text):
        if rank != "0":  # exits one after the other: ranks tearing the process group down at once can abort
            time.sleep(RANK_GRACE_S)
        _leave(code)
    if rank != "0":
        time.sleep(RANK_GRACE_S)
        text = f"(rank {rank}) {text}"
    err.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code) from None


def _leave(code: int) -> NoReturn:
    """End a rank of a ``--nproc`` job now (its streams flushed, its error handed to the launcher): the process
    group's gloo threads, torn down while a peer is exiting or destroyed at interpreter exit, can abort the process
    with a stray "terminate called without an active exception" line."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for the CLI: the message alone, without the source line."""
    warn(str(message))


def one_line(exc: BaseException) -> str:
    """The message of an I2IError, also when a DataLoader worker wrapped it with its traceback."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split("I2IError: ", 1)[-1]
    return text


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
    from .config import FLAG_KEYS, flag_conflict
    from .device import resolve_device
    from .distributed import LAUNCHED_ENV, LOST_PEER_EXIT, launch, lost_peer, setup, teardown

    for flag, value in (("--out", out_dir), ("--data", data)):
        if value is not None and not value.strip():
            raise I2IError(f"{flag} is empty; pass a folder, or leave the option out")
    if nproc is not None and nproc < 1:
        raise I2IError(f"--nproc must be at least 1 (the processes to start on this machine), got {nproc}")
    given = {"method": method, "data": data, "epochs": epochs, "decay_epochs": decay_epochs, "max_steps": max_steps,
             "device": device, "seed": seed, "precision": precision, "compile": compile_nets,
             "channels_last": channels_last, "batch_size": batch_size, "workers": workers, "size": size,
             "load_size": load_size, "strict": strict or None}
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
    from .config import absolute_root, changed_keys, data_root, ignored_edits
    from .training import Trainer, check_providers, prepare_run_dir

    main = distributed.main

    plugins = load_plugins()
    registry = plugins.registry
    options: dict[str, Any] = {"train": {}, "data": {"params": {}}}
    for key, value in {"epochs": epochs, "decay_epochs": decay_epochs, "max_steps": max_steps,
                       "device": device, "seed": seed, "precision": precision, "compile": compile_nets,
                       "channels_last": channels_last}.items():
        if value is not None:
            options["train"][key] = value
    for key, value in {"batch_size": batch_size, "workers": workers}.items():
        if value is not None:
            options["data"][key] = value
    for key, value in {"crop_size": size, "load_size": load_size}.items():
        if value is not None:
            options["data"]["params"][key] = value
    if strict:
        options["data"]["params"]["strict"] = True
    flags = {k: f for k, f, v in (("crop_size", "--size", size), ("load_size", "--load-size", load_size),
                                  ("strict", "--strict", strict or None)) if v is not None}
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
    for name, path in result.exports.items():
        out.print(f"  generator:  {path}  ({name})", highlight=False, soft_wrap=True, markup=False)
    out.print(f"  checkpoint: {result.out_dir / 'checkpoints' / 'last.pt'} (continue with --resume)",
              highlight=False, soft_wrap=True, markup=False)


@app.command("list")
@cli_errors
def list_components(kind: str = typer.Argument(None, help=f"one of: {', '.join(KINDS)}")) -> None:
    """List registered components with one-line descriptions (and parameters when KIND is given)."""
    registry = load_plugins().registry
    if kind is not None:
        kind = next((k for k in (kind, kind.removesuffix("s"), kind.removesuffix("es")) if k in KINDS), kind)
        if kind not in KINDS:
            from .errors import did_you_mean

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


@app.command("translate")
@cli_errors
def translate_cmd(
    inputs: list[str] = typer.Argument(..., help="image files, folders or glob patterns"),
    ckpt: Path = typer.Option(..., "--ckpt", help="exported generator (G_AB.pt / G_BA.pt)"),
    out_path: Path = typer.Option(..., "--out", "-o", help="folder for the translated images, or the image file to "
                                                           "write (e.g. out.jpg) when translating one image file"),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="include sub-folders of input folders"),
    size: int = typer.Option(None, "--size", help="resize the shorter side to this first (default: keep size)"),
    batch_size: int = typer.Option(4, "--batch-size", help="images of equal size translated together"),
    device: str = typer.Option("auto", "--device"),
    side_by_side: bool = typer.Option(False, "--side-by-side", help="write input|output comparison images"),
    precision: str = typer.Option("auto", "--precision", help="auto (fp16 on CUDA, fp32 on CPU), fp32, bf16, fp16"),
    train_mode: bool = typer.Option(False, "--train-mode", help="run the generator as the official pix2pix test "
                                    "script does: dropout on, batch statistics; default: eval mode"),
) -> None:
    """Translate images with a trained generator; each keeps its resolution, names mirror the inputs (one image
    file may be written to the file -o names, its format from the suffix)."""
    from collections import deque

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .device import resolve_device
    from .images import (
        UnusableImage,
        first_names,
        holds_alpha,
        read_image,
        readable,
        samples,
        stored_type,
        unreadable_reason,
        write_image,
    )
    from .interrupts import Interrupted, stop_requests
    from .translate import Translator, collect_inputs, output_paths
    from .translate import side_by_side as compare

    if batch_size < 1:
        raise I2IError("--batch-size must be >= 1")
    if size is not None and size < 1:
        raise I2IError("--size must be >= 1")
    translator = Translator.from_checkpoint(ckpt, resolve_device(device), size, precision=precision,
                                            train_mode=train_mode)
    skipped: list[Path] = []  # as the user knows them: relative to their input folder
    files = collect_inputs(inputs, recursive, warn=warn, skipped=skipped)
    targets = output_paths(inputs, files, out_path)
    sources = {src.resolve() for src, _ in files}
    for (src, _), target in zip(files, targets, strict=True):
        if target.is_dir():
            raise I2IError(f"the output of {src} would be {target}, which is a folder; move it or choose another --out")
        if target.resolve() == src.resolve():
            raise I2IError(f"writing {target} would overwrite that input; choose another --out")
        if target.resolve() in sources:
            raise I2IError(f"the output of {src} would be {target}, which is one of the inputs (an earlier run's "
                           f"output inside the input folder?); choose an --out outside the inputs")
        if not readable(src):  # named on the command line (a folder's unreadable files were skipped)
            raise I2IError(unreadable_reason(src))
    translator.check_outputs(targets, named=targets == [out_path])
    loaded: dict[Path, np.ndarray] = {}
    queued: deque[tuple[Path, Path]] = deque()  # (input, output) of the images read and not yet written
    unusable: list[str] = []  # why images whose header looked fine could not be used (e.g. a truncated file)
    held: list[str] = []  # their warnings until an image is read: when none can be, one error says it all

    def read_all():
        for (src, rel), target in zip(files, targets, strict=True):
            try:
                img = read_image(src)
            except UnusableImage as exc:
                unusable.append(str(exc))
                skipped.append(rel)
                note = f"skipped: {exc}"
                if queued or written:  # an image was read, so the run goes on: say it now
                    warn(note, progress.console)
                else:
                    held.append(note)
                progress.advance(task)
                continue
            while held:
                warn(held.pop(0), progress.console)
            if side_by_side:
                loaded[src] = img
            queued.append((src, target))
            yield img

    written, alpha_dropped, depth_dropped = 0, False, False
    aborted = "interrupted again: stopped at once; the images written before are complete (each is written whole)"
    with stop_requests(aborted) as stop, Progress(
            TextColumn("[bold]translate"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err,
            disable=not err.is_terminal) as progress:
        task = progress.add_task("translate", total=len(files))
        for result in translator.translate_arrays(read_all(), batch_size):
            src, target = queued.popleft()
            if side_by_side:
                result = compare(loaded.pop(src), result)
            if not alpha_dropped and result.ndim == 3 and result.shape[2] in (2, 4) and not holds_alpha(
                    target.suffix.lower()):
                alpha_dropped = True
                warn(f"{target.suffix} has no transparency: {target.name} is written without the alpha channel of "
                     f"{src.name} (name the output .png to keep it)", progress.console)
            if not depth_dropped and result.dtype != np.uint8 and (kept := stored_type(target.suffix, result)) != (
                    result.dtype):
                depth_dropped = True
                warn(f"{target.suffix} cannot hold {samples(result.dtype)}: {target.name} is written in "
                     f"{samples(kept)}, not in the {samples(result.dtype)} of {src.name} (name the output "
                     f"{'.tiff' if result.dtype.kind == 'f' else '.png or .tiff'} to keep them)", progress.console)
            write_image(target, result)
            written += 1
            progress.advance(task)
            if stop["stop"] and written + len(unusable) < len(files):  # Ctrl-C / SIGTERM: after a whole image
                raise Interrupted(f"interrupted after {written} of {len(files)} image(s), written to {out_path}; "
                                  f"the others were not translated")
    if not written:  # no image could be used: nothing was written
        if len(unusable) == 1:
            raise I2IError(unusable[0])
        raise I2IError(f"none of the {len(unusable)} images could be used: {unusable[0]} (and {len(unusable) - 1} "
                       f"more)")
    note = f"; skipped {len(skipped)} file(s): {first_names([str(p) for p in skipped])}" if skipped else ""
    out.print(f"[green]translated[/] {escape(f'{written} image(s) with {ckpt} → {out_path}{note}')}",
              highlight=False, soft_wrap=True)


@app.command("video")
@cli_errors
def video_cmd(
    src: Path = typer.Argument(..., help="input video (any format OpenCV/ffmpeg decodes)"),
    ckpt: Path = typer.Option(..., "--ckpt", help="exported generator (G_AB.pt / G_BA.pt)"),
    dst: Path = typer.Option(None, "--out", "-o", help="output video, or a folder for FOLDER/INPUT.mp4 (default: "
                                                        "INPUT_i2i.mp4 beside the input)"),
    size: int = typer.Option(None, "--size", help="resize the shorter side to this first"),
    batch_size: int = typer.Option(4, "--batch-size"),
    device: str = typer.Option("auto", "--device"),
    start: float = typer.Option(0.0, "--start", help="start at this many seconds"),
    duration: float = typer.Option(None, "--duration", help="process this many seconds"),
    side_by_side: bool = typer.Option(False, "--side-by-side", help="write input|output frames"),
    no_audio: bool = typer.Option(False, "--no-audio", help="do not copy the input's audio track"),
    precision: str = typer.Option("auto", "--precision", help="auto (fp16 on CUDA, fp32 on CPU), fp32, bf16, fp16"),
) -> None:
    """Translate a video frame by frame, keeping its frame rate, size and (with ffmpeg) its audio."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from .device import resolve_device
    from .translate import Translator
    from .video import check_part, ffmpeg_path, output_path, probe, quiet_native_logs, translate_video

    quiet_native_logs()  # before the first capture opens
    if batch_size < 1 or (size is not None and size < 1):
        raise I2IError("--batch-size and --size must be >= 1")
    check_part(start, duration)  # the cheap checks before the model loads
    info = probe(src)
    dst = output_path(src, dst or src.with_name(f"{src.stem}_i2i.mp4"))  # checked before the model loads
    translator = Translator.from_checkpoint(ckpt, resolve_device(device), size, precision=precision)
    if not no_audio and ffmpeg_path() is None:
        warn("ffmpeg not found (pip install imageio-ffmpeg): the output will be silent")
    total = info.frames - round(start * info.fps) if info.frames else None
    if duration and total is not None:
        total = min(total, round(duration * info.fps))
    with Progress(TextColumn("[bold]video"), BarColumn(), TextColumn("{task.completed}/{task.total} frames"),
                  TextColumn("{task.fields[fps]}"), TimeRemainingColumn(),
                  console=err, disable=not err.is_terminal) as progress:
        task = progress.add_task("video", total=total, fps="")

        def on_frames(n: int) -> None:
            progress.advance(task, n)
            speed = progress.tasks[0].speed
            progress.update(task, fps=f"{speed:.1f} frames/s" if speed else "")

        result = translate_video(src, dst, translator, batch_size, start, duration, side_by_side,
                                 audio=not no_audio, on_frames=on_frames,
                                 on_warning=lambda m: warn(m, progress.console))
    sound = "with the input's audio" if result.audio else "silent"
    held = result.written - result.frames  # repeats of pictures the input holds for several frame times
    count = f"{max(result.written, result.frames)} frames" + (
        f" ({result.frames} translated, {held} repeated where the input holds a picture)" if held > 0 else "")
    out.print(f"[green]wrote[/] {escape(str(result.output))}: {count} in {result.seconds:.1f}s "
              f"({result.frames / max(result.seconds, 1e-9):.1f} frames/s), {sound}", highlight=False, soft_wrap=True)


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
    from .checkpoint import (
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
        raise I2IError(f"{src} is an i2i training checkpoint: use the generator exported beside it (RUN_DIR/G_AB.pt "
                       f"or G_BA.pt) directly with --ckpt")
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
    from .checkpoint import load_generator
    from .export import check_export, export

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
def inspect_cmd(ckpt: Path = typer.Argument(..., help="exported generator (G.pt)")) -> None:
    """Show a generator checkpoint's architecture, channels, size multiple, provenance and size."""
    from .checkpoint import read_generator

    record = read_generator(ckpt)
    comp, io, prov = record["component"], record["io"], record.get("provenance") or {}
    n_params = sum(t.numel() for t in record["state_dict"].values() if t.is_floating_point())
    rows = [("architecture", f"{comp['name']} (plugin {prov.get('generator_plugin', '?')})"),
            ("parameters", ", ".join(f"{k}={v}" for k, v in comp["params"].items()) or "-"),
            ("channels", f"{io['in_channels']} → {io['out_channels']}"),
            ("value range", f"{io['range'][0]:g} .. {io['range'][1]:g}"),
            ("size multiple", str(io["size_multiple"])),
            ("weights", f"{n_params:,} parameters ({ckpt.stat().st_size / 1e6:.1f} MB file)")]
    rows += [(key, str(prov[key])) for key in ("method", "network", "domains", "step", "importer", "imported_from")
             if key in prov]
    if prov.get("versions"):
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in prov["versions"].items())))
    table = Table(title=escape(str(ckpt)), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for field, value in rows:  # names, paths and values from the file: shown as they are, never as markup
        table.add_row(field, escape(value))
    out.print(table)


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
    split: str = typer.Option("test", "--split", help="with --data: the held-out split (e.g. test, val)"),
    dataset: str = typer.Option(None, "--dataset", help="with --data: the dataset kind (default: the one the "
                                                        "generator was trained on; see `i2i list dataset`)"),
    metrics: str = typer.Option(None, "--metrics", help="comma-separated (default: fid,kid with --target; psnr,"
                                                         "ssim,mae with --truth or --data); see `i2i list metric`"),
    json_path: Path = typer.Option(None, "--json", help="also write the report as JSON"),
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

    from .checkpoint import read_generator
    from .device import resolve_device
    from .evaluate import check_report_path, evaluate
    from .features import build_extractor
    from .heldout import generator_pairs
    from .translate import Translator

    if size is not None and size < 1:
        raise I2IError("--size must be >= 1")
    if data is not None and (source is not None or truth is not None):
        raise I2IError("--data scores a dataset's held-out pairs, --source/--truth folders; give one or the other")
    if data is None and source is None:
        raise I2IError("nothing to score: give --data DIR (a dataset's held-out pairs) or --source DIR")
    if json_path is not None:
        check_report_path(json_path)
    registry = load_plugins().registry
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    from .metric import metric_specs

    metric_specs(registry, names or [], "--metrics")  # NAME or NAME:key=value: a typo fails before the model loads
    pairs = generator_pairs(read_generator(ckpt), registry, data, split, dataset) if data is not None else None
    translator = Translator.from_checkpoint(ckpt, resolve_device(device), size, registry, precision=precision)
    report = evaluate(translator, registry, source, target, truth, names,
                      lambda: build_extractor(features, feature_weights, inception_weights), strict_sizes,
                      pairs=pairs)
    if data is not None:
        source = Path(f"{data} ({split} split)")
    for note in report.warnings:
        warn(note)
    counts = report.counts
    partly = truth is not None and counts["truth"] != counts["source"]
    paired = f" ({counts['truth']} with their truth)" if partly else ""
    table = Table(title=escape(f"{ckpt.name} on {counts['source']} image(s) of {source}{paired}"))
    for col in ("metric", "translated", "identity (untranslated)", "better than identity"):
        table.add_column(col)
    for name, row in report.scores.items():
        better = (row["translated"] > row["identity"]) == row["higher_is_better"]
        arrow = "↑" if row["higher_is_better"] else "↓"
        table.add_row(escape(f"{name} {arrow}"), f"{row['translated']:.4f}", f"{row['identity']:.4f}",
                      "[green]yes[/]" if better else "[red]no[/]")
    out.print(table)
    if report.extractor:
        out.print(f"features: {report.extractor}", highlight=False, markup=False)
    if json_path is not None:
        from .files import atomic_write

        text = json.dumps({"checkpoint": str(ckpt), **report.to_dict()}, indent=2)
        atomic_write(json_path, lambda tmp: tmp.write_text(text))
        out.print(f"wrote {json_path}", highlight=False, markup=False)


def _version(value: bool) -> None:
    if value:
        out.print(f"i2i {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True)) -> None:
    """i2i: image-to-image translation (CycleGAN and plugins)."""


def main() -> None:
    """Console entry point: usage errors (a bad option value, an unknown command) are one line too."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click's usage errors (Typer may vendor click, so matched by their interface)
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `i2i`: the help is the answer
            out.print(exc.format_message(), highlight=False)
            sys.exit(0)
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "i2i"
        err.print(f"[bold red]error:[/] {escape(exc.format_message())} (see `{where} --help`)", highlight=False,
                  soft_wrap=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
