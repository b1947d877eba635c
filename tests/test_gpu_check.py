"""benchmarks/gpu_check.sh: its CPU smoke run (the slow set) keeps the prepared GPU check from rotting
until a GPU runs it; the batch arithmetic it reports is checked here without one."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_check", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_largest_batch_is_the_last_one_whose_peak_stays_within_the_card():
    largest_batch = load_gpu_check().largest_batch
    # 2 GiB at batch 1, 3 at batch 2: 1 GiB per sample over a 1 GiB base
    assert largest_batch(2.0, 3.0, 10.0) == 9 and largest_batch(2.0, 3.0, 10.5) == 9
    assert largest_batch(2.0, 3.0, 1.5) == 0  # not even batch 1
    assert largest_batch(2.0, 2.0, 10.0) == 0  # no growth measured: no extrapolation


@pytest.mark.slow
def test_the_smoke_run_goes_through_every_section_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "GPU_CHECK_TIMEOUT": "500"}
    result = subprocess.run(
        [str(REPO / "benchmarks" / "gpu_check.sh"), "--smoke", "--work", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=560,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout
    for row in (
        "| step, batch 1, T=64, eager |",
        "| step, batch 1, T=64, torch.compile (aot_eager) |",
        "| training FLOPs per sample",
        "| loader data-wait share, the preset's 2 workers",
        "| `trainer separate`, tiny preset, 4 s track",
    ):
        assert row in table, table
    assert "SMOKE (tiny sizes, not a measurement)" in table and "log8-zstd shards" in table
    assert (tmp_path / "separate" / "separated").is_dir() and list((tmp_path / "loop" / "run").glob("metrics*"))
