"""Sample encodings: how a clip's STFT magnitude is stored, and the one way every reader decodes it.

`float16`: the magnitude as a plain `.npy`, `[2, bins, frames]` float16 (4 MiB per default clip).

The two log8 encodings store each value as an 8-bit code on a log scale relative to the sample's own
maximum (the reference level, kept in the sample's json): code 0 is silence (below -range_db),
codes 1..255 cover [-range_db, 0] dB in steps of range_db / 254 (0.31 dB at 80 dB), so a value in
range comes back within half a step (0.16 dB). The codes are compressed in chunks of `chunk_frames`
frames, one compressed member per chunk, whose lengths the json lists (`codec.members`), so a
reader inflates only the chunks a crop needs. They differ in the layout and the compressor:

`log8-zstd` (the default): each chunk is its codes bin-major, `[2, bins, n]` uint8 (the clip's own
layout, so neither the writer nor the reader transposes anything), as one zstd frame at level 1;
nothing else (the json holds `bins` and `frames`). Member `*.log8.zst`.

`log8` (gzip; the default before issue 22, still read and written): the codes frame-major,
`[frames, 2, bins]` uint8, as a `.npy` whose header is the first gzip member and every chunk the
next one. Concatenated gzip members are one valid gzip file, so plain webdataset (whose default
decoders gunzip `.gz` and load `.npy`) still yields its codes. Member `*.npy.gz`.

Numbers behind the choices (real music, benchmarks/README.md "Sample encodings"): zstd level 1
compresses the codes ~12x faster than zlib level 1 and inflates them 5x faster, for ~1% fewer bytes
than gzip log8; bin-major chunks are 0.6-1.6% larger than frame-major ones under zstd but save the
transposition, which cost more than zstd itself; zstd level 3 saves nothing, zlib level 6 4% for 18x
the compression time, delta filters along time or frequency at most 5% (docs/terabyte.md), and
zstd -5 or lz4 inflate 3x faster still but are 13-14% larger (over 1.4x a 320 kbps MP3).
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import numpy as np
import zstandard

FLOAT16 = "float16"
LOG8 = "log8"
LOG8_ZSTD = "log8-zstd"
ENCODINGS = (FLOAT16, LOG8, LOG8_ZSTD)
DEFAULT_ENCODING = LOG8_ZSTD

# the member suffix after the array's name ("spec", "mix", "target"), per encoding
MEMBER_SUFFIXES = {FLOAT16: "npy", LOG8: "npy.gz", LOG8_ZSTD: "log8.zst"}

LOG8_RANGE_DB = 80.0
LOG8_CHUNK_FRAMES = 64
LOG8_ZLIB_LEVEL = 1
LOG8_ZSTD_LEVEL = 1
_GZIP_WBITS = 31  # zlib's gzip container: fixed header (mtime 0), so the bytes are reproducible
_CODES = 255  # codes 1..255 on the log scale; 0 is silence

CHANNELS = 2
SPEC_DTYPE = np.float16
_FLOAT16_INF_BITS = 0x7C00  # float16 bit patterns below this are the finite non-negative values


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
        return _encode_log8_gzip(spec)
    if encoding == LOG8_ZSTD:
        return _encode_log8_zstd(spec)
    raise ValueError(f"unknown encoding {encoding!r} (choose from {', '.join(ENCODINGS)})")


def _reference(spec: np.ndarray) -> float:
    """The sample's maximum. For finite non-negative float16 the largest bit pattern is the largest
    value, and an integer max is ~10x cheaper than numpy's float16 one; anything else (NaN, inf,
    negatives, -0.0) takes the float path, which also says what is wrong."""
    top = int(spec.view(np.uint16).max()) if spec.size else 0
    if top < _FLOAT16_INF_BITS:
        return float(np.uint16(top).view(SPEC_DTYPE))
    reference = float(spec.max())
    if not np.isfinite(reference) or reference < 0:
        raise ValueError(f"spec must be finite and non-negative, max is {reference}")
    return reference


def _code_table(reference: float) -> np.ndarray:
    """The code of every float16 bit pattern for this reference: a sample's codes are then one
    lookup per value, ~10x cheaper than a logarithm each. NaN, inf, negatives and -0.0 are silence.
    Only the 31,743 positive finite patterns are computed, in float32 and in the order of operations
    the codes were always computed in, so that every log8 shard written before stays reproducible
    byte for byte (a float64 table moved codes at rounding boundaries on real music)."""
    table = np.zeros(1 << 16, dtype=np.uint8)
    if reference > 0:
        values, floor = _POSITIVE_VALUES, reference * 10.0 ** (-LOG8_RANGE_DB / 20.0)
        audible = values >= floor
        db = 20.0 * np.log10(values[audible] / np.float32(reference))
        steps = np.rint((db + LOG8_RANGE_DB) * ((_CODES - 1) / LOG8_RANGE_DB))
        table[1:_FLOAT16_INF_BITS][audible] = 1 + np.clip(steps, 0, _CODES - 1).astype(np.uint8)
    return table


# every positive finite float16 (bit patterns 1 .. 0x7BFF), as float32
_POSITIVE_VALUES = np.arange(1, _FLOAT16_INF_BITS, dtype=np.uint16).view(SPEC_DTYPE).astype(np.float32)


def _chunk_bounds(frames: int, chunk: int) -> list[tuple[int, int]]:
    return [(i, min(frames, i + chunk)) for i in range(0, frames, chunk)]


def _encode_log8_zstd(spec: np.ndarray) -> tuple[bytes, dict]:
    if spec.shape[2] < 1 or spec.shape[1] < 1:  # a stored sample has frames; its reader refuses none
        raise ValueError(f"spec must have bins and frames, got {spec.shape}")
    reference = _reference(spec)
    table = _code_table(reference)
    bits = spec.view(np.uint16)
    compressor = zstandard.ZstdCompressor(
        level=LOG8_ZSTD_LEVEL, write_checksum=False, write_content_size=True, write_dict_id=False
    )
    # np.take gathers each chunk straight into a new contiguous [2, bins, n] array (the copy that
    # slicing would need anyway); it is ~1.5x faster than fancy indexing here.
    members = [
        compressor.compress(np.take(table, bits[:, :, a:b]).data)
        for a, b in _chunk_bounds(spec.shape[2], LOG8_CHUNK_FRAMES)
    ]
    codec = {
        "reference": reference,
        "range_db": LOG8_RANGE_DB,
        "chunk_frames": LOG8_CHUNK_FRAMES,
        "bins": spec.shape[1],
        "frames": spec.shape[2],
        "members": [len(m) for m in members],
    }
    return b"".join(members), codec


def _encode_log8_gzip(spec: np.ndarray) -> tuple[bytes, dict]:
    reference = _reference(spec)
    codes = _code_table(reference)[np.ascontiguousarray(spec.transpose(2, 0, 1)).view(np.uint16)]  # [frames, 2, bins]
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


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(LOG8_ZLIB_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    return compressor.compress(data) + compressor.flush()


def log8_levels(reference: float, range_db: float) -> np.ndarray:
    """The float16 magnitude of each of the 256 codes."""
    steps = np.arange(_CODES + 1, dtype=np.float64) - 1
    levels = reference * 10.0 ** ((steps * range_db / (_CODES - 1) - range_db) / 20.0)
    levels[0] = 0.0
    with np.errstate(over="ignore"):  # a reference above float16's range gives inf levels, which readers refuse
        return levels.astype(SPEC_DTYPE)


def dequantise(codes: np.ndarray, table: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """`table[codes]` (table: 256 float16 or float32 values) into `out` (new if None) of the table's dtype.
    For C-contiguous codes with an even number of values and a C-contiguous `out`: two at a time, from a
    table of all 65,536 code pairs (two values as one uint32 or uint64, built in ~25-60 us), which halves
    the gathers, and `mode="clip"` spares numpy its bounds checks: ~4x faster than `levels[codes]`."""
    out = np.empty(codes.shape, dtype=table.dtype) if out is None else out
    width = {2: (np.uint16, np.uint32, 16), 4: (np.uint32, np.uint64, 32)}.get(table.dtype.itemsize)
    paired = codes.size % 2 == 0 and codes.flags.c_contiguous and out.flags.c_contiguous
    if width is None or not paired or out.shape != codes.shape or len(table) != _CODES + 1:
        return np.take(table, codes, out=out, mode="clip")
    single, pair, shift = width
    bits = table.view(single).astype(pair)
    # the pair (c0, c1) as stored is the uint16 c0 | c1 << 8 (little-endian) or c0 << 8 | c1 (big),
    # and the word holding (v0, v1) in memory order is v1 << shift | v0 or v0 << shift | v1: this one
    # table is right for both byte orders
    pairs = (bits[:, None] << shift | bits[None, :]).ravel()
    np.take(pairs, codes.reshape(-1).view(np.uint16), out=out.reshape(-1).view(pair), mode="clip")
    return out


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
        levels = log8_levels(float(self._codec["reference"]), float(self._codec["range_db"]))
        if self.encoding == LOG8_ZSTD:
            return dequantise(self._zstd_codes(start, stop), levels)
        return self._gzip_read(start, stop, levels)

    def read_codes(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """For a log8 sample, frames [start, stop) still quantised: ([2, bins, stop - start] uint8 codes,
        the 256 float16 levels they stand for), so `dequantise(codes, levels)` equals `read(start, stop)`
        and a reader can fold a scale into the levels rather than pass over the values again; None for
        float16. ValueError as `read`."""
        stop = self.frames if stop is None else stop
        if not 0 <= start <= stop <= self.frames:
            raise ValueError(f"frames [{start}, {stop}) outside the stored {self.frames}")
        if self._view is not None:
            return None
        levels = log8_levels(float(self._codec["reference"]), float(self._codec["range_db"]))
        if self.encoding == LOG8_ZSTD:
            return self._zstd_codes(start, stop), levels
        return np.ascontiguousarray(self._gzip_codes(start, stop).transpose(1, 2, 0)), levels

    def _chunk(self, i: int, inflate) -> bytes:
        chunk = int(self._codec["chunk_frames"])
        expected = (min(self.frames, (i + 1) * chunk) - i * chunk) * CHANNELS * self.bins
        data = inflate(self._payload[self._offsets[i] : self._offsets[i + 1]], expected, f"log8 chunk {i}")
        if len(data) != expected:
            raise ValueError(f"log8 chunk {i} holds {len(data)} bytes, expected {expected}")
        return data

    def _zstd_codes(self, start: int, stop: int) -> np.ndarray:
        """[2, bins, stop - start] uint8: each chunk's frames of the range copied into place."""
        chunk = int(self._codec["chunk_frames"])
        codes = np.empty((CHANNELS, self.bins, stop - start), dtype=np.uint8)
        decompressor = zstandard.ZstdDecompressor()
        for i in range(start // chunk, -(-stop // chunk)):
            first = i * chunk
            data = self._chunk(i, lambda member, n, what: _unzstd(decompressor, member, n, what))
            part = np.frombuffer(data, dtype=np.uint8).reshape(CHANNELS, self.bins, -1)
            lo, hi = max(start, first), min(stop, first + part.shape[2])
            codes[:, :, lo - start : hi - start] = part[:, :, lo - first : hi - first]
        return codes

    def _gzip_codes(self, start: int, stop: int) -> np.ndarray:
        """[stop - start, 2, bins] uint8, the stored frame-major layout."""
        chunk = int(self._codec["chunk_frames"])
        first, last = start // chunk, -(-stop // chunk)
        parts = [self._chunk(i, _inflate) for i in range(first, last)]
        codes = np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(-1, CHANNELS, self.bins)
        return codes[start - first * chunk : stop - first * chunk]

    def _gzip_read(self, start: int, stop: int, levels: np.ndarray) -> np.ndarray:
        codes = self._gzip_codes(start, stop)
        out = np.empty((CHANNELS, self.bins, len(codes)), dtype=SPEC_DTYPE)
        return np.take(levels, codes.transpose(1, 2, 0), out=out)  # gathered straight into [2, bins, frames]


def open_spec(payload: bytes | memoryview, encoding: str, codec: dict | None) -> StoredSpec:
    """Check a stored magnitude against its json and open it for reading; ValueError if they
    disagree or the payload is damaged. Never unpickles anything."""
    if encoding == FLOAT16:
        view = _npy_view(payload)
        return StoredSpec(FLOAT16, view.shape[1], view.shape[2], payload, {}, _view=view)
    if encoding not in (LOG8, LOG8_ZSTD):
        raise ValueError(f"unknown encoding {encoding!r} (known: {', '.join(ENCODINGS)})")
    codec = codec or {}
    try:
        reference, range_db = float(codec["reference"]), float(codec["range_db"])
        chunk = int(codec["chunk_frames"])
        members = [int(n) for n in codec["members"]]
        if encoding == LOG8_ZSTD:
            bins, frames = int(codec["bins"]), int(codec["frames"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{encoding} sample lacks a valid codec description ({exc})") from exc
    if not (np.isfinite(reference) and reference >= 0 and range_db > 0 and chunk > 0 and len(members) >= 1):
        raise ValueError(f"{encoding} codec description out of range: {codec}")
    if min(members) < 1 or sum(members) != len(payload):
        raise ValueError(f"{encoding} payload is {len(payload)} bytes, its members add up to {sum(members)}")
    offsets = np.concatenate([[0], np.cumsum(members)]).tolist()
    if encoding == LOG8_ZSTD:
        if bins < 1 or frames < 1:
            raise ValueError(f"{encoding} codec description out of range: {codec}")
    else:  # gzip: the shape is in the npy header, the first member
        header = _inflate(payload[: offsets[1]], _NPY_HEADER_MAX, "log8 header")
        shape, dtype, _ = _npy_header(header)
        if dtype != np.uint8 or len(shape) != 3 or shape[1] != CHANNELS:
            raise ValueError(f"log8 codes must be [frames, {CHANNELS}, bins] uint8, got {shape} {dtype}")
        frames, bins = shape[0], shape[2]
        offsets = offsets[1:]
    if len(offsets) - 1 != -(-frames // chunk):
        raise ValueError(f"{encoding} payload has {len(offsets) - 1} chunks for {frames} frames of {chunk}")
    return StoredSpec(encoding, bins, frames, payload, codec, _offsets=offsets)


def _unzstd(decompressor: zstandard.ZstdDecompressor, member: bytes | memoryview, limit: int, what: str) -> bytes:
    """One whole zstd frame holding exactly `limit` bytes. The size its header declares is checked
    first: zstandard would allocate whatever a damaged or hostile header claims."""
    try:
        declared = zstandard.frame_content_size(member)
        if declared < 0:
            raise ValueError(f"{what} does not declare its size")
        if declared != limit:
            raise ValueError(f"{what} declares {declared} bytes, expected {limit}")
        return decompressor.decompress(member, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise ValueError(f"{what} unreadable ({exc})") from exc


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
    """Expected member bytes per frame, for size estimates (log8, either compressor: measured on
    real music, rounded up)."""
    raw = CHANNELS * bins
    return raw * 2.0 if encoding == FLOAT16 else raw * LOG8_ESTIMATED_RATIO


# log8 member bytes / uint8 code bytes: 0.55-0.57 measured on the Wesnoth soundtrack for gzip and zstd
# (docs/terabyte.md, benchmarks/README.md), rounded up so that preflight and shard packing err on the large side.
LOG8_ESTIMATED_RATIO = 0.6

__all__ = [
    "FLOAT16",
    "LOG8",
    "LOG8_ZSTD",
    "ENCODINGS",
    "DEFAULT_ENCODING",
    "MEMBER_SUFFIXES",
    "LOG8_RANGE_DB",
    "LOG8_CHUNK_FRAMES",
    "LOG8_ZLIB_LEVEL",
    "LOG8_ZSTD_LEVEL",
    "LOG8_ESTIMATED_RATIO",
    "encode",
    "open_spec",
    "StoredSpec",
    "log8_levels",
    "stored_bytes_per_frame",
]
