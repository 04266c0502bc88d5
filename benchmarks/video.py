"""Video throughput and memory: `i2i video` end to end versus the generator's forward pass alone.

Prints, for the same frames and generator in one run: forward-only frames/s, end-to-end frames/s and their ratio
(goal >= 0.9 on CPU), and the peak resident memory of `translate_video` on a short clip and a 4x longer one
(goal: equal within 10 %). Each memory figure comes from a fresh process. The two speeds are measured alternately
for several rounds and compared by their medians, since a shared machine's speed drifts by more than the gap.

    python benchmarks/video.py [--frames 160] [--size 256] [--ngf 16] [--batch-size 4] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from i2i import load_registry  # noqa: E402
from i2i.checkpoint import atomic_save, generator_record  # noqa: E402
from i2i.translate import Translator  # noqa: E402
from i2i.video import translate_video  # noqa: E402

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def make_clip(path: Path, frames: int, size: int) -> Path:
    """``frames`` frames of real footage (vtest.avi when installed, else panning over a demo photo)."""
    src = cv2.VideoCapture(str(VTEST)) if VTEST.is_file() else None
    photo = cv2.imread(str(ROOT / "plugins" / "i2i_components" / "data" / "demo" / "rocket.jpg"))
    h = size
    w = round(size * 4 / 3) // 4 * 4
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
    for i in range(frames):
        ok, frame = src.read() if src is not None else (False, None)
        if not ok:
            x = (i * 3) % max(1, photo.shape[1] - 288)
            frame = photo[:, x : x + 288 * 4 // 3] if photo.shape[1] > 384 else photo
        writer.write(cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA))
    writer.release()
    return path


def make_generator(path: Path, ngf: int) -> Path:
    registry = load_registry()
    entry = registry.get("generator", "resnet_6blocks")
    params = entry.validate({"ngf": ngf})
    net = entry.build(3, 3, **params)
    atomic_save(generator_record(net, entry.name, params, 3, 3, {"generator_plugin": entry.plugin}), path)
    return path


def forward_only(clip: Path, translator: Translator, batch: int) -> tuple[int, float]:
    cap = cv2.VideoCapture(str(clip))
    tensors = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        tensors.append(translator.prepare(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).tensor)
    translator.forward(torch.stack(tensors[:batch])).cpu()  # warm-up, finished before the clock starts
    t0 = time.perf_counter()
    for i in range(0, len(tensors), batch):
        translator.forward(torch.stack(tensors[i : i + batch])).cpu()
    return len(tensors), time.perf_counter() - t0


def peak_memory_child(clip: Path, ckpt: Path, batch: int, device: str) -> None:
    out = clip.with_name(clip.stem + "_out.mp4")
    result = translate_video(clip, out, Translator.from_checkpoint(ckpt, device), batch)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"frames": result.frames, "peak_mb": peak_mb}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=160)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--ngf", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="alternating forward-only / end-to-end measurements")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        peak_memory_child(Path(args.child[0]), Path(args.child[1]), args.batch_size, args.device)
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = make_generator(tmp / "G.pt", args.ngf)
        short = make_clip(tmp / "short.avi", args.frames, args.size)
        long = make_clip(tmp / "long.avi", 4 * args.frames, args.size)
        translator = Translator.from_checkpoint(ckpt, args.device)
        fwd, e2e = [], []
        for _ in range(args.rounds):
            n, t_fwd = forward_only(short, translator, args.batch_size)
            t0 = time.perf_counter()
            result = translate_video(short, tmp / "e2e.mp4", translator, args.batch_size)
            fwd.append(n / t_fwd)
            e2e.append(result.frames / (time.perf_counter() - t0))
        fwd_fps, e2e_fps = statistics.median(fwd), statistics.median(e2e)
        source = "vtest.avi" if VTEST.is_file() else "photo pan"
        print(f"device {args.device}, {torch.get_num_threads()} torch threads, resnet_6blocks ngf {args.ngf}, "
              f"{args.size} px short side, batch {args.batch_size}, source: {source}")
        print(f"forward only : {fwd_fps:8.2f} frames/s  ({n} frames; median of {args.rounds}: "
              f"{', '.join(f'{f:.2f}' for f in fwd)})")
        print(f"i2i video    : {e2e_fps:8.2f} frames/s  ({result.frames} frames, decode + translate + encode; "
              f"{', '.join(f'{f:.2f}' for f in e2e)})")
        print(f"ratio        : {e2e_fps / fwd_fps:8.3f}  (goal >= 0.9)")
        peaks = {}
        for name, clip in (("short", short), ("long", long)):
            res = subprocess.run([sys.executable, __file__, "--child", str(clip), str(ckpt), "--batch-size",
                                  str(args.batch_size), "--device", args.device], capture_output=True, text=True,
                                 check=True)
            peaks[name] = json.loads(res.stdout.strip().splitlines()[-1])
        s, lg = peaks["short"], peaks["long"]
        print(f"peak memory  : {s['peak_mb']:.0f} MB for {s['frames']} frames, {lg['peak_mb']:.0f} MB for "
              f"{lg['frames']} frames, ratio {lg['peak_mb'] / s['peak_mb']:.3f} (goal within 10 %)")


if __name__ == "__main__":
    main()
