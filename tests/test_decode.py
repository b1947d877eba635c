import os
import struct
import subprocess

import numpy as np
import pytest
import soundfile

from pipeline import format as fmt
from pipeline.audio.decode import _LIBSNDFILE_EXACT, DecodeError, decode_chunks
from pipeline.demo import synth

from support import ffmpeg_children

FLOAT_WAV = ["-c:a", "pcm_f32le"]  # lossless float, so decoded samples can be compared exactly


def decode_all(path, **kwargs) -> np.ndarray:
    return np.concatenate(list(decode_chunks(path, **kwargs)))


def dominant_hz(channel: np.ndarray, sample_rate: int = fmt.SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(channel * np.hanning(len(channel))))
    return float(np.argmax(spectrum)) * sample_rate / len(channel)


def sine(hz: float, seconds: float, sample_rate: int) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("allow_libsndfile", [True, False])
def test_stereo_float_wav_comes_back_exactly_in_fixed_size_chunks(tmp_path, allow_libsndfile):
    signal = synth.synth_music(1.0, seed=1)
    path = synth.encode(signal, 44100, tmp_path / "a.wav", extra_args=FLOAT_WAV)
    chunks = list(decode_chunks(path, chunk_samples=5000, allow_libsndfile=allow_libsndfile))
    assert all(c.shape == (5000, 2) and c.dtype == np.float32 for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= 5000
    np.testing.assert_array_equal(np.concatenate(chunks), signal)


@pytest.mark.parametrize("extension", sorted(synth.ENCODERS))
def test_every_codec_the_collection_uses_decodes_to_its_duration(tmp_path, extension):
    path = synth.write_track(tmp_path / f"song{extension}", seconds=1.0, seed=6)
    decoded = decode_all(path, chunk_samples=3000)
    assert decoded.shape[1] == 2 and decoded.dtype == np.float32
    assert abs(len(decoded) - 44100) <= 2048  # lossy codecs may pad up to a frame
    assert 0.1 < np.abs(decoded).max() < 1.5


@pytest.mark.parametrize("allow_libsndfile", [True, False])
def test_mono_is_duplicated_at_full_level(tmp_path, allow_libsndfile):
    mono = synth.synth_music(0.5, channels=1, seed=2)
    path = synth.encode(mono, 44100, tmp_path / "mono.wav", extra_args=FLOAT_WAV)
    decoded = decode_all(path, chunk_samples=4096, allow_libsndfile=allow_libsndfile)
    np.testing.assert_array_equal(decoded[:, 0], mono[:, 0])
    np.testing.assert_array_equal(decoded[:, 1], mono[:, 0])


def test_surround_is_downmixed_like_ffmpeg_ac2(tmp_path):
    seconds = 0.5
    channels = np.zeros((int(seconds * 44100), 6), dtype=np.float32)
    channels[:, 0] = sine(440, seconds, 44100)  # front left
    channels[:, 1] = sine(1000, seconds, 44100)  # front right
    channels[:, 2] = 0.25 * sine(3000, seconds, 44100)  # centre: into both sides
    path = synth.encode(
        channels, 44100, tmp_path / "surround.flac", extra_args=["-c:a", "flac", "-channel_layout", "5.1"]
    )
    decoded = decode_all(path)
    assert decoded.shape == (len(channels), 2)
    assert dominant_hz(decoded[:, 0]) == pytest.approx(440, abs=5)
    assert dominant_hz(decoded[:, 1]) == pytest.approx(1000, abs=5)
    reference = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-ac", "2", "-f", "f32le", "pipe:1"],
        check=True,
        capture_output=True,
    ).stdout
    np.testing.assert_array_equal(decoded, np.frombuffer(reference, np.float32).reshape(-1, 2))


def test_22khz_8bit_mono_is_resampled_to_44khz(tmp_path):
    seconds = 1.5
    path = synth.encode(sine(500, seconds, 22050), 22050, tmp_path / "low.wav", extra_args=["-c:a", "pcm_u8"])
    decoded = decode_all(path)
    assert abs(len(decoded) - seconds * 44100) <= 64
    np.testing.assert_array_equal(decoded[:, 0], decoded[:, 1])
    assert dominant_hz(decoded[:, 0]) == pytest.approx(500, abs=5)


def test_96khz_24bit_flac_is_resampled_deterministically(tmp_path):
    seconds = 1.0
    signal = np.stack([sine(700, seconds, 96000), sine(5000, seconds, 96000)], axis=1)
    path = synth.encode(signal, 96000, tmp_path / "hires.flac", extra_args=["-c:a", "flac", "-sample_fmt", "s32"])
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=sample_rate,bits_per_raw_sample",
            "-of",
            "csv=p=0",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert probe.strip() == "96000,24"
    first = decode_all(path, chunk_samples=10_000)
    assert abs(len(first) - seconds * 44100) <= 64
    assert dominant_hz(first[:, 0]) == pytest.approx(700, abs=5)
    assert dominant_hz(first[:, 1]) == pytest.approx(5000, abs=5)
    np.testing.assert_array_equal(decode_all(path, chunk_samples=777), first)


def test_first_audio_stream_of_a_file_with_video(tmp_path):
    path = tmp_path / "clip.mkv"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=d=1:s=64x64",
            "-f",
            "lavfi",
            "-i",
            "sine=f=440:d=1",
            "-f",
            "lavfi",
            "-i",
            "sine=f=2000:d=1",
            "-map",
            "0",
            "-map",
            "1",
            "-map",
            "2",
            "-c:v",
            "mpeg4",
            "-c:a",
            "flac",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    decoded = decode_all(path)
    assert dominant_hz(decoded[:, 0]) == pytest.approx(440, abs=5)


@pytest.mark.parametrize("allow_libsndfile", [True, False])
def test_odd_file_names_are_not_read_as_protocols_or_options(tmp_path, allow_libsndfile, monkeypatch):
    signal = synth.synth_music(0.2, seed=3)
    path = synth.encode(signal, 44100, tmp_path / "x.wav", extra_args=FLOAT_WAV)
    odd = tmp_path / "-i concat:a|b é.wav"
    path.rename(odd)
    # restored afterwards: later tests start `python -c "from pipeline.cli import main"` children,
    # which import the package from their working directory first
    monkeypatch.chdir(tmp_path)
    np.testing.assert_array_equal(decode_all(odd.name, allow_libsndfile=allow_libsndfile), signal)


@pytest.mark.parametrize("allow_libsndfile", [True, False])
def test_file_names_that_are_not_utf8(tmp_path, allow_libsndfile):
    signal = synth.synth_music(0.2, seed=17)
    path = tmp_path / os.fsdecode(b"caf\xe9 latin-1.wav")
    soundfile.write(os.fsencode(path), signal, 44100, subtype="FLOAT")
    decode = decode_checking_no_ffmpeg_runs if allow_libsndfile else decode_all
    np.testing.assert_array_equal(decode(path, allow_libsndfile=allow_libsndfile), signal)


def error_for(path, **kwargs) -> str:
    with pytest.raises(DecodeError) as info:
        decode_all(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


def test_hostile_files_raise_one_line_errors_naming_the_file(tmp_path):
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    assert error_for(empty).endswith("empty file")
    text = tmp_path / "notes.mp3"
    text.write_text("these are my notes, not music\n" * 20)
    assert "ffmpeg exited with code" in error_for(text)
    noise = tmp_path / "noise.ogg"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    assert "ffmpeg exited with code" in error_for(noise)
    assert error_for(tmp_path / "missing.flac").endswith("No such file or directory")


def test_file_without_audio_stream(tmp_path):
    path = tmp_path / "video.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=d=0.5:s=64x64",
            "-c:v",
            "mpeg4",
            str(path),
        ],
        check=True,
        capture_output=True,
    )
    assert error_for(path).endswith("no audio stream")


@pytest.mark.parametrize("allow_libsndfile", [True, False])
def test_wav_with_zero_samples(tmp_path, allow_libsndfile):
    path = tmp_path / "silent.wav"
    fmt_chunk = struct.pack("<HHIIHH", 1, 2, 44100, 44100 * 4, 4, 16)
    path.write_bytes(
        b"RIFF"
        + struct.pack("<I", 36)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt_chunk
        + b"data"
        + struct.pack("<I", 0)
    )
    assert error_for(path, allow_libsndfile=allow_libsndfile).endswith("no audio samples decoded")


def test_newline_in_file_name_keeps_the_error_on_one_line(tmp_path):
    path = tmp_path / "two\nlines.mp3"
    path.write_text("not audio")
    with pytest.raises(DecodeError) as info:
        decode_all(path)
    assert "\n" not in str(info.value) and "two\\nlines.mp3" in str(info.value)


def test_truncated_mp3_decodes_what_is_there_or_fails_clearly(tmp_path):
    whole = synth.write_track(tmp_path / "whole.mp3", seconds=3.0, seed=4)
    truncated = tmp_path / "truncated.mp3"
    data = whole.read_bytes()
    truncated.write_bytes(data[: len(data) // 2 + 7])  # cut mid-frame
    try:
        decoded = decode_all(truncated)
    except DecodeError as exc:
        assert str(exc).startswith(f"{truncated}: ")
    else:
        assert 1.0 * 44100 < len(decoded) < 2.0 * 44100
        assert np.isfinite(decoded).all()


def test_closing_early_kills_ffmpeg(tmp_path):
    path = synth.write_track(tmp_path / "long.mp3", seconds=8.0, seed=5)
    assert ffmpeg_children() == []
    chunks = decode_chunks(path, chunk_samples=1024)
    next(chunks)
    assert len(ffmpeg_children()) == 1
    chunks.close()
    assert ffmpeg_children() == []


def test_rejects_nonpositive_chunk_size(tmp_path):
    with pytest.raises(ValueError, match="chunk_samples"):
        next(decode_chunks(tmp_path / "x.wav", chunk_samples=0))


def open_fds_to(path) -> int:
    return sum(os.path.realpath(f"/proc/self/fd/{fd}") == str(path) for fd in os.listdir("/proc/self/fd"))


def decode_checking_no_ffmpeg_runs(path, **kwargs) -> np.ndarray:
    chunks = []
    for chunk in decode_chunks(path, **kwargs):
        assert ffmpeg_children() == []
        chunks.append(chunk)
    return np.concatenate(chunks)


FULL_RANGE = {"PCM_32", "DOUBLE"}  # written from random full-precision values, not 16-bit music


@pytest.mark.parametrize(
    "container, subtype",
    sorted((container, subtype) for container, subtypes in _LIBSNDFILE_EXACT.items() for subtype in subtypes),
)
def test_libsndfile_reads_exactly_ffmpegs_samples_without_starting_it(tmp_path, container, subtype):
    if subtype in FULL_RANGE:
        signal = np.random.default_rng(1).uniform(-1, 1, (30_000, 2))
    else:
        signal = synth.synth_music(0.6, seed=11)
    path = tmp_path / f"x.{container.lower()}"
    soundfile.write(path, signal, 44100, format=container, subtype=subtype)
    assert (soundfile.info(path).format, soundfile.info(path).subtype) == (container, subtype)
    fast = decode_checking_no_ffmpeg_runs(path, chunk_samples=7000)
    via_ffmpeg = decode_all(path, chunk_samples=7000, allow_libsndfile=False)
    assert fast.dtype == np.float32 and fast.shape == (len(signal), 2)
    np.testing.assert_array_equal(fast.view(np.uint32), via_ffmpeg.view(np.uint32))


def test_mono_flac_through_libsndfile_is_duplicated(tmp_path):
    mono = synth.synth_music(0.3, channels=1, seed=12)
    path = tmp_path / "mono.flac"
    soundfile.write(path, mono, 44100, subtype="PCM_16")
    fast = decode_checking_no_ffmpeg_runs(path)
    np.testing.assert_array_equal(fast[:, 0], fast[:, 1])
    np.testing.assert_array_equal(fast, decode_all(path, allow_libsndfile=False))


def test_ffmpeg_takes_over_where_libsndfile_gives_up_on_a_damaged_flac(tmp_path):
    whole = synth.write_track(tmp_path / "whole.flac", seconds=3.0, seed=13)
    damaged = tmp_path / "damaged.flac"
    data = bytearray(whole.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 2000] = bytes(2000)  # a hole mid-stream
    damaged.write_bytes(bytes(data))
    with pytest.raises(soundfile.LibsndfileError):
        soundfile.read(damaged)  # so this test really crosses from libsndfile to ffmpeg
    got = decode_all(damaged, chunk_samples=4096)
    np.testing.assert_array_equal(got, decode_all(damaged, chunk_samples=4096, allow_libsndfile=False))
    assert len(got) > 2 * 44100


def test_libsndfile_path_closes_the_file_when_stopped_early(tmp_path):
    path = synth.write_track(tmp_path / "long.flac", seconds=5.0, seed=14)
    chunks = decode_chunks(path, chunk_samples=1024)
    next(chunks)
    assert open_fds_to(path) == 1 and ffmpeg_children() == []
    chunks.close()
    assert open_fds_to(path) == 0


def test_other_sample_rates_go_to_ffmpeg_for_resampling(tmp_path):
    path = tmp_path / "48k.flac"
    soundfile.write(path, synth.synth_music(5.0, sample_rate=48000, seed=15), 48000, subtype="PCM_16")
    chunks = decode_chunks(path, chunk_samples=1024)
    next(chunks)
    assert len(ffmpeg_children()) == 1
    chunks.close()


@pytest.mark.parametrize("damage", ["truncated", "data size 0", "data size unknown", "trailing chunk"])
def test_odd_wav_headers_give_the_same_samples_on_both_paths(tmp_path, damage):
    path = tmp_path / "odd.wav"
    soundfile.write(path, synth.synth_music(0.5, seed=16), 44100, subtype="PCM_24")
    data = bytearray(path.read_bytes())
    size_field = data.index(b"data") + 4
    if damage == "truncated":
        data = data[: len(data) // 2 + 2]  # mid-sample
    elif damage == "data size 0":  # what a writer that never came back to fill it in leaves
        data[size_field : size_field + 4] = struct.pack("<I", 0)
    elif damage == "data size unknown":
        data[size_field : size_field + 4] = struct.pack("<I", 0xFFFFFFFF)
    else:
        data += b"LIST" + struct.pack("<I", 4) + b"INFO"
    path.write_bytes(bytes(data))
    both = decode_all(path, chunk_samples=5000)
    assert len(both) > 0.2 * 44100
    np.testing.assert_array_equal(both, decode_all(path, chunk_samples=5000, allow_libsndfile=False))
