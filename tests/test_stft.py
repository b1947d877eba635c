import numpy as np
import pytest
import torch

from pipeline import format as fmt
from pipeline.audio.decode import DecodeError, decode_chunks
from pipeline.audio.stft import (
    FLOAT16_MAX,
    Clip,
    clips_from_chunks,
    cut_clips,
    stft_frame_blocks,
    stft_magnitude,
    to_spec_dtype,
    track_clips,
)
from pipeline.demo import synth

from support import ffmpeg_children

DEFAULT = fmt.STFTParams()
SMALL = fmt.STFTParams(n_fft=64, hop=24)  # hop divides neither n_fft nor typical chunk sizes


def split(signal: np.ndarray, size: int) -> list[np.ndarray]:
    return [signal[i : i + size] for i in range(0, len(signal), size)]


def chunked_magnitude(signal: np.ndarray, stft: fmt.STFTParams, chunk: int) -> np.ndarray:
    return np.concatenate(list(stft_frame_blocks(split(signal, chunk), stft)), axis=2)


def noise(samples: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (samples, 2)).astype(np.float32)


def test_whole_signal_reference_matches_torch_centred_stft():
    signal = noise(10 * 1024 + 300)
    expected = torch.stft(
        torch.from_numpy(signal.T.copy()),
        2048,
        1024,
        window=torch.hann_window(2048),
        center=True,
        pad_mode="constant",
        return_complex=True,
    ).abs()[:, :1024]
    reference = stft_magnitude(signal, DEFAULT)
    assert reference.shape == (2, 1024, 1 + len(signal) // 1024) and reference.dtype == np.float32
    np.testing.assert_allclose(reference, expected.numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("samples", [1024 * 20, 1024 * 20 + 1, 1024 * 20 - 1, 3000, 2048, 500])
@pytest.mark.parametrize("chunk", [1, 700, 1023, 1024, 2048, 4099, 1 << 17])
def test_chunked_stft_equals_whole_track_stft(samples, chunk):
    signal = noise(samples, seed=samples)
    chunked = chunked_magnitude(signal, DEFAULT, chunk)
    assert chunked.shape == (2, DEFAULT.bins, 1 + samples // DEFAULT.hop)
    np.testing.assert_array_equal(chunked, stft_magnitude(signal, DEFAULT))


@pytest.mark.parametrize("chunk", [1, 5, 24, 63, 64, 100])
def test_chunked_stft_with_hop_not_dividing_n_fft(chunk):
    signal = noise(24 * 37 + 11, seed=chunk)
    chunked = chunked_magnitude(signal, SMALL, chunk)
    assert chunked.shape == (2, 32, 1 + len(signal) // 24)
    np.testing.assert_array_equal(chunked, stft_magnitude(signal, SMALL))


@pytest.mark.parametrize("chunk", [1, 7, 16, 40, 41, 100])
def test_chunked_stft_with_hop_longer_than_n_fft(chunk):
    sparse = fmt.STFTParams(n_fft=16, hop=40)  # frames skip samples between them
    signal = noise(40 * 25 + 13, seed=chunk)
    chunked = chunked_magnitude(signal, sparse, chunk)
    assert chunked.shape == (2, 8, 1 + len(signal) // 40)
    np.testing.assert_array_equal(chunked, stft_magnitude(signal, sparse))


def test_magnitude_is_unnormalised_and_channels_stay_apart():
    t = np.arange(8192) / 44100
    hz = 44100 / 2048 * 100  # exactly on bin 100
    signal = np.stack([np.sin(2 * np.pi * hz * t), np.zeros_like(t)], axis=1).astype(np.float32)
    magnitude = stft_magnitude(signal, DEFAULT)
    middle = magnitude[:, :, 4]
    assert np.argmax(middle[0]) == 100
    assert middle[0, 100] == pytest.approx(2048 / 4, rel=1e-3)  # sum(hann) / 2 for a unit sine
    assert middle[1].max() == 0


def test_huge_and_non_finite_samples_become_finite_float16():
    signal = noise(8192)
    signal[:4096] *= 1e6
    signal[5000, 0] = np.nan
    signal[6000, 1] = np.inf
    spec = to_spec_dtype(stft_magnitude(signal, DEFAULT))
    assert spec.dtype == np.float16 and np.isfinite(spec).all()
    assert spec.max() == FLOAT16_MAX


def frame_blocks(total_frames: int, bins: int = 3, block: int = 7):
    frames = np.arange(2 * bins * total_frames, dtype=np.float32).reshape(2, bins, total_frames) % 1000
    return frames, [frames[:, :, i : i + block] for i in range(0, total_frames, block)]


@pytest.mark.parametrize(
    "total, expected_valid",
    [
        (40, [10, 10, 10, 10]),  # exact multiple: no tail clip
        (45, [10, 10, 10, 10, 5]),  # tail of exactly half a clip is kept
        (44, [10, 10, 10, 10]),  # shorter tail is dropped
        (5, [5]),  # a short track of half a clip becomes one padded clip
        (4, []),  # shorter than that: nothing
        (0, []),
    ],
)
def test_clip_cutting_and_tail_rule(total, expected_valid):
    frames, blocks = frame_blocks(total)
    clips = list(cut_clips(blocks, clip_frames=10))
    assert [c.valid_frames for c in clips] == expected_valid
    for index, clip in enumerate(clips):
        assert clip.clip == index and clip.start_frame == 10 * index
        assert clip.spec.shape == (2, 3, 10) and clip.spec.dtype == np.float16
        valid = frames[:, :, clip.start_frame : clip.start_frame + clip.valid_frames]
        np.testing.assert_array_equal(clip.spec[:, :, : clip.valid_frames], valid.astype(np.float16))
        assert not clip.spec[:, :, clip.valid_frames :].any()


def test_odd_clip_length_needs_the_larger_half():
    assert fmt.min_valid_frames(9) == 5
    assert [c.valid_frames for c in cut_clips(frame_blocks(9 + 5)[1], 9)] == [9, 5]
    assert [c.valid_frames for c in cut_clips(frame_blocks(9 + 4)[1], 9)] == [9]


def test_clips_from_chunks_is_the_whole_track_stft_cut_into_clips():
    signal = noise(24 * 100, seed=7)
    whole = to_spec_dtype(stft_magnitude(signal, SMALL))  # 101 frames
    clips = list(clips_from_chunks(split(signal, 50), SMALL, clip_frames=30))
    assert [(c.start_frame, c.valid_frames) for c in clips] == [(0, 30), (30, 30), (60, 30)]  # 11-frame tail dropped
    np.testing.assert_array_equal(np.concatenate([c.spec for c in clips], axis=2), whole[:, :, :90])


def test_track_clips_end_to_end_on_an_mp3(tmp_path):
    path = synth.write_track(tmp_path / "song.mp3", seconds=3.0, seed=8)
    decoded = np.concatenate(list(decode_chunks(path)))
    total_frames = 1 + len(decoded) // DEFAULT.hop
    clip_frames = 50
    clips = list(track_clips(path, DEFAULT, clip_frames, chunk_samples=3001))
    assert all(isinstance(c, Clip) for c in clips)
    full, tail = divmod(total_frames, clip_frames)
    expected = [clip_frames] * full + ([tail] if tail >= fmt.min_valid_frames(clip_frames) else [])
    assert [c.valid_frames for c in clips] == expected
    whole = to_spec_dtype(stft_magnitude(decoded, DEFAULT))
    for clip in clips:
        np.testing.assert_array_equal(
            clip.spec[:, :, : clip.valid_frames], whole[:, :, clip.start_frame : clip.start_frame + clip.valid_frames]
        )


def test_a_tenth_of_a_second_yields_no_clip(tmp_path):
    path = synth.write_track(tmp_path / "blip.flac", seconds=0.1, seed=9)
    assert list(track_clips(path, DEFAULT, fmt.DEFAULT_CLIP_FRAMES)) == []


def test_decode_errors_reach_the_caller(tmp_path):
    path = tmp_path / "text.mp3"
    path.write_text("hello")
    with pytest.raises(DecodeError, match="text.mp3"):
        list(track_clips(path, DEFAULT, 16))


def test_stopping_early_kills_ffmpeg(tmp_path):
    path = synth.write_track(tmp_path / "long.mp3", seconds=8.0, seed=10)
    clips = track_clips(path, DEFAULT, 16, chunk_samples=4096)
    next(clips)
    assert len(ffmpeg_children()) == 1
    clips.close()
    assert ffmpeg_children() == []


def test_leaves_the_torch_thread_setting_as_it_was():
    before = torch.get_num_threads()
    stft_magnitude(noise(4096), DEFAULT)
    assert torch.get_num_threads() == before


def test_unsupported_parameters_are_refused():
    with pytest.raises(ValueError, match="window"):
        stft_magnitude(noise(4096), fmt.STFTParams(window="hamming"))
    with pytest.raises(ValueError, match="hop"):
        stft_magnitude(noise(4096), fmt.STFTParams(n_fft=64, hop=0))
    with pytest.raises(ValueError, match="n_fft"):
        stft_magnitude(noise(4096), fmt.STFTParams(n_fft=63, hop=16))
