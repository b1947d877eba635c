#!/usr/bin/env bash
# The main job on an embedded default: a synthetic demo collection run through the whole chain.
# Each step is a clearly separated block; later stages append theirs at the end. Re-running is
# cheap: every step keeps what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s ===\n' "$*"; }

step "1. set-up (.venv, ffmpeg, torch, the project)"
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

step "2. make the demo collection in demo/collection (two synthetic drives)"
pipeline make-demo demo/collection
DEMO_ROOTS=(demo/collection/drive1 demo/collection/drive2)

step "3. ingest the drives -> demo/manifests"
pipeline ingest "${DEMO_ROOTS[@]}" --manifests demo/manifests
echo "-- first line of demo/manifests/tracks.jsonl:"
head -n 1 demo/manifests/tracks.jsonl
echo "-- duplicates (a symlink on drive1, an identical copy on drive2):"
grep -v '"duplicate_of": null' demo/manifests/tracks.jsonl | cut -c1-160
echo "-- demo/manifests/failures.jsonl:"
cat demo/manifests/failures.jsonl
pipeline status --manifests demo/manifests --out demo/shards
