"""`pipeline pairs` and `pipeline shard --pairs` on hostile pair collections.

Songs are a few seconds of pipeline.demo.synth accompaniment plus a synthetic voice, written with
soundfile (WAV/FLAC) or ffmpeg (MP3); mixture = accompaniment + voice, so the right target is known
to the sample.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from pipeline import format as fmt
from pipeline.audio.stft import stft_magnitude
from pipeline.demo.synth import encode, synth_music, synth_voice
from pipeline.pairs.run import PairOptions, build_pairs
from pipeline.shard.plan import ShardOptions
from pipeline.shard.run import run_shard
from pipeline.shard.verify import verify_shards

SR = 44100
SECONDS = 4.0
PAIR_OPTIONS = ShardOptions(clip_frames=32, shard_bytes=2_000_000, sample_kind=fmt.SAMPLE_KIND_PAIRS)


def song(seed: int, seconds: float = SECONDS) -> tuple[np.ndarray, np.ndarray]:
    """(accompaniment, voice) float32 [n, 2]; their sum stays within [-1, 1]."""
    return 0.6 * synth_music(seconds, SR, 2, seed=seed), synth_voice(seconds, SR, 2, seed=seed)


def write(path: Path, signal: np.ndarray, sample_rate: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".wav", ".flac"):
        soundfile.write(path, signal, sample_rate, subtype="PCM_16" if path.suffix == ".flac" else "FLOAT")
    else:
        encode(signal, sample_rate, path)
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Both layouts with every kind of trouble; returns (base, summary of the first run)."""
    base = tmp_path_factory.mktemp("pairs")
    stems = base / "stems"
    acc, voice = song(1)
    write(stems / "Good Song" / "mixture.wav", acc + voice)
    write(stems / "Good Song" / "instrumental.flac", acc)
    write(stems / "Good Song" / "drums.wav", acc[:, ::-1].copy())  # other stems are ignored
    acc, voice = song(2)
    write(stems / "Vocals Only" / "mixture.wav", acc + voice)
    write(stems / "Vocals Only" / "vocals.wav", voice)
    write(stems / "Lonely" / "mixture.wav", sum(song(3)))  # no instrumental, no vocals
    write(stems / "No Mix" / "instrumental.wav", song(4)[0])  # stems but no mixture

    mixtures, targets = base / "mixtures", base / "instrumentals"
    acc, voice = song(5)
    delay = int(0.25 * SR)  # the instrumental starts 250 ms later in its file
    write(mixtures / "Album" / "Late.wav", acc + voice)
    write(targets / "Album" / "Late.wav", np.concatenate([np.zeros((delay, 2), np.float32), acc]))
    acc, voice = song(6)
    early = int(0.1 * SR)  # ... and this one 100 ms earlier (its first 100 ms are cut)
    write(mixtures / "Album" / "Early.wav", acc + voice)
    write(targets / "Album" / "Early.wav", acc[early:])
    acc, voice = song(7)
    write(mixtures / "Mono Low Rate.wav", acc + voice)
    low = acc.mean(axis=1)[::2]  # 22.05 kHz mono: resampled and upmixed by the decoder
    write(targets / "Mono Low Rate.flac", low[:, None], sample_rate=SR // 2)
    acc, voice = song(8)
    write(mixtures / "Encoded.wav", acc + voice)
    write(targets / "Encoded.mp3", acc)
    write(mixtures / "Wrong.wav", sum(song(9)))
    write(targets / "Wrong.wav", song(10)[0])  # another song's accompaniment
    acc, voice = song(11)
    write(mixtures / "Long.wav", acc + voice)
    write(targets / "Long.wav", np.concatenate([acc, song(12)[0]]))  # 4 s longer
    write(mixtures / "Orphan.wav", sum(song(13)))
    write(targets / "Stray.wav", song(14)[0])
    summary = build_pairs(base / "m", [str(stems)], str(mixtures), str(targets), PairOptions(val_fraction=0.3))
    return base, summary


def test_pairs_are_found_aligned_and_failures_have_reasons(hostile):
    base, summary = hostile
    pairs = {p.name: p for p in fmt.read_pairs(base / "m")}
    assert sorted(pairs) == ["Early", "Encoded", "Good Song", "Late", "Mono Low Rate", "Vocals Only"]
    assert summary.pairs == 6 and summary.checked == summary.candidates == 8
    assert pairs["Good Song"].target_kind == fmt.TARGET_INSTRUMENTAL and pairs["Good Song"].layout == fmt.LAYOUT_STEMS
    assert pairs["Vocals Only"].target_kind == fmt.TARGET_RESIDUAL
    assert pairs["Good Song"].offset_seconds == 0.0 and pairs["Good Song"].correlation > 0.5
    assert pairs["Late"].offset_seconds == pytest.approx(0.25, abs=1 / SR)
    assert pairs["Early"].offset_seconds == pytest.approx(-0.1, abs=1 / SR)
    assert abs(pairs["Mono Low Rate"].offset_seconds) < 0.002
    assert abs(pairs["Encoded"].offset_seconds) < 0.03  # whatever delay the MP3 encoder leaves
    assert {p.split for p in pairs.values()} == {"train", "val"}
    assert pairs["Late"].split == pairs["Early"].split  # one album, one split
    assert len({p.id for p in pairs.values()}) == 6

    failures = fmt.read_failures(base / "m", fmt.PAIR_FAILURES_FILE)
    by_file = {f"{Path(f.path).parent.name}/{Path(f.path).name}": f.reason for f in failures}
    reasons = " | ".join(f"{k}: {v}" for k, v in by_file.items())
    assert by_file["Lonely/mixture.wav"].startswith("no partner"), reasons
    assert by_file["No Mix/instrumental.wav"].startswith("no partner"), reasons
    assert "no match" in by_file["instrumentals/Wrong.wav"]
    assert "the wrong instrumental?" in by_file["instrumentals/Wrong.wav"]
    assert "lengths differ by +4.00 s" in by_file["instrumentals/Long.wav"]
    assert by_file["mixtures/Orphan.wav"].startswith("no partner")
    assert by_file["instrumentals/Stray.wav"].startswith("no partner")
    assert len(by_file) == 6


def test_a_rerun_reuses_the_journal_and_writes_the_same_manifest(hostile):
    base, _ = hostile
    before = (base / "m" / fmt.PAIRS_FILE).read_bytes()
    again = build_pairs(
        base / "m",
        [str(base / "stems")],
        str(base / "mixtures"),
        str(base / "instrumentals"),
        PairOptions(val_fraction=0.3),
    )
    assert again.checked == 0 and again.reused == 8
    assert (base / "m" / fmt.PAIRS_FILE).read_bytes() == before


def test_a_killed_run_keeps_what_it_journaled(tmp_path):
    """The journal line of each checked pair is written as it is known: a run that dies after it
    (here: the manifests are never written) leaves the next run nothing to redo for that pair."""
    acc, voice = song(20)
    write(tmp_path / "s" / "a" / "mixture.wav", acc + voice)
    write(tmp_path / "s" / "a" / "instrumental.wav", acc)
    code = (
        "import sys, pipeline.format as fmt\n"
        "from pipeline.pairs.run import build_pairs\n"
        "fmt.write_jsonl = lambda *a, **k: sys.exit(9)  # dies before the manifests\n"
        f"build_pairs({str(tmp_path / 'm')!r}, [{str(tmp_path / 's')!r}])\n"
    )
    # from the repository root, so the child imports this checkout whatever another test did to the cwd
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 9
    assert not (tmp_path / "m" / fmt.PAIRS_FILE).exists()
    summary = build_pairs(tmp_path / "m", [str(tmp_path / "s")])
    assert (summary.checked, summary.reused, summary.pairs) == (0, 1, 1)


def test_pair_shards_hold_the_aligned_target_are_exact_and_verify(hostile, tmp_path):
    base, _ = hostile
    one = run_shard(base / "m", tmp_path / "one", PAIR_OPTIONS, workers=1, progress=False)
    two = run_shard(base / "m", tmp_path / "two", PAIR_OPTIONS, workers=2, progress=False)
    assert one.failures == 0 and one.samples == two.samples > 0
    names = sorted(p.name for p in (tmp_path / "one").glob("*.tar"))
    assert names == sorted(p.name for p in (tmp_path / "two").glob("*.tar"))
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    report = verify_shards(tmp_path / "one")
    assert report.problems == [] and report.samples == one.samples
    index = fmt.read_index(tmp_path / "one" / "train.json")
    assert index.sample_kind == fmt.SAMPLE_KIND_PAIRS
    from pipeline.status import collect_status, format_status

    status = collect_status(base / "m", tmp_path / "one", pairs=True)
    assert status.tracks == 6 and sum(status.failures.values()) == 6
    assert format_status(status).startswith("pairs: 6 pairs")

    # The "Late" pair's target is the accompaniment on the mixture's grid: the 250 ms are applied.
    import webdataset as wds

    late = next(p for p in fmt.read_pairs(base / "m") if p.name == "Late")
    acc, _ = song(5)
    expected = stft_magnitude(acc, PAIR_OPTIONS.stft)[:, :, :32].astype(np.float16)
    for name in names:
        for sample in wds.WebDataset(str(tmp_path / "one" / name), shardshuffle=False, empty_check=False):
            if sample["__key__"] == fmt.sample_key(late.id, 0):
                meta = json.loads(sample["json"])
                assert meta["offset_seconds"] == late.offset_seconds
                target = fmt.read_sample(sample)[0][1].read().astype(np.float32)
                np.testing.assert_allclose(target, expected.astype(np.float32), rtol=2e-2, atol=2e-2)
                return
    raise AssertionError("no sample of the Late pair")


def test_pair_shards_resume_to_the_same_bytes(hostile, tmp_path):
    base, _ = hostile
    out = tmp_path / "out"
    run_shard(base / "m", out, PAIR_OPTIONS, workers=1, progress=False)
    reference = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    victim = sorted(reference)[0]
    (out / victim).unlink()  # as if killed before this unit finished
    (out / "train.json").unlink(missing_ok=True)
    again = run_shard(base / "m", out, PAIR_OPTIONS, workers=1, progress=False)
    assert again.written == 1 and again.reused == len(reference) - 1
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == reference


def test_a_pair_file_that_breaks_after_pairing_is_a_decode_failure_of_that_pair(hostile, tmp_path):
    base, _ = hostile
    manifests = tmp_path / "m"
    shutil.copytree(base / "m", manifests)
    pairs = fmt.read_pairs(manifests)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really")
    pairs[0].target_path = str(broken)
    pairs[0].target_size, pairs[0].target_mtime = broken.stat().st_size, broken.stat().st_mtime
    fmt.write_jsonl(manifests / fmt.PAIRS_FILE, pairs)
    summary = run_shard(manifests, tmp_path / "out", PAIR_OPTIONS, workers=1, progress=False)
    assert summary.failures == 1
    decode = [f for f in fmt.read_failures(manifests, fmt.PAIR_FAILURES_FILE) if f.stage == fmt.STAGE_DECODE]
    assert len(decode) == 1 and decode[0].path == str(broken) and decode[0].reason.startswith(str(broken))


def test_a_pair_file_changed_after_pairing_is_a_shard_failure_not_written(hostile, tmp_path):
    """Issue 10, class 1 for pairs: new content under the pair's old id and offset is refused."""
    base, _ = hostile
    manifests = tmp_path / "m"
    shutil.copytree(base / "m", manifests)
    pairs = fmt.read_pairs(manifests)
    target = tmp_path / "target.wav"
    shutil.copyfile(pairs[0].target_path, target)
    pairs[0].target_path = str(target)
    pairs[0].target_size, pairs[0].target_mtime = target.stat().st_size, target.stat().st_mtime
    fmt.write_jsonl(manifests / fmt.PAIRS_FILE, pairs)
    write(target, song(99, SECONDS * 2)[1])  # another recording, after pairing
    summary = run_shard(manifests, tmp_path / "out", PAIR_OPTIONS, workers=1, progress=False)
    [failure] = [f for f in fmt.read_failures(manifests, fmt.PAIR_FAILURES_FILE) if f.stage in fmt.SHARD_STAGES]
    assert summary.failures == 1 and (failure.path, failure.stage) == (str(target), fmt.STAGE_SHARD)
    assert failure.reason.startswith("changed since it was paired: re-run pipeline pairs (size ")


def test_pairs_cli_errors_are_one_line(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["pairs", "--manifests", str(tmp_path / "m")])
    assert result.exit_code == 2 and "give ROOTS" in result.output
    result = runner.invoke(main, ["pairs", str(tmp_path / "nowhere"), "--manifests", str(tmp_path / "m")])
    assert result.exit_code == 1 and "nowhere: no such directory" in result.output
    result = runner.invoke(main, ["pairs", "--mixtures", str(tmp_path), "--manifests", str(tmp_path / "m")])
    assert result.exit_code == 1 and "--mixtures and --targets go together" in result.output
    result = runner.invoke(main, ["shard", "--pairs", "--manifests", str(tmp_path / "m"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "pairs.jsonl: no manifest (run `pipeline pairs ROOT...` first)" in result.output
