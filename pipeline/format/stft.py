"""Audio and STFT: the sample rate, channels and magnitude dtype every stage uses, the STFT
parameters (`STFTParams`) and the clip length."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SAMPLE_RATE = 44100
CHANNELS = 2
SPEC_DTYPE = np.float16


DEFAULT_N_FFT = 2048
DEFAULT_HOP = 1024


@dataclass(frozen=True)
class STFTParams:
    """STFT magnitude of the 44.1 kHz stereo signal, |X| unnormalised, periodic Hann window.

    Framing is "centred with zero padding" (torch.stft(center=True, pad_mode="constant")): frame f
    covers samples [f*hop - n_fft/2, f*hop + n_fft/2), zeros outside the track, so a track of N
    samples has 1 + N // hop frames. The Nyquist bin is dropped: bins = n_fft // 2.
    Invalid parameters are a ValueError here, where every stage builds them.
    """

    n_fft: int = DEFAULT_N_FFT
    hop: int = DEFAULT_HOP
    window: str = "hann"
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        values = (self.n_fft, self.hop, self.sample_rate)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise ValueError(f"n_fft, hop and sample_rate must be integers, got {values}")
        if self.n_fft < 2 or self.n_fft % 2 or self.hop < 1 or self.sample_rate < 1:
            raise ValueError(
                f"need an even n_fft >= 2, hop >= 1 and sample_rate >= 1, "
                f"got n_fft={self.n_fft} hop={self.hop} sample_rate={self.sample_rate}"
            )
        if self.window != "hann":
            raise ValueError(f"only the hann window is supported, got {self.window!r}")

    @property
    def bins(self) -> int:
        return self.n_fft // 2

    def to_dict(self) -> dict:
        return {**asdict(self), "bins": self.bins}

    @classmethod
    def from_dict(cls, data: dict) -> STFTParams:
        return cls(**{k: data[k] for k in ("n_fft", "hop", "window", "sample_rate") if k in data})


DEFAULT_CLIP_FRAMES = 1024


def min_valid_frames(clip_frames: int) -> int:
    """A tail (or a whole short track) becomes a zero-padded clip when it fills at least half a clip."""
    return (clip_frames + 1) // 2


__all__ = [
    "SAMPLE_RATE",
    "CHANNELS",
    "SPEC_DTYPE",
    "DEFAULT_N_FFT",
    "DEFAULT_HOP",
    "STFTParams",
    "DEFAULT_CLIP_FRAMES",
    "min_valid_frames",
]
