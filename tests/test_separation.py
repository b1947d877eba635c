"""Separation end to end on tiny real audio: pairs -> pair shards -> finetune (from a pretraining
checkpoint and from scratch) -> separate -> evaluate-separation, with the test-size model of
support.SMALL (64 bins: n_fft 128) on one core.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from pipeline import format as fmt
from trainer.checkpoint import read_meta, resolve_checkpoint
from trainer.cli import main as trainer_cli
from trainer.config import load_config
from trainer.logs import read_metrics
from trainer.loop import pretrain

from support import SMALL, make_pair_shards, write_shards

STFT = fmt.STFTParams(n_fft=128, hop=64)
FINETUNE = SMALL + ["run.ckpt_every=2", "run.val_every=2", "data.crop_frames=64", "data.batch_size=2"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Four 3-second songs in the stems layout, their pairs manifest and pair shards."""
    return make_pair_shards(tmp_path_factory.mktemp("separation"), STFT)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    tracks = {f"track{i:02d}": f for i, f in enumerate([5, 7, 6, 9, 11, 13])}
    shards = write_shards(tmp_path_factory.mktemp("pre-shards"), tracks, clips_per_track=2, shards_per_split=1)
    run = tmp_path_factory.mktemp("pre") / "run"
    pretrain(load_config("tiny", overrides=SMALL + ["run.steps=2", "run.val_every=1000"]), str(shards), run)
    return run


@pytest.fixture(scope="module")
def finetuned(pairs, pretrained, tmp_path_factory):
    """Two fine-tunes of 4 steps: from the pretrained run and from scratch."""
    runs = tmp_path_factory.mktemp("runs")
    for name, init in (("pretrained", ["--init", str(pretrained)]), ("scratch", [])):
        args = ["finetune", "--shards", str(pairs / "shards"), "--preset", "tiny", "--run", str(runs / name)]
        args += init + ["--steps", "4", "--device", "cpu"] + [f"--set={o}" for o in FINETUNE]
        result = CliRunner().invoke(trainer_cli, args)
        assert result.exit_code == 0, result.output
    return runs


def test_finetune_from_pretrained_and_from_scratch(finetuned, pretrained):
    for name in ("pretrained", "scratch"):
        rows = read_metrics(finetuned / name)
        assert [r["step"] for r in rows] == list(range(1, 5))
        assert all(np.isfinite(r["l1"]) and r["mixture_l1"] > 0 for r in rows)
        checkpoint = resolve_checkpoint(finetuned / name)
        meta = read_meta(checkpoint)
        assert meta["task"] == "separation" and meta["stft"] == STFT.to_dict()
        vals = read_metrics(finetuned / name, "val")
        assert vals and all(v["ratio_mixture"] > 0 for v in vals)
        assert not any(k.startswith("nsp_head") for k in _weights(checkpoint))
    config = json.loads(json.dumps(read_meta(resolve_checkpoint(finetuned / "pretrained"))))
    assert config["init"] == str(resolve_checkpoint(pretrained))


def test_finetune_starts_from_the_pretrained_weights_with_a_fresh_mask_head(pretrained, tmp_path):
    import torch

    from trainer.separation.finetune import resolve_finetune
    from trainer.separation.task import build_separation_model, load_pretrained

    cfg, checkpoint = resolve_finetune(tmp_path / "r", "tiny", None, FINETUNE, init=str(pretrained))
    assert checkpoint is None and cfg.run.task == "separation" and cfg.model.mask_prior == 0.9
    model = build_separation_model(cfg)
    load_pretrained(model, cfg.run.init, torch.device("cpu"))
    source = _weights(resolve_checkpoint(pretrained))
    for name, value in model.state_dict().items():
        if name.startswith("mask_head."):
            continue
        assert torch.equal(value, source[name]), name
    with torch.no_grad():
        mask, _ = model.eval()(torch.rand(1, 2, 64, 8))
    assert float(mask.mean()) > 0.8  # the prior: near the identity mask


def test_finetune_refuses_what_it_cannot_use(pairs, pretrained, tmp_path):
    write_shards(pairs / "pre", {"a": 5, "b": 7, "c": 9, "d": 6}, clips_per_track=1, shards_per_split=1)
    runner = CliRunner()
    base = ["finetune", "--preset", "tiny", "--steps", "2", "--device", "cpu"] + [f"--set={o}" for o in FINETUNE]
    # pretraining shards are not pairs
    result = runner.invoke(trainer_cli, base + ["--shards", str(pairs / "pre"), "--run", str(tmp_path / "a")])
    assert result.exit_code == 1 and "not pair shards" in result.output, result.output
    # an architecture that does not fit the pretrained weights
    result = runner.invoke(
        trainer_cli,
        base
        + ["--shards", str(pairs / "shards"), "--init", str(pretrained), "--run", str(tmp_path / "b")]
        + ["--set=model.channels=[4,8,8,8]"],
    )
    assert result.exit_code == 1 and "weights do not fit the model" in result.output
    assert len(result.output.strip().splitlines()) == 1


def _weights(checkpoint: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(checkpoint / "model.safetensors"))


def test_a_pair_sample_crops_and_swaps_mixture_and_target_together():
    import random

    from trainer.data import collate, crop_sample

    frames = np.arange(40, dtype=np.float32)[None, None, :].repeat(64, axis=1)
    mixture = np.concatenate([frames + 100, frames + 200]).astype(np.float16)  # L, R
    target = np.concatenate([frames + 300, frames + 400]).astype(np.float16)
    meta = fmt.PairSampleMeta(track_id="p", clip=0, start_frame=0, valid_frames=40, album_key="a")
    sample = {
        "__key__": "p_00000",
        fmt.MIX_KEY: fmt.encode_spec(mixture),
        fmt.TARGET_KEY: fmt.encode_spec(target),
        fmt.META_KEY: fmt.encode_meta(meta),
    }
    swapped = next(c for seed in range(20) if (c := crop_sample(sample, 16, random.Random(seed))).swap)
    batch = collate([swapped, crop_sample(sample, 16, None)])["spec"][:, :, 0, :].double().numpy()
    assert batch.shape == (2, 4, 16)
    for row, order in zip(batch, ([200, 100, 400, 300], [100, 200, 300, 400])):
        peak = 1.0 / (row[3] - row[2])[0] * (order[3] - order[2])  # one scale for both signals
        values = row * peak
        start = values[0] - order[0]  # the crop's first frame, the same in every channel
        for channel, base in enumerate(order):
            np.testing.assert_allclose(values[channel] - base, start, atol=0.5)
        np.testing.assert_allclose(start, start[0] + np.arange(16), atol=0.5)


class _Identity(__import__("torch").nn.Module):
    def forward(self, x):
        import torch

        return torch.ones_like(x), None


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_windows_cross_fade_without_seams(overlap):
    """With a mask of ones the separator must give back the mixture itself, whatever the length,
    the chunking and the overlap: windows, cross-fades and the inverse STFT add nothing."""
    from trainer.separation.separate import Separator

    rng = np.random.default_rng(0)
    for n in (1, 1000, 4096, 5000, 44100):
        separator = Separator(_Identity(), fmt.STFTParams(n_fft=256, hop=64), 32, overlap, batch_size=3)
        x = rng.standard_normal((n, 2)).astype(np.float32)
        out = np.concatenate(list(separator.instrumental_chunks(x[i : i + 777] for i in range(0, n, 777))))
        assert out.shape == x.shape
        np.testing.assert_allclose(out, x, atol=1e-4)


def test_separate_writes_both_parts_and_a_bad_file_does_not_stop_the_others(pairs, finetuned, tmp_path):
    broken = tmp_path / "broken.mp3"
    broken.write_text("not audio")
    songs = pairs / "songs"
    result = CliRunner().invoke(
        trainer_cli,
        ["separate", str(broken), str(songs / "Song 0" / "mixture.wav"), str(songs / "Song 1")]
        + ["--checkpoint", str(finetuned / "pretrained"), "--out", str(tmp_path / "out"), "--device", "cpu"],
    )
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("trainer separate: error:")]
    assert len(errors) == 1 and str(broken) in errors[0]
    names = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.flac"))
    stems = ("mixture", "Song 1/mixture", "Song 1/instrumental")  # a folder's tree is mirrored under --out
    assert names == sorted(f"{stem}_{part}.flac" for stem in stems for part in ("instrumental", "vocals"))
    mixture, rate = soundfile.read(songs / "Song 0" / "mixture.wav", dtype="float32")
    instrumental, rate_out = soundfile.read(tmp_path / "out" / "mixture_instrumental.flac", dtype="float32")
    vocals, _ = soundfile.read(tmp_path / "out" / "mixture_vocals.flac", dtype="float32")
    assert rate_out == 44100 and instrumental.shape == vocals.shape == mixture.shape
    np.testing.assert_allclose(instrumental + vocals, mixture, atol=1e-4)  # 24-bit FLAC rounding
    assert np.abs(instrumental).max() > 0.01  # a mask near the 0.9 prior, not silence


def test_separate_refuses_a_pretraining_checkpoint(pretrained, tmp_path):
    result = CliRunner().invoke(
        trainer_cli, ["separate", str(pretrained), "--checkpoint", str(pretrained), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "not a separation checkpoint" in result.output


def test_evaluate_separation_table_has_a_row_per_checkpoint_and_both_references(pairs, finetuned):
    from trainer.separation.evaluate import FLOOR, ORACLE, evaluate_separation, mdx_sdr

    checkpoints = [str(finetuned / "pretrained"), str(finetuned / "scratch")]
    scores, table = evaluate_separation(checkpoints, pairs / "m", tracks=1, device="cpu", progress=False)
    assert len(scores) == 4 and FLOOR in scores and ORACLE in scores
    val = sorted((p for p in fmt.read_pairs(pairs / "m") if p.split == "val"), key=lambda p: p.name)[0]
    mixture, _ = soundfile.read(val.mixture_path, dtype="float32")
    instrumental, _ = soundfile.read(val.target_path, dtype="float32")
    assert scores[FLOOR].instrumental_mdx[0] == pytest.approx(mdx_sdr(instrumental, mixture), abs=1e-3)
    assert scores[FLOOR].vocals_mdx[0] == pytest.approx(0.0, abs=1e-6)  # silence as the vocals estimate
    assert scores[ORACLE].instrumental_mdx[0] > scores[FLOOR].instrumental_mdx[0] + 3
    assert np.isfinite(scores[ORACLE].instrumental_bss[0]) and np.isnan(scores[FLOOR].vocals_bss[0])
    for row in ("pretrained/step-0000004", "scratch/step-0000004", FLOOR, ORACLE):
        assert row in table


def test_evaluate_separation_takes_separates_knobs_and_times_each_row(pairs, finetuned):
    runner = CliRunner()
    base = ["evaluate-separation", "--manifests", str(pairs / "m"), "--tracks", "1", "--no-bsseval", "--device", "cpu"]
    ckpts = ["--checkpoint", str(finetuned / "pretrained"), "--checkpoint", str(finetuned / "scratch")]
    result = runner.invoke(trainer_cli, base + ckpts + ["--ensemble", "--tta", "--overlap", "0.5", "--window", "32"])
    assert result.exit_code == 0, result.output
    rows = {line.split("  ")[0]: line for line in result.output.splitlines()}
    assert "pretrained/step-0000004 (TTA)" in rows and "ensemble of the 2 (TTA)" in rows
    assert "s / audio s" in result.output
    assert float(rows["ensemble of the 2 (TTA)"].split()[-1]) > 0  # its separation time per second of audio
    result = runner.invoke(trainer_cli, base + ckpts[:2] + ["--ensemble"])
    assert result.exit_code == 1 and "at least two" in result.output
    result = runner.invoke(trainer_cli, base + ckpts + ["--window", "2", "--overlap", "0.9"])
    assert result.exit_code == 1 and "--window 2 with --overlap 0.9" in result.output


def test_every_checkpoint_command_takes_an_exported_folder(pairs, pretrained, finetuned, tmp_path):
    """evaluate and finetune --init with an exported pretrain, evaluate-separation with an exported
    separator (the same scores as its run); a fine-tune config of another architecture names the field."""
    runner = CliRunner()
    for source, name in ((pretrained, "pre"), (finetuned / "scratch", "sep")):
        result = runner.invoke(trainer_cli, ["export", str(source), "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    shards = write_shards(tmp_path / "pre-shards", {"a": 5, "b": 7, "c": 9, "d": 6}, clips_per_track=1)
    result = runner.invoke(
        trainer_cli,
        ["evaluate", "--checkpoint", str(tmp_path / "pre"), "--shards", str(shards / "val.json"), "--batches", "1"]
        + ["--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    base = ["finetune", "--shards", str(pairs / "shards"), "--init", str(tmp_path / "pre"), "--preset", "tiny"]
    base += ["--steps", "1", "--device", "cpu"] + [f"--set={o}" for o in FINETUNE]
    result = runner.invoke(trainer_cli, base + ["--run", str(tmp_path / "ft")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(trainer_cli, base + ["--run", str(tmp_path / "ft2"), "--set=model.channels=[4,8,8,8]"])
    assert result.exit_code == 1 and "model.channels is [4, 8, 8, 8] here but [4, 8, 8, 16]" in result.output
    assert len(result.output.strip().splitlines()) == 1
    from trainer.separation.evaluate import evaluate_separation

    scores, _ = evaluate_separation(
        [str(finetuned / "scratch"), str(tmp_path / "sep")], pairs / "m", tracks=1, bsseval=False, device="cpu"
    )
    first, second = list(scores.values())[:2]
    assert first.instrumental_mdx == second.instrumental_mdx
