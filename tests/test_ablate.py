"""`trainer ablate`: variants file checks, and two rows trained and scored into one table."""

import pytest
from click.testing import CliRunner

from trainer.ablations.run import DEFAULT_VARIANTS, read_variants
from trainer.cli import main as trainer_cli
from trainer.config import load_config

from support import SMALL, write_shards


def test_the_default_variants_cover_the_issue_rows():
    names = [v.name for v in read_variants(DEFAULT_VARIANTS)]
    assert names[:2] == ["original", "recipe"] and len(names) == len(set(names)) == 10
    presets = {v.name: v.preset for v in read_variants(DEFAULT_VARIANTS)}
    assert presets["original"] == "original" and set(presets.values()) == {"original", "recipe"}


def test_the_pretext_variants_change_only_what_their_names_say():
    rows = {v.name: v for v in read_variants(DEFAULT_VARIANTS.with_name("pretexts.yaml"))}
    assert rows["tiny preset"].overrides == [] and rows["quiet interferer"].preset == "mixture"
    span = load_config(rows["span-only loss"].preset, overrides=rows["span-only loss"].overrides)
    louder = load_config(rows["interferer 0 to +12 dB"].preset, overrides=rows["interferer 0 to +12 dB"].overrides)
    assert span.loss.all_frames_weight == 0.0 and span.corrupt.mix_gain_db == load_config("tiny").corrupt.mix_gain_db
    assert tuple(louder.corrupt.mix_gain_db) == (0.0, 12.0) and louder.loss.all_frames_weight == 1.0
    mixit = load_config(rows["MixIT two outputs"].preset, overrides=rows["MixIT two outputs"].overrides)
    assert mixit.model.output == "mask_pair" and tuple(mixit.corrupt.mix_cover) == (1.0, 1.0)
    assert mixit.model.mask_prior == 0.5
    assert mixit.corrupt.mix_gain_db == load_config("tiny").corrupt.mix_gain_db


@pytest.mark.parametrize(
    "text, message",
    [
        ("not a list", "expected a non-empty list"),
        ("[]", "expected a non-empty list"),
        ("- {preset: tiny}", "row 1 needs a name"),
        ("- {name: a, preset: tiny, steps: 3}", "unknown key\\(s\\) steps"),
        ("- {name: a, preset: nope}", "row 'a': unknown training preset 'nope'"),
        ("- {name: a, set: [corrupt.select_rate=2]}", "row 'a': .*select_rate must be a finite number in"),
        ("- {name: a, set: corrupt.nsp=false}", "set must be a list"),
        ("- {name: a b}\n- {name: a-b}", "two rows named like"),
        ("- [unclosed", "unreadable variants file"),
    ],
)
def test_bad_variants_files_are_one_line_errors_naming_the_file(tmp_path, text, message):
    path = tmp_path / "v.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        read_variants(path)
    assert str(path) in str(info.value)


def test_two_rows_train_with_the_same_budget_into_one_table(tmp_path):
    shards = write_shards(tmp_path / "shards", {f"t{i}": 5 + i for i in range(6)})
    variants = tmp_path / "v.yaml"
    variants.write_text(
        "- {name: original, preset: original}\n- {name: no pair, preset: tiny, set: [corrupt.nsp=false]}\n"
    )
    args = ["ablate", "--shards", str(shards), "--variants", str(variants), "--out", str(tmp_path / "out")]
    args += ["--steps", "2", "--batches", "1", "--device", "cpu"]
    for override in SMALL + ["data.num_workers=0", "run.ckpt_every=2"]:
        args += ["--set", override]
    result = CliRunner().invoke(trainer_cli, args)
    assert result.exit_code == 0, result.output
    table = (tmp_path / "out" / "ablation.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "variant" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["original", "no pair"]
    assert "| none |" in rows[1] and (tmp_path / "out" / "no-pair" / "checkpoints" / "last").is_file()
    # a second call finds both runs at their steps and only scores them again: the same table
    again = CliRunner().invoke(trainer_cli, args)
    assert again.exit_code == 0, again.output
    strip = lambda text: [r.rsplit("|", 2)[0] for r in text.splitlines()]  # noqa: E731 (timings differ)
    assert strip((tmp_path / "out" / "ablation.md").read_text()) == strip(table)
