import io

import numpy as np
import pytest

from pipeline import format as fmt


def test_track_records_roundtrip_through_jsonl(tmp_path):
    rec = fmt.TrackRecord(
        id="ab12",
        path="/mnt/ssd1/A/B/01 \u00e9t\u00e9\n.flac",
        root="/mnt/ssd1",
        size=10,
        mtime=1.5,
        duration=3.0,
        sample_rate=44100,
        channels=2,
        codec="flac",
        artist="A",
        album="B",
        title="\u00e9t\u00e9",
        album_key="a/b",
        split="train",
        duplicate_of=None,
    )
    fmt.write_jsonl(tmp_path / fmt.TRACKS_FILE, [rec, rec])
    lines = (tmp_path / fmt.TRACKS_FILE).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2  # the newline in the path is escaped, not a line break
    assert fmt.read_tracks(tmp_path) == [rec, rec]
    assert not list(tmp_path.glob(".*tmp*"))


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    (tmp_path / fmt.FAILURES_FILE).write_text('{"path": "x", "stage": "probe", "reason": "r"}\n{oops\n')
    with pytest.raises(ValueError, match=r"failures.jsonl:2"):
        fmt.read_failures(tmp_path)


def test_spec_encoding_is_plain_npy_without_pickle():
    spec = np.random.rand(2, 8, 5).astype(np.float16)
    data = fmt.encode_spec(spec)
    back = np.load(io.BytesIO(data), allow_pickle=False)
    assert back.dtype == np.float16 and np.array_equal(back, spec)
    with pytest.raises(ValueError):
        fmt.encode_spec(spec.astype(np.float32))


def test_sample_key_has_no_dots_and_rejects_bad_ids():
    assert fmt.sample_key("0123abcd", 7) == "0123abcd_00007"
    with pytest.raises(ValueError):
        fmt.sample_key("a.b", 0)


def test_meta_and_index_roundtrip(tmp_path):
    meta = fmt.SampleMeta(track_id="t", clip=1, start_frame=1024, valid_frames=600, album_key="a/b")
    assert fmt.decode_meta(fmt.encode_meta(meta)) == meta
    index = fmt.ShardIndex(
        split="train",
        shardlist=[fmt.ShardEntry("train-000000.tar", 3, 100)],
        stft=fmt.STFTParams().to_dict(),
        clip_frames=1024,
        totals={"samples": 3},
    )
    fmt.write_index(tmp_path / "train.json", index)
    text = (tmp_path / "train.json").read_text()
    assert '"__kind__": "wids-shard-index-v1"' in text
    assert fmt.read_index(tmp_path / "train.json") == index
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        fmt.read_index(tmp_path / "bad.json")


def test_stft_defaults_drop_nyquist():
    p = fmt.STFTParams()
    assert (p.n_fft, p.hop, p.bins) == (2048, 1024, 1024)
    assert fmt.STFTParams.from_dict(p.to_dict()) == p
    assert fmt.min_valid_frames(1024) == 512


@pytest.mark.parametrize(
    "text",
    [
        '{"__kind__": "wids-shard-index-v1", "shardlist": [{"url": "train-000000.tar"}]}',  # entry fields missing
        '{"__kind__": "wids-shard-index-v1", "shardlist": ["train-000000.tar"]}',  # entries not objects
        '["train-000000.tar"]',  # not an object at all
    ],
)
def test_malformed_index_is_a_value_error_naming_the_file(tmp_path, text):
    (tmp_path / "train.json").write_text(text)
    with pytest.raises(ValueError, match=r"train.json: unreadable shard index"):
        fmt.read_index(tmp_path / "train.json")
