#!/usr/bin/env bash
# The GPU numbers in one prepared run: base preset bf16 step time at T=512 and MFU, peak memory and the
# batch that fits a 12 GiB and an 80 GiB card, torch.compile on/off, the loader's data-wait share,
# `trainer separate` x real time. One table, < 8 minutes on an H100 (benchmarks/README.md, "GPU check").
#   benchmarks/gpu_check.sh [--peak-tflops N] [--skip-compile] [--work DIR]
#   benchmarks/gpu_check.sh --smoke      # CPU, tiny sizes: checks that the script runs (tests/, slow set)
# Needs the project set up with a CUDA build of torch (TORCH_SPEC="torch>=2.4" ./scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
if [[ " $* " != *" --smoke "* ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: torch ' + torch.__version__ + ' sees no CUDA device (a CPU build? set TORCH_SPEC and rerun scripts/setup.sh; --smoke runs on the CPU)')"
fi
# one limit for the whole run, so a hung step cannot hold a lent machine
# this checkout first on the path, whatever copy of the project is installed
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$PYTHON" benchmarks/gpu_check.py "$@"
