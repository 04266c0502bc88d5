"""The application object, the console, and the one mechanism that turns every user error into one line."""

from __future__ import annotations

import errno
import functools
import os
import sys
import time
import warnings
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..errors import I2IError, first_line, warn

#: options that may be given without their value (``--stabilize`` = ``--stabilize 0.6``): name -> implied value
OPTIONAL_VALUES: dict[str, str] = {}


def optional_value(option: str, implied: float) -> float:
    """Let ``option`` (a number) be given without a value, meaning ``implied``; returns ``implied``."""
    OPTIONAL_VALUES[option] = f"{implied:g}"
    return implied


def _is_number(arg: str) -> bool:
    try:
        float(arg)
    except ValueError:
        return False
    return True


class _Command(typer.core.TyperCommand):
    """A command whose usage line and argument rows name arguments as users write them (``INPUTS...``, ``SRC``,
    ``[KIND]``), not in Typer's notation (``{inputs}...``, ``inputs... <list[str]>``), and whose
    :data:`OPTIONAL_VALUES` options may come without their value."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        own = {name for param in self.params for name in getattr(param, "opts", ())} & OPTIONAL_VALUES.keys()
        end = args.index("--") if "--" in args else len(args)  # after --, every word is an argument
        args = [f"{arg}={OPTIONAL_VALUES[arg]}" if i < end and arg in own and (
                    i + 1 == end or not _is_number(args[i + 1])) else arg for i, arg in enumerate(args)]
        return super().parse_args(ctx, args)

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
    help="i2i: image-to-image translation (CycleGAN, pix2pix, CUT and plugins).",
    context_settings={"help_option_names": ["-h", "--help"]},  # -h on `i2i` and on every command
)


out = Console()


err = Console(stderr=True)


def cli_errors(fn):
    """Turn I2IError, a refused path (OSError) or an interruption into one line on stderr and an exit code (2 for
    errors, 130 for Ctrl-C), and any other exception (a bug) into a line naming whose code raised, its traceback
    saved to a file (exit 1: :mod:`i2i.bugs`); Python warnings (e.g. a training image found corrupt) are one
    ``warning:`` line each, and OpenCV's own warnings about such files are not printed."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..device import out_of_memory, out_of_memory_error
        from ..interrupts import Interrupted

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
            from ..bugs import describe
            from ..plugins import ENTRY_POINT_GROUP

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
    from ..distributed import hand_to_launcher

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


def _version(value: bool) -> None:
    if value:
        out.print(f"i2i {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True)) -> None:
    """i2i: image-to-image translation (CycleGAN, pix2pix, CUT and plugins)."""


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
