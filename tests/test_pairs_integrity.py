"""What `pipeline pairs` must keep out of training and evaluation (issue 20): duplicated songs,
self-pairs, degenerate targets, partners that only seem to line up, and files changed after pairing.

Each test builds its own small collection from the synthetic songs of test_pairs (the right target
known to the sample) and checks the class, not one example.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
from test_pairs import PAIR_OPTIONS, SR, song, write

from pipeline import format as fmt
from pipeline.pairs.run import PairOptions, build_pairs
from pipeline.shard.run import run_shard


def _reasons(manifests) -> dict[str, str]:
    return {f.path: f.reason for f in fmt.read_failures(manifests, fmt.PAIR_FAILURES_FILE)}


def _stem_song(folder, seed, target="instrumental", ext="wav"):
    acc, voice = song(seed)
    write(folder / "mixture.wav", acc + voice)
    write(folder / f"{target}.{ext}", acc if target == "instrumental" else voice)


# --- 1. duplicates ------------------------------------------------------------------------------


def test_a_copied_song_is_a_duplicate_in_its_originals_split_sharded_once_and_reported(tmp_path):
    root = tmp_path / "stems"
    for seed in range(1, 5):
        _stem_song(root / f"Song {seed}", seed, "instrumental" if seed % 2 else "vocals")
    before = build_pairs(tmp_path / "m", [str(root)], options=PairOptions(val_fraction=0.5))
    splits_before = {p.name: p.split for p in fmt.read_pairs(tmp_path / "m")}
    # byte-identical copies, named to sort first: one made now (newer), one keeping the original's
    # mtimes (cp -p) that only the previous manifest can tell from the original
    shutil.copytree(root / "Song 1", root / "A copy of Song 1", copy_function=shutil.copyfile)
    shutil.copytree(root / "Song 2", root / "A copy of Song 2")
    (root / "Link to Song 3").symlink_to(root / "Song 3")  # the same song folder reached twice
    summary = build_pairs(tmp_path / "m", [str(root)], options=PairOptions(val_fraction=0.5))
    pairs = {p.name: p for p in fmt.read_pairs(tmp_path / "m")}
    for n in (1, 2):
        original, copy = pairs[f"Song {n}"], pairs[f"A copy of Song {n}"]
        assert original.duplicate_of is None and copy.duplicate_of == original.id
        assert copy.split == original.split == splits_before[f"Song {n}"]
        assert copy.album_key == original.album_key
    assert "Link to Song 3" not in pairs  # the same files: one candidate, not a duplicate record
    assert {p.name: p.split for p in pairs.values() if p.duplicate_of is None} == splits_before
    assert (summary.pairs, summary.duplicates, summary.splits) == (4, 2, before.splits)
    assert "4 pairs" in summary.line() and "2 duplicates" in summary.line()

    shards = run_shard(tmp_path / "m", tmp_path / "out", PAIR_OPTIONS, workers=1, progress=False)
    keys = set()
    import webdataset as wds

    for tar in sorted((tmp_path / "out").glob("*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False):
            keys.add(sample["__key__"].rsplit("_", 1)[0])
    assert shards.failures == 0 and len(keys) == 4  # the copies' clips are not more songs

    from pipeline.status import collect_status, format_status
    from trainer.separation.evaluate import select_pairs

    assert format_status(collect_status(tmp_path / "m", tmp_path / "out", pairs=True)).startswith(
        "pairs: 4 pairs, 0.00 h of mixtures, 2 duplicates"
    )
    scored = [p for split in ("train", "val") for p in select_pairs(tmp_path / "m", split)]
    assert len(scored) == 4 and all(p.duplicate_of is None for p in scored)


def test_a_copy_whose_target_differs_is_still_the_same_song(tmp_path):
    """Same mixture content, another target file (an instrumental here, the vocals stem there):
    the song must not sit in both splits, so it is a duplicate too."""
    acc, voice = song(3)
    for name, stem, signal in (("A", "instrumental.wav", acc), ("B", "vocals.wav", voice)):
        write(tmp_path / "s" / name / "mixture.wav", acc + voice)
        write(tmp_path / "s" / name / stem, signal)
    build_pairs(tmp_path / "m", [str(tmp_path / "s")], options=PairOptions(val_fraction=0.5))
    a, b = sorted(fmt.read_pairs(tmp_path / "m"), key=lambda p: p.name)
    assert (a.duplicate_of, b.duplicate_of, a.split) == (None, a.id, b.split)


# --- 2. the same files twice ----------------------------------------------------------------------


def test_repeated_and_nested_roots_find_each_song_once(tmp_path):
    root = tmp_path / "stems"
    _stem_song(root / "Album" / "One", 1)
    _stem_song(root / "Album" / "Two", 2, "vocals")
    for roots in ([root, root], [root / "Album", root], [root, root / "Album" / "One"]):
        summary = build_pairs(tmp_path / "m", [str(r) for r in roots])
        assert (summary.candidates, summary.pairs, summary.duplicates) == (2, 2, 0), roots
        assert sorted(p.name for p in fmt.read_pairs(tmp_path / "m")) == ["One", "Two"]


def test_mixtures_and_targets_the_same_folder_is_refused(tmp_path):
    write(tmp_path / "x" / "a.wav", sum(song(1)))
    with pytest.raises(ValueError, match="--mixtures and --targets are the same folder"):
        build_pairs(tmp_path / "m", mixtures=str(tmp_path / "x"), targets=str(tmp_path / "x" / "."))
    (tmp_path / "link").symlink_to(tmp_path / "x")
    with pytest.raises(ValueError, match="same folder"):
        build_pairs(tmp_path / "m", mixtures=str(tmp_path / "x"), targets=str(tmp_path / "link"))


def test_a_mixture_paired_with_its_own_content_is_refused(tmp_path):
    mix = sum(song(1))
    write(tmp_path / "s" / "Same" / "mixture.wav", mix)
    shutil.copyfile(tmp_path / "s" / "Same" / "mixture.wav", tmp_path / "s" / "Same" / "instrumental.wav")
    write(tmp_path / "mixes" / "Song.wav", mix)
    (tmp_path / "inst").mkdir()
    shutil.copyfile(tmp_path / "mixes" / "Song.wav", tmp_path / "inst" / "Song.wav")
    summary = build_pairs(tmp_path / "m", [str(tmp_path / "s")], str(tmp_path / "mixes"), str(tmp_path / "inst"))
    reasons = _reasons(tmp_path / "m")
    assert summary.pairs == 0 and len(reasons) == 2
    assert all("is the mixture itself" in reason for reason in reasons.values()), reasons


def test_targets_nested_in_the_mixtures_folder_are_not_mixtures(tmp_path):
    acc, voice = song(4)
    write(tmp_path / "mixes" / "Song.wav", acc + voice)
    write(tmp_path / "mixes" / "instrumentals" / "Song.wav", acc)
    summary = build_pairs(
        tmp_path / "m", mixtures=str(tmp_path / "mixes"), targets=str(tmp_path / "mixes/instrumentals")
    )
    assert (summary.candidates, summary.pairs, summary.failures) == (1, 1, 0), _reasons(tmp_path / "m")


def test_an_ambiguous_mixture_is_reported_as_ambiguous_not_as_a_missing_partner(tmp_path):
    acc, voice = song(4)
    write(tmp_path / "mixes" / "Song4.wav", acc + voice)
    write(tmp_path / "mixes" / "Song4.flac", acc + voice)
    write(tmp_path / "inst" / "Song4.wav", acc)
    write(tmp_path / "mixes2" / "Song5.wav", acc + voice)
    write(tmp_path / "inst2" / "Song5.wav", acc)
    write(tmp_path / "inst2" / "Song5.mp3", acc)
    for mixes, inst in (("mixes", "inst"), ("mixes2", "inst2")):
        build_pairs(tmp_path / mixes / ".m", mixtures=str(tmp_path / mixes), targets=str(tmp_path / inst))
        reasons = sorted(_reasons(tmp_path / mixes / ".m").values())
        assert len(reasons) == 3 and not any("no file named" in r for r in reasons), reasons
        assert sum(r.startswith("ambiguous: 2 files (") for r in reasons) == 2, reasons
        assert any(r.startswith("no partner: its ") and "is ambiguous (several files named" in r for r in reasons)


# --- 3. degenerate targets ------------------------------------------------------------------------


def test_targets_that_are_the_mixture_or_silence_are_failures_with_their_reason(tmp_path):
    acc, voice = song(6)
    mix = acc + voice
    cases = {
        # the instrumental is the mixture (another encoding: other bytes, the same audio)
        "inst is mix": ("instrumental.flac", mix, "is (nearly) the mixture itself"),
        "inst is quiet mix": ("instrumental.wav", 0.5 * mix, "is (nearly) the mixture itself"),
        "inst is silent": ("instrumental.wav", 1e-3 * acc, "is (nearly) silent"),
        "vocals are the mix": ("vocals.flac", mix, "is (nearly) silent"),
        "vocals are silent": ("vocals.wav", 1e-3 * voice, "is (nearly) the mixture itself"),
    }
    for name, (stem, signal, _) in cases.items():
        write(tmp_path / "s" / name / "mixture.wav", mix)
        write(tmp_path / "s" / name / stem, signal)
    _stem_song(tmp_path / "s" / "fine", 7)
    _stem_song(tmp_path / "s" / "fine vocals", 8, "vocals")
    summary = build_pairs(tmp_path / "m", [str(tmp_path / "s")])
    assert sorted(p.name for p in fmt.read_pairs(tmp_path / "m")) == ["fine", "fine vocals"]
    reasons = _reasons(tmp_path / "m")
    assert summary.failures == len(cases)
    for name, (stem, _, expected) in cases.items():
        reason = reasons[str(tmp_path / "s" / name / stem)]
        assert "degenerate target" in reason and expected in reason, (name, reason)


# --- 4. alignment ----------------------------------------------------------------------------------


def test_inverted_out_of_range_and_wrong_partners_are_no_match(tmp_path):
    acc, voice = song(5)
    mix = acc + voice

    def late(seconds):
        return np.concatenate([np.zeros((int(seconds * SR), 2), np.float32), acc])

    targets = {
        "Inverted": (-acc, "polarity-inverted"),
        "Inverted Late": (-late(0.3), "polarity-inverted"),
        "Delay 3.5": (late(3.5), "no match"),
        "Delay 4": (late(4.0), "no match"),
        "Other Song": (song(10)[0], "no match"),  # correlates at 0.48 somewhere: no clear peak
    }
    for name, (signal, _) in targets.items():
        write(tmp_path / "mixes" / f"{name}.wav", mix)
        write(tmp_path / "inst" / f"{name}.wav", signal)
    write(tmp_path / "mixes" / "Fine.wav", mix)
    write(tmp_path / "inst" / "Fine.wav", late(0.2))
    build_pairs(tmp_path / "m", mixtures=str(tmp_path / "mixes"), targets=str(tmp_path / "inst"))
    [fine] = fmt.read_pairs(tmp_path / "m")
    assert fine.name == "Fine" and fine.offset_seconds == pytest.approx(0.2, abs=1 / SR)
    reasons = _reasons(tmp_path / "m")
    for name, (_, expected) in targets.items():
        reason = reasons[str(tmp_path / "inst" / f"{name}.wav")]
        assert expected in reason and "lengths differ" not in reason, (name, reason)


# --- 5. changed after pairing ---------------------------------------------------------------------


def test_evaluate_separation_skips_a_pair_changed_after_pairing_with_a_line(tmp_path):
    from trainer.separation.evaluate import evaluate_separation

    for seed in (1, 2):
        _stem_song(tmp_path / "s" / f"Song {seed}", seed)
    build_pairs(tmp_path / "m", [str(tmp_path / "s")], options=PairOptions(val_fraction=1.0))
    victim = tmp_path / "s" / "Song 2" / "instrumental.wav"
    write(victim, song(9, 6.0)[0])  # another recording under the paired name
    scores, table = evaluate_separation([], tmp_path / "m", bsseval=False, progress=False)
    assert f"skipped: {victim}: changed since it was paired: re-run pipeline pairs" in table
    assert table.startswith("evaluate-separation: 1 tracks")
    os.utime(victim, (1, 1))  # same size, other mtime
    write(tmp_path / "s" / "Song 1" / "mixture.wav", sum(song(1)))  # rewritten: a new mtime
    with pytest.raises(ValueError, match="changed since it was paired"):
        evaluate_separation([], tmp_path / "m", bsseval=False, progress=False)


# --- 6. short files -------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["flac", "wav", "mp3", "ogg", "opus", "m4a", "aiff"])
def test_a_tenth_of_a_second_in_any_container_is_read(tmp_path, ext):
    from pipeline.audio.decode import decode_chunks
    from pipeline.ingest.probe import probe_file

    source = write(tmp_path / "source.wav", 0.3 * song(1, 0.1)[0] + 0.1)
    path = tmp_path / f"clip.{ext}"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(source), str(path)], check=True)  # ffmpeg's own muxing
    assert probe_file(str(path)).duration == pytest.approx(0.1, abs=0.04)
    assert sum(len(c) for c in decode_chunks(path)) > 0.05 * SR
