"""Sample encodings (pipeline/codec.py through format.read_sample): fidelity of both log8 encodings,
partial reads, old gzip samples still read, what plain webdataset makes of a gzip log8 member, and
damaged or hostile payloads."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import zlib

import numpy as np
import pytest
import webdataset as wds
import zstandard

from pipeline import codec
from pipeline import format as fmt

BINS, FRAMES = 16, 150  # 150 = two full chunks of 64 and a short one
STEP_DB = codec.LOG8_RANGE_DB / 254


def music_like(seed: int = 0, frames: int = FRAMES) -> np.ndarray:
    """Log-normal magnitudes over ~100 dB, some exact zeros, a zero-padded tail."""
    rng = np.random.default_rng(seed)
    spec = np.exp(rng.normal(0.0, 2.5, (2, BINS, frames))).astype(np.float16)
    spec[rng.random(spec.shape) < 0.05] = 0
    spec[:, :, frames - 20 :] = 0
    return spec


LOG8S = (codec.LOG8, codec.LOG8_ZSTD)

# An old-format (gzip) log8 sample as the writer of commit e576ccc wrote it: 2 x 4 bins x 70 frames
# (a full chunk of 64 and a short one), log-normal magnitudes, frames 65.. silent.
OLD_LOG8_PAYLOAD = base64.b64decode(
    "H4sIAAAAAAAEA5vsF+obEMnIUMZQrZ6SWpxcpG6loF5Taqiuo6Cell9UUpSYF59flJIKEndLzClOBYoXZyQWpAL5GuYGOgpGOgom"
    "mjoKtQpkAS4Ab5Zbe4AAAAAfiwgAAAAAAAQDAQAC//1jkK9iaShvnHgAPp0ZQQAhUENgAFF3SQMmXS0AV1WnS0S6OHW1cg3DH5ML"
    "Znp4rQBnTbpSY097iMBKWWbNYRsZQVKmKD1yQas5zGQASF5EGYVGM1gAhmBQfE5NINDkPgBrfD0ApowqICNbZIajZ07DYVZJX5EA"
    "HZyTF09/a34KSAdjBB9yAGAnREUsNlICoAAAtNUeVZ4ASAqQNSZnlGRhAGIbccxZN15TkXstigAgXQxMxHxfSp4WdqwAezs1QF9u"
    "Y1XvOI/LYVaMOAPS/y68AAoAoYZyfuQ+e5ZdaC5UWmAAYmJLEy8vawBoABdfjF8ATi9EX1dZOUIlg5egFI0wIG8+XkhrYF8s/llp"
    "VBQYG6wqF09UsFyNLDgPs2utZ1xhcb9iAK6ldaCFQABTQyVXO1d3NCiHYTFcVWEAoFoAImuURQAuSZBTaIdAP4tMGT4PHI+/zAoA"
    "c2leT2dOAF9jwWZZEjqasAUAG2UicVYAaJ91tLFjchgHbCiSbh+oMDk3pn5ngwAVT+1xPGDuLX0AmGkEZlJvLGoRO6WbVX4ybmhb"
    "pokbSYxYiwBacnmqL0ZWFYkbDXKBSpJ8mYcXECAgXwCdNLwjEFGRnqOvJZsAPccARAyug+RqNZjMWswATRBxKQ1jdcB0dEOZnwiJ"
    "jWFtbGyF2urAbloRAKDIVklnRVX7bjIAAgAAH4sIAAAAAAAEA7Pe+dTZyv95JwORAABDQ66FMAAAAA=="
)
OLD_LOG8_JSON = (
    '{"album_key":"a/b","clip":0,"codec":{"spec":{"chunk_frames":64,"members":[92,535,31],"range_db":'
    '80.0,"reference":282.75}},"encoding":"log8","format_version":2,"start_frame":0,"stft":{"bins":4,'
    '"hop":1024,"n_fft":8,"sample_rate":44100,"window":"hann"},"track_id":"old","valid_frames":65}'
)
# sha256 of its decoded float16 [2, 4, 70]
OLD_LOG8_DECODED_SHA256 = "ecf43e779a37d71928cca12a1af5a7df0443b39ca0cc55c3c154bbe9571b1528"


def log8_sample(spec: np.ndarray, encoding: str = codec.LOG8) -> dict:
    meta = fmt.SampleMeta("t", 0, 0, spec.shape[2], "a/b", stft=fmt.STFTParams(n_fft=2 * BINS).to_dict())
    return {"__key__": "t_00000", **fmt.encode_sample({"spec": spec}, meta, encoding)}


@pytest.mark.parametrize("encoding", LOG8S)
def test_log8_is_within_half_a_step_over_its_range_and_silent_below_it(encoding):
    spec = music_like()
    (stored,), meta = fmt.read_sample(log8_sample(spec, encoding))
    back = stored.read().astype(np.float32)
    original = spec.astype(np.float32)
    reference = original.max()
    assert meta.encoding == encoding and meta.codec["spec"]["reference"] == float(reference) and back.max() == reference
    audible = original >= reference * 10 ** (-codec.LOG8_RANGE_DB / 20)
    error_db = np.abs(20 * np.log10(back[audible] / original[audible]))
    # float16 rounding of the decoded level adds up to 2^-11 relative (0.004 dB)
    assert error_db.max() <= STEP_DB / 2 + 0.01 and 0.05 < error_db.mean() < STEP_DB / 2
    assert not back[~audible].any()


@pytest.mark.parametrize("encoding", LOG8S)
def test_silent_sample_decodes_to_zeros(encoding):
    (stored,), _ = fmt.read_sample(log8_sample(np.zeros((2, BINS, 70), dtype=np.float16), encoding))
    assert stored.frames == 70 and not stored.read().any()


@pytest.mark.parametrize("encoding", LOG8S)
@pytest.mark.parametrize("start, stop", [(0, FRAMES), (0, 1), (63, 65), (64, 128), (10, 140), (149, 150), (5, 5)])
def test_a_partial_read_equals_the_same_frames_of_a_whole_read(start, stop, encoding):
    (stored,), _ = fmt.read_sample(log8_sample(music_like(), encoding))
    part = stored.read(start, stop)
    assert part.shape == (2, BINS, stop - start) and part.flags.c_contiguous and part.dtype == np.float16
    np.testing.assert_array_equal(part, stored.read()[:, :, start:stop])
    with pytest.raises(ValueError, match="outside the stored 150"):
        stored.read(0, FRAMES + 1)


@pytest.mark.parametrize("bins, frames", [(BINS, FRAMES), (3, 1), (5, 65), (7, 128)])
def test_both_log8_encodings_store_the_same_codes_for_any_shape(bins, frames):
    """Odd bins and frames too: the zstd reader gathers two codes at a time."""
    rng = np.random.default_rng(bins * frames)
    spec = np.exp(rng.normal(0.0, 3.0, (2, bins, frames))).astype(np.float16)
    spec[0, 0, 0] = 0
    (gzipped,), _ = fmt.read_sample(log8_sample(spec, codec.LOG8))
    (zstd,), meta = fmt.read_sample(log8_sample(spec, codec.LOG8_ZSTD))
    assert meta.codec["spec"]["bins"] == bins and meta.codec["spec"]["frames"] == frames
    np.testing.assert_array_equal(zstd.read(), gzipped.read())
    np.testing.assert_array_equal(zstd.read(frames // 3, frames), gzipped.read(frames // 3, frames))


def test_a_gzip_log8_sample_written_before_zstd_still_decodes_and_is_still_written_the_same():
    sample = {"__key__": "old_00000", "spec.npy.gz": OLD_LOG8_PAYLOAD, "json": OLD_LOG8_JSON.encode()}
    (stored,), meta = fmt.read_sample(sample)
    decoded = stored.read()
    assert meta.encoding == codec.LOG8 and decoded.shape == (2, 4, 70) and decoded.dtype == np.float16
    assert hashlib.sha256(decoded.tobytes()).hexdigest() == OLD_LOG8_DECODED_SHA256
    assert not decoded[:, :, 65:].any() and float(decoded.max()) == meta.codec["spec"]["reference"]
    np.testing.assert_array_equal(stored.read(60, 70), decoded[:, :, 60:])
    # its levels re-encode to the same codes, and the gzip writer still writes them byte for byte
    assert codec.encode(decoded, codec.LOG8)[0] == OLD_LOG8_PAYLOAD


def test_encoding_is_reproducible_and_plain_webdataset_decodes_the_codes(tmp_path):
    spec = music_like(1)
    sample = log8_sample(spec)
    assert log8_sample(spec) == sample
    shard = tmp_path / "s.tar"
    import tarfile

    with tarfile.open(shard, "w") as tar:
        for suffix, data in sample.items():
            if suffix != "__key__":
                info = tarfile.TarInfo(f"t_00000.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (decoded,) = list(wds.WebDataset(str(shard), shardshuffle=False, empty_check=False).decode())
    codes, description = decoded["spec.npy.gz"], decoded["json"]["codec"]["spec"]
    assert codes.dtype == np.uint8 and codes.shape == (FRAMES, 2, BINS)
    levels = codec.log8_levels(description["reference"], description["range_db"])
    np.testing.assert_array_equal(levels[codes].transpose(1, 2, 0), fmt.read_sample(sample)[0][0].read())


def _spec_key(sample: dict) -> str:
    """The sample's stored-magnitude member: spec.npy.gz (gzip log8) or spec.log8.zst (log8-zstd)."""
    (key,) = [k for k in sample if k.startswith("spec.")]
    return key


def _members(sample: dict) -> list[bytes]:
    meta = json.loads(sample["json"])
    data, out, at = sample[_spec_key(sample)], [], 0
    for n in meta["codec"]["spec"]["members"]:
        out.append(data[at : at + n])
        at += n
    return out


def _with(sample: dict, parts: list[bytes] | None = None, **codec_fields) -> dict:
    """The sample with its payload made of `parts` (and the json's member lengths to match) and
    `codec_fields` overriding the json's codec description."""
    meta = json.loads(sample["json"])
    if parts is not None:
        meta["codec"]["spec"]["members"] = [len(m) for m in parts]
    meta["codec"]["spec"].update(codec_fields)
    key = _spec_key(sample)
    payload = b"".join(parts) if parts is not None else sample[key]
    return {**sample, key: payload, "json": json.dumps(meta).encode()}


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _npy_header(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def test_damaged_and_hostile_log8_payloads_are_value_errors():
    good = log8_sample(music_like())
    members = _members(good)
    frames_bytes = 64 * 2 * BINS
    bomb = _gz(bytes(50 * frames_bytes))  # inflates far beyond its chunk
    claims_300_frames = _gz(_npy_header(np.zeros((300, 2, BINS), np.uint8))[:128])
    object_header = _gz(_npy_header(np.array([{"a": 1}], dtype=object))[:128])
    cases = {
        "members add up": _with(good, members=[1, 2]),
        "chunk 1 unreadable": _with(good, members[:2] + [b"\x1f\x8b" + bytes(30)] + members[3:]),
        "truncated or larger": _with(good, members[:1] + [bomb] + members[2:]),
        "3 chunks for 300 frames": _with(good, [claims_300_frames] + members[1:]),
        "C-order array of numbers": _with(good, [object_header] + members[1:]),
        "out of range": _with(good, range_db=-3),
        "valid codec description": _with(good, reference="loud"),
    }
    for message, sample in cases.items():
        with pytest.raises(ValueError, match=message):
            fmt.read_sample(sample)[0][0].read()


def test_damaged_and_hostile_zstd_log8_payloads_are_value_errors():
    good = log8_sample(music_like(), codec.LOG8_ZSTD)
    members = _members(good)
    chunk_bytes = 64 * 2 * BINS
    bomb = zstandard.ZstdCompressor(level=1).compress(bytes(1000 * chunk_bytes))  # declares far more than a chunk
    no_size = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(bytes(chunk_bytes))
    cases = {
        "members add up": _with(good, members=[1, 2]),
        "chunk 1 unreadable": _with(good, members[:1] + [members[1][:-5]] + members[2:]),
        "chunk 2 does not declare its size": _with(good, members[:2] + [b"\x28\xb5\x2f\xfd" + bytes(30)]),
        "chunk 0 declares 2048000 bytes, expected 2048": _with(good, [bomb] + members[1:]),
        "chunk 1 does not declare its size": _with(good, members[:1] + [no_size] + members[2:]),
        "chunk 0 unreadable": _with(good, [b"\x00" * 8] + members[1:]),
        "chunk 2 unreadable": _with(good, members[:2] + [members[2] + b"junk"]),
        "3 chunks for 300 frames": _with(good, frames=300),
        "lacks a valid codec description": _with(good, bins=None),
        "out of range": _with(good, bins=0),
    }
    for message, sample in cases.items():
        with pytest.raises(ValueError, match=message):
            fmt.read_sample(sample)[0][0].read()


def test_member_and_json_must_agree():
    good = log8_sample(music_like())
    as_float16 = {"__key__": "t_00000", "spec.npy": good["spec.npy.gz"], "json": good["json"]}
    with pytest.raises(ValueError, match="json says log8 but there is no spec.npy.gz member"):
        fmt.read_sample(as_float16)
    meta = json.loads(good["json"])
    meta["encoding"] = "mp3"
    with pytest.raises(ValueError, match="unknown encoding 'mp3'"):
        fmt.read_sample({**good, "json": json.dumps(meta).encode()})
    with pytest.raises(ValueError, match="magic string"):  # a version-1 json (float16) whose member is no .npy
        fmt.read_sample({"spec.npy": zlib.compress(b"x"), "json": fmt.encode_meta(fmt.SampleMeta("t", 0, 0, 1, "a"))})


@pytest.mark.parametrize("encoding", LOG8S)
def test_non_finite_magnitudes_are_refused_and_negative_ones_are_silence(encoding):
    for bad in (np.nan, np.inf):
        spec = music_like()
        spec[1, 3, 7] = bad
        with pytest.raises(ValueError, match="finite and non-negative"):
            codec.encode(spec, encoding)
    spec = music_like()
    spec[0, 0, :] = -0.0  # the integer max sees these bit patterns as the largest; the float path takes over
    spec[0, 0, 5] = -1.0
    (stored,), _ = fmt.read_sample(log8_sample(spec, encoding))
    back = stored.read()
    assert not back[0, 0].any() and float(back.max()) == float(spec.max())
    if encoding == codec.LOG8_ZSTD:  # no chunk to hold anything: its reader would refuse it
        with pytest.raises(ValueError, match="bins and frames"):
            codec.encode(np.zeros((2, BINS, 0), dtype=np.float16), encoding)


# sha256 of the codes of every positive finite float16 value (bit patterns 1 .. 0x7BFF) for 146
# references (every 211th normal float16), computed with the quantiser of commit e576ccc
OLD_CODE_TABLES_SHA256 = "ee8b44eb51154e9051cddce4c743cf7e822eb5b0be18b45bc86f8eb9a0c0da38"


def test_the_codes_of_every_float16_value_are_those_log8_always_wrote():
    """Byte-reproducible shards across versions: an old set resumed with today's code gets the same
    codes. A table computed in float64 moved a few codes at rounding boundaries (real music hit them)."""
    digest = hashlib.sha256()
    for reference in np.arange(0x0400, 0x7C00, 211, dtype=np.uint16).view(np.float16):
        digest.update(codec._code_table(float(reference))[:0x7C00].tobytes())
    assert digest.hexdigest() == OLD_CODE_TABLES_SHA256
