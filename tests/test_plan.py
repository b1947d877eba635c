"""Planning: manifest + options -> deterministic, interleaved, shard-sized units (no audio needed)."""

import random
from collections import Counter

import numpy as np
import pytest

from pipeline import format as fmt
from pipeline.audio.stft import clips_from_chunks
from pipeline.shard.plan import ShardOptions, describe_changes, expected_clips, make_plan, parse_size, plan_record


def manifest(roots=3, albums=4, tracks=6, duration=60.0, val_albums=1):
    records = []
    for r in range(roots):
        for a in range(albums):
            album_key = f"artist{r}/album{a}"
            for t in range(tracks):
                records.append(
                    fmt.TrackRecord(
                        id=f"r{r}a{a}t{t}",
                        path=f"/mnt/ssd{r}/artist{r}/album{a}/{t:02d}.flac",
                        root=f"/mnt/ssd{r}",
                        size=1000 + t,
                        mtime=1.0,
                        duration=duration + t,
                        sample_rate=44100,
                        channels=2,
                        codec="flac",
                        artist=f"artist{r}",
                        album=f"album{a}",
                        title=str(t),
                        album_key=album_key,
                        split="val" if a < val_albums else "train",
                    )
                )
    return records


SMALL = ShardOptions(clip_frames=64, shard_bytes=60_000_000)


def test_plan_is_deterministic_and_ignores_manifest_order():
    tracks = manifest()
    shuffled = tracks[:]
    random.Random(1).shuffle(shuffled)
    a, b = make_plan(tracks, SMALL), make_plan(shuffled, SMALL)
    assert [(u.name, [t.id for t in u.tracks]) for u in a.units] == [
        (u.name, [t.id for t in u.tracks]) for u in b.units
    ]
    assert a.fingerprint == b.fingerprint
    assert [u.fingerprint(SMALL) for u in a.units] == [u.fingerprint(SMALL) for u in b.units]


def test_every_unique_track_is_planned_once_and_splits_stay_apart():
    tracks = manifest()
    tracks.append(
        fmt.TrackRecord(
            **{**tracks[0].__dict__, "path": "/mnt/ssd2/copy.flac", "duplicate_of": tracks[0].id, "id": "copy0"}
        )
    )
    plan = make_plan(tracks, SMALL)
    planned = [t.id for u in plan.units for t in u.tracks]
    assert sorted(planned) == sorted(t.id for t in tracks if not t.duplicate_of)
    assert plan.skipped_duplicates == 1
    for unit in plan.units:
        assert {t.split for t in unit.tracks} == {unit.split}
        assert unit.name == fmt.shard_name(unit.split, unit.index)
    assert plan.splits() == ["train", "val"]
    for split in plan.splits():
        assert [u.index for u in plan.units if u.split == split] == list(
            range(sum(u.split == split for u in plan.units))
        )


def test_units_are_sized_from_durations():
    tracks = manifest()
    plan = make_plan(tracks, SMALL)
    per_clip = fmt.sample_bytes(SMALL.stft, SMALL.clip_frames)
    for unit in plan.units:
        assert unit.est_bytes == sum(expected_clips(t.duration, SMALL.stft, 64) for t in unit.tracks) * per_clip
        assert unit.est_bytes <= SMALL.shard_bytes or len(unit.tracks) == 1
    train = [u for u in plan.units if u.split == "train"]
    # Greedy packing: each unit but the last would overflow with the next track.
    assert all(u.est_bytes > SMALL.shard_bytes / 2 for u in train[:-1])
    one_big = make_plan(tracks, ShardOptions(clip_frames=64, shard_bytes=1))
    assert len(one_big.units) == len(tracks)


def test_no_shard_is_one_album_and_drives_are_interleaved():
    plan = make_plan(manifest(roots=3, albums=5, tracks=8), SMALL)
    train = [u for u in plan.units if u.split == "train"]
    assert len(train) >= 4
    for unit in train[:-1]:  # the last unit holds the leftovers, possibly a single track
        albums = Counter(t.album_key for t in unit.tracks)
        roots = Counter(t.root for t in unit.tracks)
        assert len(albums) > 1 and len(roots) > 1, unit.name
        # Evenly spread: no album takes much more than its share of a shard.
        share = len(unit.tracks) * 8 / sum(len(u.tracks) for u in train)
        assert max(albums.values()) <= np.ceil(share) + 1
    order = [t.album_key for u in train for t in u.tracks]
    assert sum(a == b for a, b in zip(order, order[1:])) <= 2  # neighbours rarely share an album


def test_seed_changes_the_order_but_not_the_content():
    tracks = manifest()
    a = make_plan(tracks, SMALL)
    b = make_plan(tracks, ShardOptions(clip_frames=64, shard_bytes=60_000_000, seed=7))
    order_a = [t.id for u in a.units for t in u.tracks]
    order_b = [t.id for u in b.units for t in u.tracks]
    assert order_a != order_b and sorted(order_a) == sorted(order_b)
    assert a.fingerprint != b.fingerprint


@pytest.mark.parametrize("seconds", [0.0, 0.3, 0.7, 1.0, 1.49, 2.2, 3.0])
def test_expected_clips_matches_the_stft_cutter(seconds):
    stft = fmt.STFTParams(n_fft=512, hop=256)
    n = int(seconds * stft.sample_rate)
    chunks = [np.zeros((n, 2), dtype=np.float32)] if n else []
    clips = list(clips_from_chunks(chunks, stft, 64))
    assert expected_clips(seconds, stft, 64) == len(clips)


def test_changes_are_explained():
    tracks = manifest()
    old = plan_record(make_plan(tracks, SMALL))
    changed = tracks[1:] + [fmt.TrackRecord(**{**tracks[0].__dict__, "id": "new"})]
    changed[0] = fmt.TrackRecord(**{**changed[0].__dict__, "size": 5})
    other = ShardOptions(stft=fmt.STFTParams(hop=512), clip_frames=32, shard_bytes=60_000_000)
    message = describe_changes(old, make_plan(changed, other))
    assert "clip_frames 64 -> 32" in message
    assert "stft.hop 1024 -> 512" in message
    assert "1 tracks added, 1 removed, 1 changed" in message
    # Tags do not decide the shards, so a retag is no change.
    retagged = [fmt.TrackRecord(**{**t.__dict__, "title": "x"}) for t in tracks]
    assert make_plan(retagged, SMALL).fingerprint == old["fingerprint"]


def test_parse_size():
    assert parse_size("1GB") == 10**9
    assert parse_size("500M") == 500 * 10**6
    assert parse_size("64MiB") == 64 * 2**20
    assert parse_size("2e9") == 2 * 10**9
    assert parse_size("300k") == 300_000
    for bad in ("", "lots", "0", "5X", "inf", "nan", "-1GB"):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="clip_frames"):
        ShardOptions(clip_frames=0)
    with pytest.raises(ValueError, match="n_fft"):
        ShardOptions(stft=fmt.STFTParams(n_fft=1023))
    with pytest.raises(ValueError, match="hop <= n_fft"):
        ShardOptions(stft=fmt.STFTParams(n_fft=512, hop=1024))


def test_a_track_dated_before_1970_is_planned():
    [track] = manifest(roots=1, albums=1, tracks=1)
    assert make_plan([fmt.TrackRecord(**{**track.__dict__, "mtime": -86400.5})], SMALL).units
