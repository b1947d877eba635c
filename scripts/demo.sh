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

step "4. shard the manifest -> demo/shards (STFT magnitude clips, 8-bit log scale, in webdataset tars)"
# 64 MB shards instead of the default 1 GB so the ~20 minutes of demo audio spread over several.
pipeline shard --manifests demo/manifests --out demo/shards --shard-size 64MB
pipeline verify --out demo/shards
pipeline preview demo/shards --out demo/preview-shards.png --n 3

step "5. pretrain the tiny preset on CPU -> demo/runs/tiny (re-running continues, or stops if done)"
# The preset's own 900 steps (~25 min on 2 cores): fewer left a start below scratch on this collection
# (60 and 300 steps; docs/experiments.md, "The pretraining budget"). DEMO_STEPS=60 is a quick run.
pretrain_steps=(); [ -n "${DEMO_STEPS:-}" ] && pretrain_steps=(--steps "$DEMO_STEPS")
trainer pretrain --shards demo/shards --preset tiny --run demo/runs/tiny "${pretrain_steps[@]}" \
  --set run.ckpt_every=100 --set run.val_every=100 --set run.image_every=100

step "6. evaluate the last checkpoint on the val shards: the mixture pretext, model vs doing nothing"
trainer evaluate --checkpoint demo/runs/tiny --shards demo/shards/val.json
trainer preview --shards demo/shards --checkpoint demo/runs/tiny --out demo/preview-corruptions.png --n 4

step "7. separation pairs (demo/collection/pairs: a synthetic voice over accompaniment) -> demo/pair-manifests"
PAIRS=demo/collection/pairs
pipeline pairs "$PAIRS/stems" --mixtures "$PAIRS/mixtures" --targets "$PAIRS/instrumentals" \
  --manifests demo/pair-manifests --val-fraction 0.25
echo "-- the parallel layout's instrumentals start 120 ms late; the offset found for each pair (s):"
grep -o '"name": "[^"]*"\|"offset_seconds": [-0-9.e]*' demo/pair-manifests/pairs.jsonl | paste - - | cut -c1-80
pipeline shard --pairs --manifests demo/pair-manifests --out demo/pair-shards --shard-size 64MB
pipeline verify --out demo/pair-shards

step "8. fine-tune for separation: from the demo pretrain and from scratch, the same budget"
FINETUNE_STEPS=${DEMO_FINETUNE_STEPS:-30}
for origin in pretrained scratch; do
  init=(); [ "$origin" = pretrained ] && init=(--init demo/runs/tiny)
  trainer finetune --shards demo/pair-shards "${init[@]}" --preset tiny --run "demo/runs/sep-$origin" \
    --steps "$FINETUNE_STEPS" --set run.ckpt_every=15 --set run.val_every=15 --set run.image_every=15
done

step "9. self-training: the scratch model labels the collection's shards; a student learns them, then the pairs"
trainer pseudo-label --checkpoint demo/runs/sep-scratch --shards demo/shards --out demo/pseudo-shards
trainer finetune --shards demo/pseudo-shards --preset tiny --run demo/runs/pseudo-student \
  --steps "$FINETUNE_STEPS" --set run.ckpt_every=15 --set run.image_every=15
trainer finetune --shards demo/pair-shards --init demo/runs/pseudo-student --preset tiny --run demo/runs/sep-self-trained \
  --steps "$FINETUNE_STEPS" --set run.ckpt_every=15 --set run.val_every=15 --set run.image_every=15

step "10. evaluate the separation on whole val songs: from the pretrain, from scratch, self-trained; floor and oracle"
trainer evaluate-separation --checkpoint demo/runs/sep-pretrained --checkpoint demo/runs/sep-scratch \
  --checkpoint demo/runs/sep-self-trained --manifests demo/pair-manifests --tracks 2

step "11. separate the parallel layout's two mixtures -> demo/separated"
trainer separate "$PAIRS/mixtures" --checkpoint demo/runs/sep-pretrained --out demo/separated

step "done: where to look"
cat <<MSG
  manifests      demo/manifests/tracks.jsonl, failures.jsonl   (pipeline status --manifests demo/manifests --out demo/shards)
  shards         demo/shards/{train,val}-NNNNNN.tar + train.json, val.json
  run            demo/runs/tiny: config.yaml, metrics.jsonl, checkpoints/ (last, best), tb/
  TensorBoard    .venv/bin/tensorboard --logdir demo/runs      (losses, NSP accuracy, lr, images)
  pictures       demo/preview-shards.png (shard samples), demo/preview-corruptions.png (clean / corrupted / reconstruction)
  pairs          demo/pair-manifests/pairs.jsonl -> demo/pair-shards (mix.npy + target.npy samples)
  separation     demo/runs/sep-pretrained, demo/runs/sep-scratch, demo/runs/sep-self-trained (trainer evaluate-separation above)
  self-training  demo/pseudo-shards (the scratch model's estimates on demo/shards), demo/runs/pseudo-student
  separated      $(find demo/separated -type f | sort | tr '\n' ' ')
  start over     rm -rf demo/
MSG
