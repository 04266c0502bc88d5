"""`i2i video`: applying a trained generator to a video, streamed, with its audio."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from ..errors import I2IError, warn
from ..flow import FLOW_HELP
from ..temporal import DEFAULT_STRENGTH, REPORT_FLOW, STABILIZE_FLOW, TemporalOptions
from .base import app, cli_errors, err, optional_value, out

STRENGTH = optional_value("--stabilize", DEFAULT_STRENGTH)


@app.command("video")
@cli_errors
def video_cmd(
    src: Path = typer.Argument(..., help="input video (any format OpenCV/ffmpeg decodes)"),
    ckpt: Path = typer.Option(..., "--ckpt", help="exported generator (a run's G.pt, G_AB.pt, ...)"),
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
    stabilize: float = typer.Option(None, "--stabilize", metavar="[STRENGTH]",
                                    help=f"remove flicker: blend each output with the previous one, warped along "
                                         f"the input's optical flow, where the picture was visible before; STRENGTH "
                                         f"in [0, 1), the share of the past (default {DEFAULT_STRENGTH})"),
    method: str = typer.Option("flow", "--stabilize-method", help="with --stabilize: flow (blend along the optical "
                               "flow; measured best), norm (smooth the instance-norm statistics), or both"),
    report: bool = typer.Option(False, "--report", help="measure flicker: the warping error (Lai et al. 2018) of "
                                                       "the output beside the input's own"),
    flow: str = typer.Option(STABILIZE_FLOW, "--flow", help=f"the optical flow --stabilize follows: {FLOW_HELP}"),
    report_flow: str = typer.Option(REPORT_FLOW, "--report-flow", help="the optical flow the warping error of "
                                    "--report is measured with (kept the same to compare reports)"),
    json_path: Path = typer.Option(None, "--json", help="also write the result (frames, fps, warping errors with "
                                                        "--report) as JSON"),
) -> None:
    """Translate a video frame by frame, keeping its frame rate, size and (with ffmpeg) its audio; optionally
    stabilised over time and measured for flicker."""
    import json

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from ..device import resolve_device
    from ..evaluate import check_report_path
    from ..files import atomic_write
    from ..flow import check_flow
    from ..translate import Translator
    from ..video import output_path, translate_video
    from ..video_encoder import ffmpeg_path
    from ..video_source import check_part, probe, quiet_native_logs

    options = TemporalOptions(stabilize, method, report, flow, report_flow)
    options.check()
    if json_path is not None:
        check_report_path(json_path)
    if flow != STABILIZE_FLOW and stabilize is None:
        warn("--flow is the flow --stabilize follows, which is not given")
    if report_flow != REPORT_FLOW and not report:
        warn("--report-flow is the flow --report measures with, which is not given")

    quiet_native_logs()  # before the first capture opens
    if batch_size < 1 or (size is not None and size < 1):
        raise I2IError("--batch-size and --size must be >= 1")
    check_part(start, duration)  # the cheap checks before the model loads
    info = probe(src)
    dst = output_path(src, dst or src.with_name(f"{src.stem}_i2i.mp4"))  # checked before the model loads
    for spec in (flow, report_flow):  # a bad --flow fails before the model loads (RAFT's weights load later, once)
        check_flow(spec)
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
                                 on_warning=lambda m: warn(m, progress.console), temporal=options)
    sound = "with the input's audio" if result.audio else "silent"
    held = result.written - result.frames  # repeats of pictures the input holds for several frame times
    count = f"{max(result.written, result.frames)} frames" + (
        f" ({result.frames} translated, {held} repeated where the input holds a picture)" if held > 0 else "")
    out.print(f"[green]wrote[/] {escape(str(result.output))}: {count} in {result.seconds:.1f}s "
              f"({result.fps:.1f} frames/s), {sound}", highlight=False, soft_wrap=True)
    if result.report is not None:
        out.print(consistency_line(result.report), highlight=False, soft_wrap=True)
    if json_path is not None:
        text = json.dumps({"input": str(src), "output": str(result.output), "checkpoint": str(ckpt),
                           "frames": result.frames, "written": result.written, "seconds": round(result.seconds, 3),
                           "fps": round(result.fps, 3), "audio": result.audio,
                           "stabilize": None if stabilize is None else {"strength": stabilize, "method": method},
                           "flow": flow if stabilize is not None else None,
                           "report_flow": report_flow if report else None, **(result.report or {})},
                          indent=2)
        atomic_write(json_path, lambda tmp: tmp.write_text(text))
        out.print(f"wrote {json_path}", highlight=False, markup=False)


def consistency_line(report: dict) -> str:
    """``warping error 0.00123 (input 0.00045, 2.7×) over 99 frame pairs`` (lower: less flicker)."""
    got, own = report["warping_error_output"], report["warping_error_input"]
    if got is None:
        return "warping error: not measured (fewer than two frames)"
    ratio = f", {got / own:.2f}× the input's" if own else ""
    return (f"warping error {got:.5f} (input {own:.5f}{ratio}) over {report['frame_pairs']} frame pairs; lower "
            f"means less flicker")
