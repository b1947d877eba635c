"""`pipeline status` and `pipeline preview` on a hand-made manifest and shard."""

import numpy as np
import webdataset as wds
from click.testing import CliRunner

from pipeline import format as fmt
from pipeline.cli import main


def _track(i, root, album, split, duplicate_of=None):
    return fmt.TrackRecord(
        id=f"t{i}",
        path=f"{root}/{album}/{i}.mp3",
        root=root,
        size=1000 + i,
        mtime=0.0,
        duration=1800.0,
        sample_rate=44100,
        channels=2,
        codec="mp3",
        artist="a",
        album=album,
        title=str(i),
        album_key=f"a/{album}",
        split=split,
        duplicate_of=duplicate_of,
    )


def _make_shard(out, split, n, clip_frames=32, bins=16):
    stft = fmt.STFTParams(n_fft=bins * 2, hop=bins)
    name = fmt.shard_name(split, 0)
    rng = np.random.default_rng(0)
    with wds.TarWriter(str(out / name)) as sink:
        for clip in range(n):
            spec = rng.random((2, bins, clip_frames)).astype(np.float16)
            meta = fmt.SampleMeta(
                track_id="t0",
                clip=clip,
                start_frame=clip * clip_frames,
                valid_frames=clip_frames - 5 * (clip == n - 1),
                album_key="a/x",
                stft=stft.to_dict(),
            )
            sink.write(
                {
                    "__key__": fmt.sample_key("t0", clip),
                    fmt.SPEC_KEY: fmt.encode_spec(spec),
                    fmt.META_KEY: fmt.encode_meta(meta),
                }
            )
    index = fmt.ShardIndex(
        split=split,
        shardlist=[fmt.ShardEntry(name, n, (out / name).stat().st_size)],
        stft=stft.to_dict(),
        clip_frames=clip_frames,
        totals={"samples": n, "tracks": 1, "seconds": 1800.0, "bytes": (out / name).stat().st_size},
    )
    fmt.write_index(out / fmt.index_name(split), index)


def test_status_reports_roots_duplicates_failures_and_what_is_left(tmp_path):
    manifests, shards = tmp_path / "manifests", tmp_path / "shards"
    shards.mkdir()
    tracks = [
        _track(0, "/mnt/ssd1", "x", "train"),
        _track(1, "/mnt/ssd2", "y", "train"),
        _track(2, "/mnt/ssd2", "z", "val"),
        _track(3, "/mnt/ssd3", "x", "train", duplicate_of="t0"),
    ]
    fmt.write_jsonl(manifests / fmt.TRACKS_FILE, tracks)
    fmt.write_jsonl(
        manifests / fmt.FAILURES_FILE,
        [
            fmt.FailureRecord("/mnt/ssd1/a.mp3", "probe", "not audio: no audio stream"),
            fmt.FailureRecord("/mnt/ssd1/b.mp3", "probe", "not audio: no audio stream"),
            fmt.FailureRecord("/mnt/ssd2/c.ogg", "decode", "ffmpeg failed: Invalid data"),
        ],
    )
    _make_shard(shards, "train", 3)
    result = CliRunner().invoke(main, ["status", "--manifests", str(manifests), "--out", str(shards)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "3 tracks, 1.50 h, 1 duplicates" in out
    assert "/mnt/ssd2: 2 tracks, 1.00 h" in out
    assert "2  probe: not audio" in out and "1  decode: ffmpeg failed" in out
    assert "train: 1 shards, 3 samples" in out and "left 0.50 h" in out
    assert "val: nothing yet; estimated" in out
    assert "GB per hour of audio, float16, measured on these shards" in out  # what this folder holds


def test_status_on_empty_folders_says_nothing_yet(tmp_path):
    result = CliRunner().invoke(main, ["status", "--manifests", str(tmp_path / "m"), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "ingested: 0 tracks" in result.output and "train: nothing yet" in result.output
    per_hour = fmt.estimated_shard_bytes(3600, fmt.STFTParams(), fmt.DEFAULT_CLIP_FRAMES, encoding="log8-zstd") / 1e9
    assert f"({per_hour:.2f} GB per hour of audio, log8-zstd, estimated at these STFT settings)" in result.output


def test_preview_writes_a_png_from_a_dir_or_a_tar(tmp_path):
    _make_shard(tmp_path, "train", 3)
    for source in (tmp_path, tmp_path / "train-000000.tar"):
        out = tmp_path / f"p{len(str(source))}.png"
        result = CliRunner().invoke(main, ["preview", str(source), "--out", str(out), "--n", "2"])
        assert result.exit_code == 0, result.output
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_preview_of_garbage_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar at all")
    result = CliRunner().invoke(main, ["preview", str(bad), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error: ") and "bad.tar" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_status_of_a_mistyped_manifest_is_a_one_line_error(tmp_path):
    bad = fmt.TrackRecord(**{**_track(1, "/mnt/ssd1", "x", "train").__dict__, "duration": None})
    fmt.write_jsonl(tmp_path / "m" / fmt.TRACKS_FILE, [bad])
    result = CliRunner().invoke(main, ["status", "--manifests", str(tmp_path / "m"), "--out", str(tmp_path / "s")])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert f"{tmp_path / 'm' / fmt.TRACKS_FILE}:1: not a valid TrackRecord line (TrackRecord.duration:" in result.output
