"""What a container's own structure says about where the file should end: truncation checks.

ffprobe's duration for a cut-off file is not always the header's promise: for WAV it is computed
from the bytes present, for Ogg from the last granule position found, so a truncated file would pass
as a shorter track (ingest compares the header's duration with the last packets for the rest, see
probe.py). These checks read the container's length fields instead, with a few small reads:

- RIFF/RF64 (WAV) and FORM (AIFF/AIFC): the size in the outer chunk header; 0 and 0xFFFFFFFF mean
  "unknown" (a writer that streamed to a pipe) and are not checked;
- Ogg (Vorbis, Opus, FLAC-in-Ogg): the last page must carry the end-of-stream flag, which every
  encoder sets on a stream's final page;
- MP4/M4A/MOV: the top-level boxes (`ftyp`, `moov`, `mdat`, ...) must fit in the file.
"""

from __future__ import annotations

OGG_EOS = 0x04  # header_type flag of an Ogg stream's last page
_TAIL_BYTES = 64 * 1024  # an Ogg page is at most 65,307 bytes, so the last page starts within this
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
_MAX_BOXES = 10_000  # a crafted file of tiny boxes must not make the walk long


def truncation(path: str, head: bytes, size: int) -> str | None:
    """The reason `path` (of `size` bytes, starting with `head`) is cut short, or None when its
    container's length fields agree with the file (or it has none this module reads)."""
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return _declared_size(head, size, "WAV", little_endian=True)
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return _declared_size(head, size, "AIFF", little_endian=False)
    if head[:4] == b"OggS":
        return _ogg_end(path, size)
    if head[4:8] == b"ftyp":
        return _mp4_boxes(path, size)
    return None


def _declared_size(head: bytes, size: int, kind: str, little_endian: bool) -> str | None:
    order = "little" if little_endian else "big"
    declared = int.from_bytes(head[4:8], order)
    if head[:4] == b"RF64" and head[12:16] == b"ds64" and len(head) >= 28:
        declared = int.from_bytes(head[20:28], "little")  # the 64-bit RIFF size lives in the ds64 chunk
    elif declared in _UNKNOWN_SIZES:
        return None
    expected = declared + 8
    if size + 1 < expected:  # one byte of slack: some writers count a pad byte they never write
        return f"truncated: the {kind} header says {expected} bytes but the file has {size}"
    return None


def _ogg_end(path: str, size: int) -> str | None:
    with open(path, "rb") as fh:
        fh.seek(max(0, size - _TAIL_BYTES))
        tail = fh.read()
    page = tail.rfind(b"OggS")
    while page != -1 and (len(tail) < page + 27 or tail[page + 4] != 0):  # version 0, a full header
        page = tail.rfind(b"OggS", 0, page)
    if page == -1:
        return "truncated: no Ogg page header in the last 64 KiB of the file"
    if not tail[page + 5] & OGG_EOS:
        return "truncated: the Ogg stream has no end-of-stream page (the file is cut off)"
    return None


def _mp4_boxes(path: str, size: int) -> str | None:
    offset = 0
    with open(path, "rb") as fh:
        for _ in range(_MAX_BOXES):
            if offset >= size:
                return None
            fh.seek(offset)
            header = fh.read(16)
            if len(header) < 8:
                return None  # a few trailing bytes (padding) after the last box
            length = int.from_bytes(header[:4], "big")
            if length == 1:  # a 64-bit size follows the type
                if len(header) < 16:
                    return f"truncated: an MP4 box header at byte {offset} is cut off"
                length = int.from_bytes(header[8:16], "big")
            elif length == 0:  # the box runs to the end of the file
                return None
            if length < 8:
                return None  # not a box structure this walk understands: leave it to ffprobe
            if offset + length > size:
                box = header[4:8].decode("latin-1")
                short = offset + length - size
                return f"truncated: the MP4 '{box}' box at byte {offset} is {short} bytes longer than the file"
            offset += length
    return None


__all__ = ["truncation"]
