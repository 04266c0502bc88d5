"""`i2i translate`: applying a trained generator to images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.markup import escape

from ..errors import I2IError, warn
from .base import app, cli_errors, err, out


@app.command("translate")
@cli_errors
def translate_cmd(
    inputs: list[str] = typer.Argument(..., help="image files, folders or glob patterns"),
    ckpt: Path = typer.Option(..., "--ckpt", help="exported generator (a run's G.pt, G_AB.pt, ...)"),
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
    tile: int = typer.Option(None, "--tile", help="translate in N-px tiles with blended overlaps; default: automatic "
                             "when an image would not fit"),
    overlap: int = typer.Option(None, "--overlap", help="px of context around each tile (default: the generator's "
                                "receptive field)"),
    tile_stats: str = typer.Option("lowres", "--tile-stats", help="instance-norm statistics of tiles: lowres (from "
                                   "a low-resolution pass; approximate) or exact (the whole image's; ~L/2 more "
                                   "passes for L norm layers)"),
) -> None:
    """Translate images with a trained generator; each keeps its resolution, names mirror the inputs (one image
    file may be written to the file -o names, its format from the suffix)."""
    from collections import deque

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..device import resolve_device
    from ..images import (
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
    from ..interrupts import Interrupted, stop_requests
    from ..tiling import check_options
    from ..translate import Translator, collect_inputs, output_paths
    from ..translate import side_by_side as compare

    if batch_size < 1:
        raise I2IError("--batch-size must be >= 1")
    if size is not None and size < 1:
        raise I2IError("--size must be >= 1")
    check_options(tile, overlap, tile_stats, train_mode)  # before the model loads
    translator = Translator.from_checkpoint(ckpt, resolve_device(device), size, precision=precision,
                                            train_mode=train_mode, tile=tile, overlap=overlap, tile_stats=tile_stats)
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
        translator.on_warning = lambda text: warn(text, progress.console)  # tiling's notes, above the progress bar
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
