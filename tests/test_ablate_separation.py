"""`trainer ablate --pairs`: every row fine-tuned for separation with one budget, plus one from
scratch, scored by SDR on the same val tracks; resumed without retraining; bad options refused
before anything trains. Test-size model (support.SMALL) on tiny synthetic pairs, one thread."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from pipeline import format as fmt
from trainer.checkpoint import read_checkpoint_config, resolve_checkpoint
from trainer.cli import main as trainer_cli
from trainer.logs import read_metrics

from support import SMALL, make_pair_shards, write_shards

STFT = fmt.STFTParams(n_fft=128, hop=64)
COMMON = SMALL + ["run.ckpt_every=2", "data.crop_frames=64", "data.batch_size=2", "data.val_batch_size=2"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("ablate-sep")
    make_pair_shards(base / "pairs", STFT, songs=4, seconds=2.0)
    write_shards(base / "shards", {f"t{i}": 5 + i for i in range(6)}, clips_per_track=2, shards_per_split=1)
    (base / "v.yaml").write_text(
        "- {name: recipe, preset: recipe}\n- {name: no pair, preset: recipe, set: [corrupt.nsp=false]}\n"
    )
    return base


def _args(data, out, steps=2, *extra):
    args = ["ablate", "--shards", str(data / "shards"), "--variants", str(data / "v.yaml"), "--out", str(out)]
    args += ["--steps", str(steps), "--batches", "1", "--device", "cpu"] + [f"--set={o}" for o in COMMON]
    return args + list(extra)


def _pairs(data, finetune_steps="2"):
    return ["--pairs", str(data / "pairs" / "shards"), "--pairs-manifests", str(data / "pairs" / "m")] + [
        "--finetune-steps",
        finetune_steps,
    ]


def _rows(table: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines() if line.startswith("| ")]


def test_every_row_and_a_scratch_fine_tune_get_sdr_columns_and_a_rerun_trains_nothing(data, tmp_path):
    out = tmp_path / "out"
    args = _args(data, out, 2, *_pairs(data), "--tracks", "1")
    result = CliRunner().invoke(trainer_cli, args)
    assert result.exit_code == 0, result.output
    table = (out / "ablation.md").read_text()
    header, *rows = _rows(table)
    assert header[2:4] == ["inst. SDR MDX dB (vs scratch)", "inst. SDR BSSEval4 dB (vs scratch)"]
    assert [r[0] for r in rows] == ["recipe", "no pair", "from scratch"]
    scratch_mdx = float(rows[2][2])
    for row in rows[:2]:
        for column in (2, 3):
            value, delta = re.fullmatch(r"(-?\d+\.\d\d) \(([+-]\d+\.\d\d)\)", row[column]).groups()
            reference = float(rows[2][column])
            assert float(delta) == pytest.approx(float(value) - reference, abs=0.011)
    assert rows[2][4:] == ["—"] * 10  # no pretraining columns for the scratch row
    assert "median over 1 whole val tracks" in table
    floor = re.search(r"floor \(mixture as the estimate\): MDX (-?\d+\.\d\d), BSSEval4 n/a", table)
    oracle = re.search(r"ceiling \(oracle ratio mask\): MDX (-?\d+\.\d\d), BSSEval4 (-?\d+\.\d\d)", table)
    assert floor and oracle and float(oracle[1]) > float(floor[1]) + 3
    assert abs(scratch_mdx - float(floor[1])) < 10  # a 2-step fine-tune sits near the floor, not at nonsense
    assert "from scratch" in (out / "separation.md").read_text()
    # each fine-tune starts from its own row's final pretraining checkpoint; the scratch one from nothing
    for slug in ("recipe", "no-pair"):
        saved = read_checkpoint_config(resolve_checkpoint(out / slug / "finetune"))
        assert saved["run"]["task"] == "separation" and saved["run"]["steps"] == 2
        assert saved["run"]["init"] == str(resolve_checkpoint(out / slug))
    assert not read_checkpoint_config(resolve_checkpoint(out / "from-scratch" / "finetune"))["run"]["init"]

    # a rerun scores again and trains nothing: the same table up to the timing column
    metrics = {p: read_metrics(p) for p in (out / "recipe" / "finetune", out / "from-scratch" / "finetune")}
    again = CliRunner().invoke(trainer_cli, args)
    assert again.exit_code == 0, again.output
    assert "ignored" not in again.output  # ablate gave no --preset/--init that a resumed run could ignore
    strip = lambda text: [r.rsplit("|", 2)[0] for r in text.splitlines()]  # noqa: E731 (timings differ)
    assert strip((out / "ablation.md").read_text()) == strip(table)
    assert {p: read_metrics(p) for p in metrics} == metrics

    # a pretrain extended since its fine-tune: refused, not scored as if it were the new one
    extended = CliRunner().invoke(trainer_cli, _args(data, out, 4, *_pairs(data), "--tracks", "1"))
    assert extended.exit_code == 1 and "was fine-tuned from" in extended.output
    assert f"delete {out / 'recipe' / 'finetune'}" in extended.output


def test_without_bsseval_only_the_mdx_column(data, tmp_path):
    args = _args(data, tmp_path / "out", 2, *_pairs(data, "1"), "--tracks", "1", "--no-bsseval")
    args[args.index("--variants") + 1] = str(tmp_path / "one.yaml")
    (tmp_path / "one.yaml").write_text("- {name: recipe, preset: tiny}\n")
    result = CliRunner().invoke(trainer_cli, args)
    assert result.exit_code == 0, result.output
    header, *rows = _rows((tmp_path / "out" / "ablation.md").read_text())
    assert header[2] == "inst. SDR MDX dB (vs scratch)" and header[3] == "masked L1"
    assert [r[0] for r in rows] == ["recipe", "from scratch"]
    assert "BSSEval v4 not computed" in (tmp_path / "out" / "ablation.md").read_text()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--pairs", "{pairs}/shards"], "--pairs needs --pairs-manifests"),
        (["--pairs-manifests", "{pairs}/m"], "--pairs-manifests needs --pairs"),
        (["--finetune-steps", "2"], "--finetune-steps needs --pairs and --pairs-manifests"),
        (["--tracks", "2"], "--tracks needs --pairs and --pairs-manifests"),
        (["--pairs", "{pairs}/shards", "--pairs-manifests", "{pairs}/m"], "--pairs needs --finetune-steps"),
        (["--pairs", "{shards}", "--pairs-manifests", "{pairs}/m", "--finetune-steps", "2"], "not pair shards"),
        (["--pairs", "{pairs}/nope", "--pairs-manifests", "{pairs}/m", "--finetune-steps", "2"], "nope: not a shard"),
        (["--pairs", "{pairs}/shards", "--pairs-manifests", "{pairs}/nope", "--finetune-steps", "2"], "no pairs man"),
        (
            ["--pairs", "{pairs}/shards", "--pairs-manifests", "{pairs}/m", "--finetune-steps", "2"]
            + ["--scratch-preset", "nope"],
            "unknown training preset 'nope'",
        ),
        (
            ["--pairs", "{pairs}/shards", "--pairs-manifests", "{pairs}/m", "--finetune-steps", "2"]
            + ["--variants", "{scratch_row}"],
            "would share OUT/from-scratch with the scratch fine-tune",
        ),
    ],
)
def test_bad_options_are_one_line_errors_before_anything_trains(data, tmp_path, options, message):
    (tmp_path / "v.yaml").write_text("- {name: From Scratch, preset: tiny}\n")
    paths = {"pairs": str(data / "pairs"), "shards": str(data / "shards"), "scratch_row": str(tmp_path / "v.yaml")}
    options = [o.format(**paths) for o in options]
    result = CliRunner().invoke(trainer_cli, _args(data, tmp_path / "out", 2, *options))
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and message in result.output, result.output
    assert not (tmp_path / "out").exists()
