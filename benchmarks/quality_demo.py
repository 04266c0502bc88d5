"""Demo quality check: train a method's demo preset, then score its first exported generator on the demo's held-out
pairs (the dataset's test split) against their true translation (PSNR, SSIM), beside the identity baseline.
Goal: the generator beats identity by >= 3 dB PSNR.

    python benchmarks/quality_demo.py [--method cyclegan|pix2pix|...] [--seconds S] [--out DIR] [i2i train args]

``--seconds S`` stops training after S seconds of wall-clock time (``train.max_seconds``-like: the run is
interrupted and its last state exported), so that methods can be compared at equal time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from i2i import load_generator, load_registry  # noqa: E402
from i2i.checkpoint import read_generator  # noqa: E402
from i2i.evaluate import evaluate  # noqa: E402
from i2i.heldout import generator_pairs  # noqa: E402
from i2i.runlog import settings_records  # noqa: E402
from i2i.translate import Translator  # noqa: E402


def train(method: str, out: Path, seconds: float | None, overrides: list[str]) -> float:
    """Run ``i2i train`` on the method's demo; with ``seconds``, interrupt it (SIGINT: it saves and exports) then.
    Returns the minutes it ran."""
    cmd = [sys.executable, "-m", "i2i", "train", "--method", method, "--out", str(out), "--overwrite", *overrides]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        proc.wait()
    if proc.returncode not in (0, 130):
        raise SystemExit(f"training failed with exit code {proc.returncode}")
    return (time.perf_counter() - t0) / 60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="cyclegan", help="method whose demo preset is trained")
    ap.add_argument("--seconds", type=float, default=None, help="stop training after this many seconds")
    ap.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    args, overrides = ap.parse_known_args()  # everything else goes to `i2i train` as written (--epochs 5 k=v)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "demo"
        minutes = train(args.method, out, args.seconds, overrides)
        exports = [n for r in settings_records(out / "log.jsonl") for n in r.get("exports") or []]
        ckpt = out / exports[0]
        registry = load_registry()
        record = read_generator(ckpt)
        root = Path(record["provenance"]["config"]["data"]["root"])
        pairs = generator_pairs(record, registry, root, "test")
        report = evaluate(Translator(load_generator(ckpt, registry)), registry, metrics=["psnr", "ssim"], pairs=pairs)
        psnr, ssim = report.scores["psnr"], report.scores["ssim"]
        gain = psnr["translated"] - psnr["identity"]
        steps = record["provenance"]["step"]
        print(f"{args.method} demo trained {steps} steps in {minutes:.1f} min (threads {os.cpu_count()}); "
              f"held-out test pairs: {report.counts['truth']}")
        print(f"PSNR to truth: {ckpt.stem} {psnr['translated']:.2f} dB, identity {psnr['identity']:.2f} dB, "
              f"gain {gain:+.2f} dB (goal >= +3 dB)")
        print(f"SSIM to truth: {ckpt.stem} {ssim['translated']:.4f}, identity {ssim['identity']:.4f}")
        print(json.dumps({"method": args.method, "steps": steps, "minutes": round(minutes, 2),
                          "psnr": psnr, "ssim": ssim}))


if __name__ == "__main__":
    main()
