#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: ffmpeg, a virtual environment in .venv, torch, the project.
# Re-running is cheap: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
  echo "setup: installing ffmpeg (Debian/Ubuntu package)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg >/dev/null
fi

# pip's own warnings about unreachable local index folders (a property of some machines' pip
# configuration) are noise for the user; everything else pip says is shown.
quiet_pip() { .venv/bin/pip "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }; }

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi

# torch first, pinned, so pip does not pull a multi-GB CUDA build on CPU machines.
# On a GPU machine set TORCH_SPEC (e.g. TORCH_SPEC="torch>=2.4") to get your CUDA build.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  # The CPU environment takes ~1.5 GB (torch alone ~750 MB, unpacked through the temporary folder):
  # say so in one line instead of pip's OSError halfway through.
  for folder in "$PWD" "${TMPDIR:-/tmp}"; do
    free_mb=$(df -Pm "$folder" | awk 'NR == 2 {print $4}')
    if [ "${free_mb:-0}" -lt "${SETUP_MIN_FREE_MB:-2000}" ]; then
      echo "setup: only ${free_mb} MB free on $folder; the environment needs about 2000 MB (torch, the project's dependencies)" >&2
      exit 1
    fi
  done
  echo "setup: installing ${TORCH_SPEC:-torch==2.13.0}" >&2
  quiet_pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi

stamp=.venv/.project-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing the project and its dependencies" >&2
  quiet_pip install -q -e ".[dev]"
  touch "$stamp"
fi
