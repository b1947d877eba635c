"""Two-process DDP (gloo, CPU) under torchrun: trains, keeps ranks in step, and only rank 0 writes."""

import os
import subprocess
import sys
from pathlib import Path

from trainer.checkpoint import read_meta, resolve_checkpoint
from trainer.logs import read_metrics

from support import SMALL, write_shards

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
TRAINER = str(Path(sys.executable).with_name("trainer"))


def test_torchrun_two_processes_gloo(tmp_path):
    shards = write_shards(
        tmp_path / "shards", {f"track{i:02d}": f for i, f in enumerate([5, 7, 6, 9, 11, 13])}, clips_per_track=2
    )
    run = tmp_path / "run"
    overrides = SMALL + ["run.ckpt_every=3", "run.val_every=6"]
    command = [
        TORCHRUN,
        "--standalone",
        "--nproc-per-node=2",
        "--no-python",
        "--",
        TRAINER,
        "pretrain",
        "--shards",
        str(shards),
        "--run",
        str(run),
        "--preset",
        "tiny",
        "--device",
        "cpu",
        "--steps",
        "6",
        *[f"--set={item}" for item in overrides],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    rows = read_metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 7))  # one writer: no duplicated or torn lines
    assert all(r["samples_per_s"] > 0 for r in rows)
    assert [v["step"] for v in read_metrics(run, "val")] == [6]
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1
    meta = read_meta(resolve_checkpoint(run))
    assert meta["step"] == 6 and meta["world_size"] == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "last", "step-0000003", "step-0000006"]
    assert sorted(p.name for p in run.iterdir()) == [".lock", "checkpoints", "config.yaml", "metrics.jsonl", "tb"]
    assert done.stderr.count("parameters on cpu x2") == 1  # rank 0 alone reports
