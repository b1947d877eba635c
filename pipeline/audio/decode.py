"""Stream any audio file as 44.1 kHz stereo float32 chunks, memory flat in track length.

ffmpeg decodes, resamples and downmixes in a subprocess and we read its stdout a fixed number of
samples at a time. Choices that make the same file always give the same samples:
- the first audio stream only (`-map 0:a:0?`; without one, ffmpeg fails and the reason is "no audio
  stream"), video/subtitles/data ignored;
- resampling with the SoX resampler (`aresample=resampler=soxr`), which this ffmpeg is built
  with; a track already at the target rate passes through untouched;
- more than two channels are downmixed by ffmpeg's own rematrixing (the same matrix as `-ac 2`:
  centre and surrounds at -3 dB, LFE dropped, normalised to avoid clipping);
- mono is duplicated to both channels at full level here, because ffmpeg's mono->stereo
  upmix lowers each side by 3 dB. To know whether the stream is mono, ffmpeg writes WAV
  (`aformat=channel_layouts=mono|stereo` keeps mono as mono) and we read the channel count
  from the header, which saves a separate ffprobe per track;
- one decoder thread and `+bitexact` decoder flags, so decoders that have a reproducible code
  path use it.

Uncompressed and FLAC files already at the target rate with one or two channels are read with
libsndfile instead: for those formats it yields exactly ffmpeg's float32 samples (same integers,
same scaling; tests/test_decode.py compares every one), without starting a process (~55 ms of
CPU for this ffmpeg and its 215 shared libraries) and faster (benchmarks/README.md, "Shard:
memory"). Where libsndfile gives up on a damaged file that ffmpeg decodes past, ffmpeg takes
over at the same sample, so the output is ffmpeg's in every case.
"""

from __future__ import annotations

import collections
import os
import struct
import subprocess
import threading
from collections.abc import Generator, Iterator
from typing import IO

import numpy as np
import soundfile

from pipeline import format as fmt

# 2**17 stereo samples = 1 MiB of float32, about 3 s: big enough that per-chunk Python overhead
# is negligible next to the FFT work, small enough to keep a worker's footprint flat.
DEFAULT_CHUNK_SAMPLES = 1 << 17

_BYTES_PER_SAMPLE = 4  # float32
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_STDERR_LINES_KEPT = 20

# (format, subtype) that libsndfile decodes bit-identically to ffmpeg, each checked by a test.
_PCM = {"PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"}
_LIBSNDFILE_EXACT = {
    "WAV": _PCM,
    "WAVEX": _PCM,
    "RF64": _PCM,
    "AIFF": {"PCM_S8", "PCM_16", "PCM_24", "FLOAT"},
    "FLAC": {"PCM_S8", "PCM_16", "PCM_24"},
}


class DecodeError(Exception):
    """A file that cannot be turned into audio; `str(exc)` is one line: `PATH: reason`."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fsdecode(path)
        self.reason = reason
        super().__init__(_one_line(f"{self.path}: {reason}"))


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def ffmpeg_args(path: str | os.PathLike, sample_rate: int = fmt.SAMPLE_RATE) -> list[str]:
    """The ffmpeg command line that writes the file's first audio stream as float WAV to stdout."""
    # "file:" stops ffmpeg from reading a protocol out of names like "a:b.mp3" or "-x.mp3".
    source = "file:" + os.path.abspath(os.fsdecode(path))
    audio_filter = (
        f"aresample=osr={sample_rate}:resampler=soxr,"
        f"aformat=sample_fmts=flt:sample_rates={sample_rate}:channel_layouts=mono|stereo"
    )
    return [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-threads",
        "1",
        "-flags",
        "+bitexact",
        "-i",
        source,
        "-map",
        "0:a:0?",
        "-vn",
        "-sn",
        "-dn",
        "-map_metadata",
        "-1",
        "-af",
        audio_filter,
        "-filter_threads",
        "1",
        "-c:a",
        "pcm_f32le",
        "-f",
        "wav",
        "-fflags",
        "+bitexact",
        "-flags",
        "+bitexact",
        "pipe:1",
    ]


def decode_chunks(
    path: str | os.PathLike,
    *,
    sample_rate: int = fmt.SAMPLE_RATE,
    chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
    allow_libsndfile: bool = True,
) -> Iterator[np.ndarray]:
    """Yield float32 `[n, 2]` chunks of the whole track, n == chunk_samples except for the last.

    Raises DecodeError (one line: file and reason) when the file is missing or empty, has no audio
    stream, ffmpeg exits non-zero (even after some chunks were yielded) or no sample comes out.
    Closing the generator early kills ffmpeg. `allow_libsndfile=False` always uses ffmpeg (the
    samples are the same; tests and benchmarks compare the two).
    """
    if chunk_samples < 1:
        raise ValueError(f"chunk_samples must be positive, got {chunk_samples}")
    try:
        if os.stat(path).st_size == 0:
            raise DecodeError(path, "empty file")
    except OSError as exc:
        raise DecodeError(path, exc.strerror or str(exc)) from exc

    chunks_done = 0
    sound = _open_exact_with_libsndfile(path, sample_rate) if allow_libsndfile else None
    if sound is not None:
        with sound:
            chunks_done, complete = yield from _libsndfile_chunks(sound, chunk_samples)
        if complete and chunks_done:
            return
        # libsndfile gave up on damage (ffmpeg continues from the same chunk), or read nothing:
        # really empty, or a header it takes literally (a streamed WAV's data size of 0) where
        # ffmpeg reads on to the end. Either way ffmpeg decides.
    chunks = _ffmpeg_chunks(path, sample_rate, chunk_samples)
    try:
        for index, chunk in enumerate(chunks):
            if index >= chunks_done:
                yield chunk
    finally:
        chunks.close()


def _open_exact_with_libsndfile(path: str | os.PathLike, sample_rate: int) -> soundfile.SoundFile | None:
    """The file opened with libsndfile if it gives ffmpeg's exact samples for it, else None."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(12)
    except OSError:
        return None
    # Checking the container first keeps libsndfile (and mpg123's console chatter) off MP3/Ogg files.
    if not (
        magic[:4] in (b"RIFF", b"RF64")
        and magic[8:12] == b"WAVE"
        or magic[:4] == b"FORM"
        and magic[8:12] in (b"AIFF", b"AIFC")
        or magic[:4] == b"fLaC"
    ):
        return None
    try:
        sound = soundfile.SoundFile(os.fsencode(path))  # bytes: names need not be valid UTF-8
    except (soundfile.LibsndfileError, RuntimeError, OSError):
        return None
    if (
        sound.subtype in _LIBSNDFILE_EXACT.get(sound.format, ())
        and sound.samplerate == sample_rate
        and sound.channels in (1, 2)
    ):
        return sound
    sound.close()
    return None


def _libsndfile_chunks(sound: soundfile.SoundFile, chunk_samples: int) -> Generator[np.ndarray, None, tuple[int, bool]]:
    """Yield stereo chunks; returns (chunks yielded, False if libsndfile failed part way)."""
    done = 0
    while True:
        try:
            decoded = sound.read(chunk_samples, dtype="float32", always_2d=True)
        except soundfile.LibsndfileError:
            return done, False
        if len(decoded) == 0:
            return done, True
        yield np.repeat(decoded, fmt.CHANNELS, axis=1) if decoded.shape[1] == 1 else decoded
        done += 1
        if len(decoded) < chunk_samples:
            return done, True


def _ffmpeg_chunks(path: str | os.PathLike, sample_rate: int, chunk_samples: int) -> Iterator[np.ndarray]:
    proc = subprocess.Popen(
        ffmpeg_args(path, sample_rate),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES_KEPT)
    # ffmpeg can print an error per corrupt frame; draining stderr on a thread keeps it from
    # blocking on a full pipe while we block on stdout.
    drain = threading.Thread(target=_drain_lines, args=(proc.stderr, stderr_tail), daemon=True)
    drain.start()
    try:
        try:
            channels = _read_wav_header(proc.stdout, sample_rate)
        except ValueError as exc:
            raise DecodeError(path, str(exc)) from exc
        if channels is None:
            proc.wait()
            drain.join()
            raise DecodeError(path, _failure_reason(proc.returncode, stderr_tail))
        total = 0
        for chunk in _read_chunks(proc.stdout, channels, chunk_samples):
            total += len(chunk)
            yield chunk
        proc.wait()
        drain.join()
        if proc.returncode != 0:
            raise DecodeError(path, _failure_reason(proc.returncode, stderr_tail))
        if total == 0:
            raise DecodeError(path, "no audio samples decoded")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        drain.join()
        proc.stderr.close()


def _drain_lines(stream: IO[bytes], tail: collections.deque) -> None:
    for raw in stream:
        line = raw.decode("utf-8", "replace").strip()
        if line:
            tail.append(line)


def _failure_reason(returncode: int, stderr_tail: collections.deque) -> str:
    lines = list(stderr_tail)
    if any("does not contain any stream" in line for line in lines):
        return "no audio stream"
    if not lines:
        return f"ffmpeg exited with code {returncode} and no message"
    last = lines[-1]
    # ffmpeg prefixes input errors with the URL we gave it; the path is already in the message.
    if last.startswith("file:") and ": " in last:
        last = last.rsplit(": ", 1)[1]
    return f"ffmpeg exited with code {returncode}: {last}"


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    buffer = bytearray(size)
    got = _fill(stream, memoryview(buffer))
    return bytes(buffer[:got])


def _fill(stream: IO[bytes], view: memoryview) -> int:
    """Read into `view` until it is full or the stream ends; returns the bytes read."""
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _read_wav_header(stream: IO[bytes], sample_rate: int) -> int | None:
    """Consume the RIFF header up to the data chunk; returns the channel count, None at EOF."""
    riff = _read_exactly(stream, 12)
    if len(riff) < 12:
        return None
    if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise ValueError("ffmpeg did not write a WAV header")
    channels = None
    while True:
        chunk_header = _read_exactly(stream, 8)
        if len(chunk_header) < 8:
            return None
        chunk_id, chunk_size = chunk_header[:4], struct.unpack("<I", chunk_header[4:])[0]
        if chunk_id == b"data":
            if channels is None:
                raise ValueError("ffmpeg wrote WAV data before its format chunk")
            return channels
        body = _read_exactly(stream, chunk_size + (chunk_size & 1))
        if chunk_id == b"fmt ":
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if (
                tag not in (_WAVE_FORMAT_IEEE_FLOAT, _WAVE_FORMAT_EXTENSIBLE)
                or bits != 32
                or channels not in (1, 2)
                or rate != sample_rate
            ):
                raise ValueError(
                    f"unexpected ffmpeg output format: tag {tag:#x}, {channels} channels, {rate} Hz, {bits} bits"
                )


def _read_chunks(stream: IO[bytes], channels: int, chunk_samples: int) -> Iterator[np.ndarray]:
    frame_bytes = channels * _BYTES_PER_SAMPLE
    while True:
        buffer = bytearray(chunk_samples * frame_bytes)
        got = _fill(stream, memoryview(buffer))
        samples = got // frame_bytes  # a torn last frame can only come from a killed ffmpeg
        if samples == 0:
            return
        decoded = np.frombuffer(buffer, dtype="<f4", count=samples * channels).reshape(samples, channels)
        if channels == 1:
            yield np.repeat(decoded, fmt.CHANNELS, axis=1)
        else:
            yield decoded
        if samples < chunk_samples:
            return
