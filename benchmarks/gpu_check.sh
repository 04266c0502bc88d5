#!/usr/bin/env bash
# GPU check for a single-GPU machine that has torch (and timm, typer, rich, pluggy, OpenCV, pytest; torchmetrics for
# the FID/KID test, which skips without it; torch-fidelity is not needed) preinstalled and no network. Installs
# nothing: runs i2i from source, registering its entry points through a generated .dist-info.
# Runs the CUDA tests, then the training-step and video benchmarks, and prints a summary: each step is bounded by a
# timeout, 560 s at most in all.
#   bash benchmarks/gpu_check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/i2i_gpu_check}}
mkdir -p "$OUT"
SITE=$(mktemp -d)
mkdir -p "$SITE/i2i-0.1.0.dist-info"
printf 'Metadata-Version: 2.1\nName: i2i\nVersion: 0.1.0\n' > "$SITE/i2i-0.1.0.dist-info/METADATA"
printf '[i2i]\ncomponents = i2i_components\ncut = i2i_cut\ncyclegan = i2i_cyclegan\npix2pix = i2i_pix2pix\nmetrics = i2i_metrics\n' > "$SITE/i2i-0.1.0.dist-info/entry_points.txt"
export PYTHONPATH="$PWD:$PWD/plugins:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 I2I_HOME="$OUT/home"
export COLUMNS=160

{
  echo "== machine"; date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  python3 -m i2i plugins

  echo "== CUDA tests"
  timeout 180 python3 -m pytest -q -p no:cacheprovider -m cuda -rfEs --tb=short tests > "$OUT/pytest.log" 2>&1
  echo "pytest exit: $? (whole output in $OUT/pytest.log)"
  tail -60 "$OUT/pytest.log"

  echo "== train step, 256 px, batch 1 (ngf 64, 9 blocks; i2i auto precision = bf16)"
  timeout 100 python3 benchmarks/train_step.py --device cuda --size 256 --batch 1 --ngf 64 --iters 20 --warmup 5
  echo "== train step, 256 px, batch 4"
  timeout 100 python3 benchmarks/train_step.py --device cuda --size 256 --batch 4 --ngf 64 --iters 20 --warmup 5
  echo "== train step, 256 px, batch 4, fp32 (the same settings as the reference)"
  timeout 90 python3 benchmarks/train_step.py --device cuda --size 256 --batch 4 --ngf 64 --iters 10 --warmup 3 \
    --precision fp32
  echo "== methods at equal settings: CycleGAN, CUT, FastCUT, 256 px, ngf 64 (the paper's)"
  timeout 120 python3 benchmarks/methods.py --device cuda --size 256 --ngf 64 --iters 10 --precision bf16
  echo "== video, 256 px frames"
  timeout 90 python3 benchmarks/video.py --device cuda --frames 160 --size 256 --ngf 64 --batch-size 8
} 2>&1 | tee "$OUT/gpu_check.log"
rm -rf "$SITE"
