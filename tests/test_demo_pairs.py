"""`pipeline make-demo`'s pairs collection is what `pipeline pairs` reads: both layouts, both target
kinds, and the parallel layout's 120 ms late instrumentals found as such (the demo's steps 7-11
depend on it, and no other test builds it)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline import format as fmt
from pipeline.cli import main
from pipeline.demo.pairs import PARALLEL_OFFSET, make_demo_pairs


def test_demo_pairs_are_found_in_both_layouts_with_the_parallel_offset(tmp_path):
    pairs_dir = make_demo_pairs(tmp_path / "pairs", songs=4, seconds=4.0)
    result = CliRunner().invoke(
        main,
        [
            "pairs",
            str(pairs_dir / "stems"),
            "--mixtures",
            str(pairs_dir / "mixtures"),
            "--targets",
            str(pairs_dir / "instrumentals"),
            "--manifests",
            str(tmp_path / "m"),
        ],
    )
    assert result.exit_code == 0, result.output
    pairs = fmt.read_pairs(tmp_path / "m")
    assert len(pairs) == 4
    assert fmt.read_failures(tmp_path / "m", fmt.PAIR_FAILURES_FILE) == []
    assert {p.target_kind for p in pairs} == {"instrumental", "mixture_minus_vocals"}
    late = [p for p in pairs if abs(p.offset_seconds) > 0.01]
    assert len(late) == 1 and late[0].offset_seconds == pytest.approx(PARALLEL_OFFSET, abs=1e-3)
