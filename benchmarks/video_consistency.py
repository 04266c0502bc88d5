"""Temporal consistency on real footage: `i2i video --stabilize` against frame-by-frame translation.

For each video (vtest.avi: a street scene, static camera, 768×576 at 10 fps; Megamind.avi: animation with camera
moves and cuts, 720×528 at 24 fps) and a trained generator, in one run:

* the warping error (Lai et al. 2018) of the input, of the frame-by-frame output and of each stabilised output,
  with the flow ``i2i video --report`` uses (DIS, medium preset; the stabiliser follows DIS's fast preset by
  default) and, as a cross-check that the gain is no artefact of one flow, with another one (DIS, ultrafast preset:
  coarser, other patches);
* the mean per-frame PSNR of each stabilised output to the frame-by-frame one (how much the picture changes);
* frames/s of `translate_video` with the default `--stabilize` against plain, end to end (decode, translate,
  encode), measured alternately for several rounds and compared by their medians;
* peak memory of a stabilised run on a clip and on one 4× longer, each in a fresh process (goal: equal).

Goal: warping error <= 0.6× frame-by-frame's at >= 0.8× its frames/s.

    python benchmarks/video_consistency.py [--ckpt G.pt] [--seconds 20] [--size 256] [--rounds 3]

Without ``--ckpt`` it trains the CycleGAN demo once (`i2i train --method cyclegan`, ~1.5 min on 2 cores) into the
i2i cache and uses its G_AB.pt.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from i2i.temporal import DEFAULT_STRENGTH, Temporal, TemporalOptions, warping_errors  # noqa: E402
from i2i.translate import Translator  # noqa: E402
from i2i.video import network_frame, translate_video  # noqa: E402
from i2i_components.demo import cache_dir  # noqa: E402

DATA = Path("/usr/share/doc/opencv-doc/examples/data")
VIDEOS = [DATA / "vtest.avi", DATA / "Megamind.avi"]
#: (method, strength, flow) of the stabilised outputs measured
CONFIGS = [("flow", 0.5, "dis:fast"), ("flow", 0.7, "dis:fast"), ("flow", 0.8, "dis:fast"), ("flow", 0.9, "dis:fast"),
           ("flow", 0.7, "dis"), ("norm", 0.7, "dis:fast"), ("both", 0.7, "dis:fast")]


def trained_generator() -> Path:
    run = cache_dir() / "bench-cyclegan-demo"
    if not (run / "G_AB.pt").is_file():
        subprocess.run(["i2i", "train", "--method", "cyclegan", "-o", str(run), "--overwrite"], check=True)
    return run / "G_AB.pt"


def frames(src: Path, translator: Translator, seconds: float) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(str(src))
    limit = round(seconds * (cap.get(cv2.CAP_PROP_FPS) or 25))
    for _ in range(limit):
        ok, frame = cap.read()
        if not ok:
            break
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    cap.release()


def translated(src: Path, translator: Translator, seconds: float, options: TemporalOptions | None,
               batch: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(inputs at the generator's size, outputs), as `i2i video` computes them (same steps, no encoding)."""
    temporal = Temporal(options or TemporalOptions(), translator.G, translator.device)
    inputs, outputs, pending = [], [], []

    def flush() -> None:
        temporal.before_batch(seen for _, seen in pending)
        with temporal.generating(translator.G):
            out = translator.forward(torch.stack([p.tensor for p, _ in pending])).cpu()
        for o, (prep, seen) in zip(out, pending, strict=True):
            outputs.append(temporal.on_result(translator.finish(o, prep), seen))
        pending.clear()

    for image in frames(src, translator, seconds):
        prep = translator.prepare(image)
        inputs.append(network_frame(prep))
        pending.append((prep, temporal.on_read(inputs[-1]) if temporal.active else None))
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return inputs, outputs


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255 ** 2 / max(mse, 1e-12))


def quality(src: Path, translator: Translator, seconds: float) -> None:
    inputs, plain = translated(src, translator, seconds, None)
    own, base = warping_errors(inputs, plain)
    own_x, base_x = warping_errors(inputs, plain, flow="dis:ultrafast")
    print(f"  {len(inputs)} frames at {inputs[0].shape[1]}×{inputs[0].shape[0]}; warping error ×1e4 (DIS medium | "
          f"ultrafast): input {own * 1e4:.3f} | {own_x * 1e4:.3f}, frame by frame {base * 1e4:.3f} | "
          f"{base_x * 1e4:.3f}")
    for method, strength, flow in CONFIGS:
        _, out = translated(src, translator, seconds, TemporalOptions(strength, method, flow=flow))
        _, err = warping_errors(inputs, out)
        _, err_x = warping_errors(inputs, out, flow="dis:ultrafast")
        p = statistics.mean(psnr(a, b) for a, b in zip(out, plain, strict=True))
        print(f"  --stabilize {strength} --stabilize-method {method:<4} --flow {flow:<8}: warping error "
              f"{err * 1e4:.3f} (**{err / base:.2f}×**; ultrafast flow {err_x / base_x:.2f}×), "
              f"PSNR to frame by frame {p:.2f} dB")


def speed(src: Path, translator: Translator, seconds: float, rounds: int, tmp: Path) -> None:
    runs: dict[str, list[float]] = {"plain": [], "stabilize": []}
    for _ in range(rounds):
        for name, options in (("plain", None), ("stabilize", TemporalOptions(DEFAULT_STRENGTH))):
            result = translate_video(src, tmp / f"{name}.mp4", translator, 4, duration=seconds, temporal=options,
                                     on_warning=lambda m: None)
            runs[name].append(result.fps)
    plain, steady = statistics.median(runs["plain"]), statistics.median(runs["stabilize"])
    print(f"  frames/s end to end: plain {plain:.2f} ({', '.join(f'{f:.2f}' for f in runs['plain'])}), "
          f"--stabilize {steady:.2f} ({', '.join(f'{f:.2f}' for f in runs['stabilize'])}): **{steady / plain:.2f}×** "
          f"(goal >= 0.8)")


def memory_child(src: Path, ckpt: Path, seconds: float, size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        result = translate_video(src, Path(tmp) / "o.mp4", Translator.from_checkpoint(ckpt, "cpu", size), 4,
                                 duration=seconds, temporal=TemporalOptions(DEFAULT_STRENGTH, report=True),
                                 on_warning=lambda m: None)
    print(json.dumps({"frames": result.frames, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def memory(src: Path, ckpt: Path, seconds: float, size: int) -> None:
    peaks = []
    for s in (seconds / 4, seconds):
        res = subprocess.run([sys.executable, __file__, "--child", str(src), str(ckpt), str(s), "--size", str(size)],
                             capture_output=True, text=True, check=True)
        peaks.append(json.loads(res.stdout.strip().splitlines()[-1]))
    a, b = peaks
    print(f"  peak memory with --stabilize --report: {a['peak_mb']:.0f} MB for {a['frames']} frames, "
          f"{b['peak_mb']:.0f} MB for {b['frames']} frames: {b['peak_mb'] / a['peak_mb']:.3f}×")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, help="a trained generator (default: the CycleGAN demo's, trained once)")
    ap.add_argument("--seconds", type=float, default=20.0, help="of each video")
    ap.add_argument("--size", type=int, default=256, help="short side the frames are translated at")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        memory_child(Path(args.child[0]), Path(args.child[1]), float(args.child[2]), args.size)
        return
    ckpt = args.ckpt or trained_generator()
    translator = Translator.from_checkpoint(ckpt, "cpu", args.size)
    print(f"generator {ckpt}, {torch.get_num_threads()} torch threads, short side {args.size} px, first "
          f"{args.seconds:g} s of each video")
    with tempfile.TemporaryDirectory() as tmp:
        for src in VIDEOS:
            if not src.is_file():
                print(f"{src.name}: not installed (apt-get install opencv-doc); skipped")
                continue
            print(f"{src.name}:")
            quality(src, translator, args.seconds)
            speed(src, translator, args.seconds, args.rounds, Path(tmp))
            memory(src, ckpt, args.seconds, args.size)


if __name__ == "__main__":
    main()
