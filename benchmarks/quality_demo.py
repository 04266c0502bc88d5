"""Demo quality check: train the demo preset, then score G_AB on the held-out demo tiles against their true
translation (PSNR, SSIM), beside the identity baseline. Goal: G beats identity by >= 3 dB PSNR.

    python benchmarks/quality_demo.py [--out DIR] [key=value overrides for i2i train ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from i2i import demo, load_generator, load_registry  # noqa: E402
from i2i.evaluate import evaluate  # noqa: E402
from i2i.translate import Translator  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    ap.add_argument("overrides", nargs="*", help="extra `i2i train` arguments")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "demo"
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "i2i", "train", "--method", "cyclegan", "--out", str(out), "--overwrite",
               *args.overrides]
        subprocess.run(cmd, check=True, cwd=ROOT)
        minutes = (time.perf_counter() - t0) / 60
        root = demo.demo_root()
        registry = load_registry()
        G = load_generator(out / "G_AB.pt", registry)
        report = evaluate(Translator(G), registry, root / "testA", truth=root / "testB", metrics=["psnr", "ssim"])
        psnr, ssim = report.scores["psnr"], report.scores["ssim"]
        gain = psnr["translated"] - psnr["identity"]
        print(f"demo preset trained in {minutes:.1f} min; held-out tiles: {report.counts['source']}")
        print(f"PSNR to truth: G_AB {psnr['translated']:.2f} dB, identity {psnr['identity']:.2f} dB, "
              f"gain {gain:+.2f} dB (goal >= +3 dB)")
        print(f"SSIM to truth: G_AB {ssim['translated']:.4f}, identity {ssim['identity']:.4f}")


if __name__ == "__main__":
    main()
