"""One file -> what it is: a cheap content fingerprint and ffprobe (content sniffing: sniff.py).

The fingerprint (the track id)
------------------------------
`fingerprint = blake2b-128(size as 8 bytes || first 64 KiB || middle 64 KiB || last 64 KiB)`, as 32
lower-case hex characters (no dots, so it is a valid sample-key prefix). Files of at most 192 KiB
are hashed whole.

Why it is safe enough: two different audio files collide only if they have exactly the same size
*and* the same bytes in all three sampled blocks. Compressed audio (MP3, AAC, Vorbis, Opus, FLAC)
changes every block when anything about the audio changes (the bitstream is entropy coded and
frames depend on their neighbours), a re-encode or a different rip changes the header block, and
tag edits change the first or last block (ID3v2/FLAC/MP4 metadata lives at the start, ID3v1/APE
at the end). The residual risk is two uncompressed files (WAV/AIFF) of equal length that differ
only outside the three blocks, e.g. two edits of one recording touching only the middle quarter:
accepted, since the only consequence is that one is recorded as a duplicate of the other.
What it costs: three reads of 64 KiB (192 KiB, about 2% of a typical 8 MB track) in one open,
instead of reading a terabyte; ffprobe reads the head of the file anyway, so the first block is
usually already in the page cache.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field

from pipeline.ingest.containers import truncation
from pipeline.ingest.sniff import describe_content, find_frame_chain, sniff

BLOCK_BYTES = 64 * 1024
FFPROBE_TIMEOUT_S = 120


class ProbeError(Exception):
    """A file that cannot be used; the message is the one-line reason."""


@dataclass
class ProbeResult:
    fingerprint: str
    duration: float
    sample_rate: int
    channels: int
    codec: str
    tags: dict[str, str] = field(default_factory=dict)  # artist, album_artist, album, title when present


# --- fingerprint ---------------------------------------------------------------------------


def read_head_and_fingerprint(path: str) -> tuple[bytes, int, str]:
    """One open: the first block (up to 64 KiB, for sniffing), the size, and the content fingerprint."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        digest = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
        if size <= 3 * BLOCK_BYTES:
            fh.seek(0)
            data = fh.read()
            digest.update(data)
            return data[:BLOCK_BYTES], size, digest.hexdigest()
        head = b""
        for offset in (0, (size - BLOCK_BYTES) // 2, size - BLOCK_BYTES):
            fh.seek(offset)
            block = fh.read(BLOCK_BYTES)
            head = head or block
            digest.update(block)
        return head, size, digest.hexdigest()


# --- ffprobe -------------------------------------------------------------------------------


SEEK_FAILED = "Could not read packets in interval"  # ffprobe, when a container cannot seek there

# Failures an older prober recorded that this one decides by decoding (an MP3 after more junk than
# the sniffed block, a file too short to seek in): a re-run probes those files again, once.
PROBER_VERSION = 2
RETRIED_REASONS = ("not audio: content is not a known audio format", SEEK_FAILED)


def decided_by_older_prober(outcome: dict) -> bool:
    """Whether a journaled failure may be a track to this prober (see RETRIED_REASONS)."""
    return (
        outcome.get("kind") == "failure"
        and outcome.get("prober", 1) < PROBER_VERSION
        and any(reason in outcome.get("reason", "") for reason in RETRIED_REASONS)
    )


ALL_PACKETS = ""  # run_ffprobe(read_from=ALL_PACKETS): every packet, no seek


def run_ffprobe(path: str, read_from: str | None = "99999999") -> dict:
    """ffprobe's JSON for the first audio stream, plus the packets found by seeking to `read_from`
    seconds (by default past the end, which lands on the last packets): where the audio data really
    ends, which exposes truncated files whose header still promises the full duration. One process
    per file does both. `read_from=None`: no packets, only format and stream; ALL_PACKETS: every
    packet without seeking (for files too short to seek in)."""
    intervals = ["-read_intervals", f"{read_from}%"] if read_from else []
    entries = "format:stream" + (":packet=pts_time,duration_time" if read_from is not None else "")
    args = [
        "ffprobe",
        "-v",
        "error",
        *intervals,
        "-select_streams",
        "a:0",
        "-show_entries",
        entries,
        "-of",
        "json",
        f"file:{path}",
    ]
    try:
        proc = subprocess.run(args, capture_output=True, timeout=FFPROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ProbeError(f"ffprobe did not finish in {FFPROBE_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        last = message[-1] if message else f"exit code {proc.returncode}"
        raise ProbeError(f"ffprobe cannot read it: {last.replace(f'file:{path}', '').strip(': ')}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise ProbeError(f"ffprobe printed invalid JSON ({exc})") from exc


def _number(value, cast=float):
    try:
        return cast(value)
    except (TypeError, ValueError):
        return None


def _tags(info: dict, stream: dict) -> dict[str, str]:
    """Format and stream tags, lower-case keys (Vorbis/Opus comments are stream tags)."""
    merged: dict[str, str] = {}
    for source in (stream.get("tags") or {}, info.get("format", {}).get("tags") or {}):
        for key, value in source.items():
            key = key.lower().replace(" ", "_")
            key = "album_artist" if key == "albumartist" else key
            if key in ("artist", "album_artist", "album", "title") and str(value).strip():
                merged.setdefault(key, str(value).strip())
    return merged


def mp3_declares_length(head: bytes) -> bool:
    """Whether an MP3's first frame is a Xing/Info/VBRI frame, which states the stream's frame count.

    Without one (older VBR encoders, some rippers) ffprobe's duration is file size / first bitrate,
    a guess that VBR audio misses by many seconds, so only the end of the audio data can be trusted.
    An ID3v2 tag larger than `head` hides the first frame: that counts as no header.
    """
    start = 0
    if head[:3] == b"ID3" and len(head) >= 10:
        size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
        start = 10 + size + (10 if head[5] & 0x10 else 0)
    sync = head.find(b"\xff", start)
    while sync != -1 and (sync + 1 >= len(head) or head[sync + 1] & 0xE0 != 0xE0):
        sync = head.find(b"\xff", sync + 1)
    first_frame = head[sync : sync + 64] if sync != -1 else b""
    return any(tag in first_frame for tag in (b"Xing", b"Info", b"VBRI"))


def interpret(
    info: dict, path: str | None = None, length_declared: bool = True
) -> tuple[float, int, int, str, dict[str, str]]:
    """ffprobe JSON -> (duration, sample_rate, channels, codec, tags); ProbeError when unusable.
    With `path`, a file where seeking past the end finds no packet is asked again for its last two
    seconds. `length_declared=False` (an MP3 without a length header): the duration is where the
    audio data ends, and truncation cannot be told from it."""
    streams = info.get("streams") or []
    if not streams:
        raise ProbeError("no audio stream")
    stream = streams[0]
    duration = _number(stream.get("duration")) or _number(info.get("format", {}).get("duration"))
    sample_rate = _number(stream.get("sample_rate"), int)
    channels = _number(stream.get("channels"), int)
    codec = stream.get("codec_name") or ""
    if not duration or duration <= 0:
        raise ProbeError("no duration: the audio stream is empty or unreadable")
    if not sample_rate or not channels or not codec:
        raise ProbeError(f"incomplete audio stream (codec={codec!r}, rate={sample_rate}, channels={channels})")
    ends = [
        (_number(p.get("pts_time")) or 0.0) + (_number(p.get("duration_time")) or 0.0)
        for p in info.get("packets") or []
    ]
    if not ends and codec.startswith("pcm_"):
        ends = [duration]  # PCM durations are computed from the data actually present
    if not ends and path is not None:
        try:
            again = run_ffprobe(path, read_from=f"{max(0.0, duration - 2.0):.3f}")
        except ProbeError as exc:
            if SEEK_FAILED not in str(exc):
                raise
            # A file shorter than one seek point (a 0.1 s FLAC without a seek table) cannot be
            # sought at all: its packets are few, so read them all.
            again = run_ffprobe(path, read_from=ALL_PACKETS)
        return interpret(again, length_declared=length_declared)
    if not ends:
        raise ProbeError("no audio packets can be read")
    start = _number(stream.get("start_time")) or 0.0
    data_end = max(ends) - start
    container = info.get("format", {}).get("format_name", "")
    if container == "aac" or (container == "mp3" and not length_declared):
        duration = data_end  # no length field: ffprobe's duration was size / bitrate
    elif data_end < duration - max(0.5, 0.02 * duration):
        raise ProbeError(f"truncated: the header says {duration:.1f} s but the audio data ends at {data_end:.1f} s")
    return round(duration, 6), sample_rate, channels, codec, _tags(info, stream)


def probe_file(path: str, by_extension: bool = True) -> ProbeResult | None:
    """Probe one file. Returns None for a file that only its content could have nominated and whose
    content is not audio (not a failure: it was never claimed to be audio). Raises ProbeError with a
    one-line reason for a file that is named as audio but cannot be used."""
    try:
        head, size, fingerprint = read_head_and_fingerprint(path)
    except FileNotFoundError as exc:
        raise ProbeError("file vanished between scan and probe") from exc
    except OSError as exc:
        raise ProbeError(f"cannot read: {exc.strerror or exc}") from exc
    if sniff(head, strong_only=not by_extension) is None:
        if not by_extension:
            return None
        if find_frame_chain(head) is None:
            return _probe_by_decoding(path, fingerprint, f"not audio: {describe_content(head[:64])}")
    reason = truncation(path, head, size)
    if reason is not None:
        raise ProbeError(reason)
    try:
        info = run_ffprobe(path)
    except ProbeError as exc:
        if SEEK_FAILED not in str(exc):
            raise
        # Some demuxers (AIFF) refuse a seek past the end instead of landing on the last packets:
        # ask for format and stream only; interpret() then reads the last seconds if it needs them.
        info = run_ffprobe(path, read_from=None)
    duration, sample_rate, channels, codec, tags = interpret(info, path, mp3_declares_length(head))
    return ProbeResult(fingerprint, duration, sample_rate, channels, codec, tags)


def _probe_by_decoding(path: str, fingerprint: str, not_audio: str) -> ProbeResult:
    """A file named as audio whose first block shows no known format: audio if ffmpeg decodes it.

    An MP3 can start after any amount of junk (a broken tag, a copied header, zero padding longer
    than the sniffed block); ffmpeg skips it. ffprobe's duration would count the junk as audio at the
    first frame's bitrate, so the duration is that of the decoded samples. Text is refused without
    running ffmpeg; anything ffprobe or ffmpeg cannot turn into samples is `not_audio`."""
    from pipeline import format as fmt
    from pipeline.audio.decode import DecodeError, decode_chunks

    if "text" in not_audio or "empty" in not_audio:
        raise ProbeError(not_audio)
    try:
        stream = interpret_stream(run_ffprobe(path, read_from=None))
        samples = sum(len(chunk) for chunk in decode_chunks(path, allow_libsndfile=False))
    except (ProbeError, DecodeError) as exc:
        raise ProbeError(not_audio) from exc
    if not samples:
        raise ProbeError(not_audio)
    sample_rate, channels, codec, tags = stream
    return ProbeResult(fingerprint, round(samples / fmt.SAMPLE_RATE, 6), sample_rate, channels, codec, tags)


def interpret_stream(info: dict) -> tuple[int, int, str, dict[str, str]]:
    """(sample_rate, channels, codec, tags) of ffprobe's first audio stream; ProbeError when there is none."""
    streams = info.get("streams") or []
    if not streams:
        raise ProbeError("no audio stream")
    stream = streams[0]
    sample_rate, channels = _number(stream.get("sample_rate"), int), _number(stream.get("channels"), int)
    codec = stream.get("codec_name") or ""
    if not sample_rate or not channels or not codec:
        raise ProbeError(f"incomplete audio stream (codec={codec!r}, rate={sample_rate}, channels={channels})")
    return sample_rate, channels, codec, _tags(info, stream)
