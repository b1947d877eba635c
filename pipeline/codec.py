"""Sample encodings: how a clip's STFT magnitude is stored, and the one way every reader decodes it.

`float16`: the magnitude as a plain `.npy`, `[2, bins, frames]` float16 (4 MiB per default clip).

`log8`: each value as an 8-bit code on a log scale relative to the sample's own maximum (the
reference level, kept in the sample's json): code 0 is silence (below -range_db), codes 1..255 cover
[-range_db, 0] dB in steps of range_db / 254 (0.31 dB at 80 dB), so a value in range comes back
within half a step (0.16 dB). The codes are stored frame-major, `[frames, 2, bins]` uint8, as a
`.npy` compressed with gzip, one gzip member per `chunk_frames` frames (the npy header is the first
member). Concatenated gzip members are one valid gzip file, so plain webdataset (whose default
decoders gunzip `.gz` and load `.npy`) still yields the codes; knowing the member lengths (the json's
`codec.members`), a reader can instead inflate only the chunks a crop needs.

Numbers behind the choices (real music, docs/terabyte.md): frame-major codes with zlib level 1 are
0.25x float16 (1.1x a 320 kbps MP3); level 6 saves another 4% for ~1.7x the compression time, and
delta filters along time or frequency save at most 5%, so neither is used.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import numpy as np

FLOAT16 = "float16"
LOG8 = "log8"
ENCODINGS = (FLOAT16, LOG8)
DEFAULT_ENCODING = LOG8

# the member suffix after the array's name ("spec", "mix", "target"), per encoding
MEMBER_SUFFIXES = {FLOAT16: "npy", LOG8: "npy.gz"}

LOG8_RANGE_DB = 80.0
LOG8_CHUNK_FRAMES = 64
LOG8_ZLIB_LEVEL = 1
_GZIP_WBITS = 31  # zlib's gzip container: fixed header (mtime 0), so the bytes are reproducible
_CODES = 255  # codes 1..255 on the log scale; 0 is silence

CHANNELS = 2
SPEC_DTYPE = np.float16


def encode(spec: np.ndarray, encoding: str) -> tuple[bytes, dict]:
    """[2, bins, frames] float16 -> (member bytes, the `codec` dict for the sample's json)."""
    if spec.ndim != 3 or spec.shape[0] != CHANNELS or spec.dtype != SPEC_DTYPE:
        raise ValueError(
            f"spec must be [{CHANNELS}, bins, frames] {np.dtype(SPEC_DTYPE)}, got {spec.shape} {spec.dtype}"
        )
    if encoding == FLOAT16:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(spec), allow_pickle=False)
        return buf.getvalue(), {}
    if encoding == LOG8:
        return _encode_log8(spec)
    raise ValueError(f"unknown encoding {encoding!r} (choose from {', '.join(ENCODINGS)})")


def _encode_log8(spec: np.ndarray) -> tuple[bytes, dict]:
    reference = float(spec.max()) if spec.size else 0.0
    if not np.isfinite(reference) or reference < 0:
        raise ValueError(f"spec must be finite and non-negative, max is {reference}")
    # A float16 has 65,536 possible values: quantise each of them once (for this reference) and look
    # the samples' codes up, ~10x cheaper than a logarithm per value and the same codes.
    values = _FLOAT16_VALUES
    table = np.zeros(values.shape, dtype=np.uint8)
    if reference > 0:
        floor = reference * 10.0 ** (-LOG8_RANGE_DB / 20.0)
        audible = values >= floor  # NaN, negatives and -0.0 are silence
        db = 20.0 * np.log10(values[audible] / np.float32(reference))
        steps = np.rint((db + LOG8_RANGE_DB) * ((_CODES - 1) / LOG8_RANGE_DB))
        table[audible] = 1 + np.clip(steps, 0, _CODES - 1).astype(np.uint8)
    codes = table[np.ascontiguousarray(spec.transpose(2, 0, 1)).view(np.uint16)]  # [frames, 2, bins]
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(codes.dtype), "fortran_order": False, "shape": codes.shape}
    )
    members = [_gzip(header.getvalue())]
    members += [_gzip(codes[i : i + LOG8_CHUNK_FRAMES].tobytes()) for i in range(0, len(codes), LOG8_CHUNK_FRAMES)]
    codec = {
        "reference": reference,
        "range_db": LOG8_RANGE_DB,
        "chunk_frames": LOG8_CHUNK_FRAMES,
        "members": [len(m) for m in members],
    }
    return b"".join(members), codec


_FLOAT16_VALUES = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(LOG8_ZLIB_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    return compressor.compress(data) + compressor.flush()


def log8_levels(reference: float, range_db: float) -> np.ndarray:
    """The float16 magnitude of each of the 256 codes."""
    steps = np.arange(_CODES + 1, dtype=np.float64) - 1
    levels = reference * 10.0 ** ((steps * range_db / (_CODES - 1) - range_db) / 20.0)
    levels[0] = 0.0
    return levels.astype(SPEC_DTYPE)


@dataclass
class StoredSpec:
    """A sample's stored magnitude, opened: `read(start, stop)` decodes frames [start, stop) only."""

    encoding: str
    bins: int
    frames: int
    _payload: bytes | memoryview
    _codec: dict
    _view: np.ndarray | None = None  # float16: a zero-copy view of the payload
    _offsets: list[int] | None = None  # log8: byte offset of each chunk member (and the end)

    @property
    def views_payload(self) -> bool:
        """Whether `read` returns views of the payload (which then stays alive) rather than new arrays."""
        return self._view is not None

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """[2, bins, stop - start] float16; for float16 a read-only view of the payload (no copy).
        ValueError when the range is outside the stored frames or a chunk is damaged."""
        stop = self.frames if stop is None else stop
        if not 0 <= start <= stop <= self.frames:
            raise ValueError(f"frames [{start}, {stop}) outside the stored {self.frames}")
        if self._view is not None:
            return self._view[:, :, start:stop]
        chunk = int(self._codec["chunk_frames"])
        first, last = start // chunk, -(-stop // chunk)
        parts = []
        for i in range(first, last):
            expected = (min(self.frames, (i + 1) * chunk) - i * chunk) * CHANNELS * self.bins
            data = _inflate(self._payload[self._offsets[i] : self._offsets[i + 1]], expected, f"log8 chunk {i}")
            if len(data) != expected:
                raise ValueError(f"log8 chunk {i} holds {len(data)} bytes, expected {expected}")
            parts.append(data)
        codes = np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(-1, CHANNELS, self.bins)
        codes = codes[start - first * chunk : stop - first * chunk]
        levels = log8_levels(float(self._codec["reference"]), float(self._codec["range_db"]))
        out = np.empty((CHANNELS, self.bins, len(codes)), dtype=SPEC_DTYPE)
        return np.take(levels, codes.transpose(1, 2, 0), out=out)  # gathered straight into [2, bins, frames]


def open_spec(payload: bytes | memoryview, encoding: str, codec: dict | None) -> StoredSpec:
    """Check a stored magnitude's header against its json and open it for reading; ValueError if
    they disagree or the payload is damaged. Never unpickles anything."""
    if encoding == FLOAT16:
        view = _npy_view(payload)
        return StoredSpec(FLOAT16, view.shape[1], view.shape[2], payload, {}, _view=view)
    if encoding != LOG8:
        raise ValueError(f"unknown encoding {encoding!r} (known: {', '.join(ENCODINGS)})")
    codec = codec or {}
    try:
        reference, range_db = float(codec["reference"]), float(codec["range_db"])
        chunk = int(codec["chunk_frames"])
        members = [int(n) for n in codec["members"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"log8 sample lacks a valid codec description ({exc})") from exc
    if not (np.isfinite(reference) and reference >= 0 and range_db > 0 and chunk > 0 and len(members) >= 1):
        raise ValueError(f"log8 codec description out of range: {codec}")
    if min(members) < 1 or sum(members) != len(payload):
        raise ValueError(f"log8 payload is {len(payload)} bytes, its members add up to {sum(members)}")
    offsets = np.concatenate([[0], np.cumsum(members)]).tolist()
    header = _inflate(payload[: offsets[1]], _NPY_HEADER_MAX, "log8 header")
    shape, dtype, _ = _npy_header(header)
    if dtype != np.uint8 or len(shape) != 3 or shape[1] != CHANNELS:
        raise ValueError(f"log8 codes must be [frames, {CHANNELS}, bins] uint8, got {shape} {dtype}")
    if len(members) - 1 != -(-shape[0] // chunk):
        raise ValueError(f"log8 payload has {len(members) - 1} chunks for {shape[0]} frames of {chunk}")
    return StoredSpec(LOG8, shape[2], shape[0], payload, codec, _offsets=offsets[1:])


def _inflate(member: bytes | memoryview, limit: int, what: str) -> bytes:
    """One whole gzip member, inflated to at most `limit` + 1 bytes (a damaged or hostile member
    cannot make a reader allocate more than the sample it claims to be)."""
    inflater = zlib.decompressobj(_GZIP_WBITS)
    try:
        data = inflater.decompress(member, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"{what} unreadable ({exc})") from exc
    if not inflater.eof:
        raise ValueError(f"{what} is truncated or larger than {limit} bytes")
    return data


_NPY_HEADER_MAX = (1 << 16) + 16  # the largest version-1 .npy header


def _npy_header(data: bytes | memoryview) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a `.npy` payload; pickled (object) or Fortran-order arrays are refused."""
    stream = io.BytesIO(bytes(data[:_NPY_HEADER_MAX]))
    version = np.lib.format.read_magic(stream)
    reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if reader is None:
        raise ValueError(f"unsupported .npy format version {version}")
    shape, fortran_order, dtype = reader(stream)
    if dtype.hasobject or fortran_order:
        raise ValueError(f"a stored spec must be a C-order array of numbers, got {dtype} fortran={fortran_order}")
    return tuple(shape), dtype, stream.tell()


def _npy_view(data: bytes | memoryview) -> np.ndarray:
    """A read-only view of a float16 `.npy` payload without copying it (4 MiB per default sample)."""
    shape, dtype, offset = _npy_header(data)
    if dtype != SPEC_DTYPE or len(shape) != 3 or shape[0] != CHANNELS:
        raise ValueError(f"must be a C-order [{CHANNELS}, bins, frames] float16 array, got {shape} {dtype}")
    count = int(np.prod(shape))
    if len(data) - offset < count * dtype.itemsize:
        raise ValueError(f"holds {len(data) - offset} bytes of data, its header says {count * dtype.itemsize}")
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)


def stored_bytes_per_frame(bins: int, encoding: str) -> float:
    """Expected member bytes per frame, for size estimates (log8: measured on real music, rounded up)."""
    raw = CHANNELS * bins
    return raw * 2.0 if encoding == FLOAT16 else raw * LOG8_ESTIMATED_RATIO


# log8 member bytes / uint8 code bytes: 0.55-0.57 measured on the Wesnoth soundtrack (docs/terabyte.md),
# rounded up so that preflight and shard packing err on the large side.
LOG8_ESTIMATED_RATIO = 0.6

__all__ = [
    "FLOAT16",
    "LOG8",
    "ENCODINGS",
    "DEFAULT_ENCODING",
    "MEMBER_SUFFIXES",
    "LOG8_RANGE_DB",
    "LOG8_CHUNK_FRAMES",
    "LOG8_ZLIB_LEVEL",
    "LOG8_ESTIMATED_RATIO",
    "encode",
    "open_spec",
    "StoredSpec",
    "log8_levels",
    "stored_bytes_per_frame",
]
