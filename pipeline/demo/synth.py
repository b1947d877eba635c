"""Synthetic music for the demo collection and the tests: numpy signals encoded with ffmpeg.

The project never ships or downloads real music; this makes multi-instrument audio that has
pitch, rhythm and stereo structure, so spectrograms look like music and models have something
to learn.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

# ffmpeg encoder arguments per extension; anything else is left to ffmpeg's defaults.
ENCODERS = {
    ".mp3": ["-c:a", "libmp3lame", "-b:a", "192k"],
    ".flac": ["-c:a", "flac"],
    ".ogg": ["-c:a", "libvorbis", "-q:a", "4"],
    ".m4a": ["-c:a", "aac", "-b:a", "160k"],
    ".opus": ["-c:a", "libopus", "-b:a", "128k"],
    ".wav": ["-c:a", "pcm_s16le"],
}


def synth_music(seconds: float, sample_rate: int = 44100, channels: int = 2, seed: int = 0) -> np.ndarray:
    """A few bars of bass, chords, melody and drums; float32 `[samples, channels]` in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * sample_rate)))
    t = np.arange(n) / sample_rate
    bpm = rng.uniform(80, 140)
    beat = 60.0 / bpm
    root = 40 + rng.integers(0, 12)  # MIDI note of the key
    scale = np.array([0, 2, 4, 5, 7, 9, 11])
    step = (t // beat).astype(np.int64)
    phase_in_beat = (t % beat) / beat

    def hz(midi):
        return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69) / 12)

    progression = rng.choice(7, size=4)
    chord_root = scale[progression[(step // 4) % 4]]
    bass = 0.3 * np.sin(2 * np.pi * np.cumsum(hz(root + chord_root)) / sample_rate)
    chord = sum(
        0.08 * np.sin(2 * np.pi * np.cumsum(hz(root + 12 + chord_root + iv)) / sample_rate) for iv in (0, 4, 7)
    )
    melody_notes = scale[rng.integers(0, 7, size=64)] + 24 + root
    melody_f = hz(melody_notes[(step * 2 + (phase_in_beat > 0.5)) % 64])
    melody_env = np.exp(-3.0 * ((t % (beat / 2)) / (beat / 2)))
    melody = 0.15 * melody_env * np.sign(np.sin(2 * np.pi * np.cumsum(melody_f) / sample_rate))
    kick = 0.5 * np.exp(-30 * phase_in_beat * beat) * np.sin(2 * np.pi * 60 * phase_in_beat * beat)
    hat = 0.05 * rng.standard_normal(n) * np.exp(-80 * ((t % (beat / 2)) / beat))
    pans = rng.uniform(0.2, 0.8, size=4)
    voices = [bass, chord, melody, kick + hat]
    out = np.zeros((n, channels), dtype=np.float64)
    for voice, pan in zip(voices, pans):
        if channels == 1:
            out[:, 0] += voice
        else:
            gains = np.full(channels, 1.0)
            gains[0], gains[1] = 1.0 - pan, pan
            out += voice[:, None] * gains[None, :]
    out /= max(1e-9, np.abs(out).max()) / 0.8
    return out.astype(np.float32)


def synth_voice(seconds: float, sample_rate: int = 44100, channels: int = 2, seed: int = 0) -> np.ndarray:
    """A synthetic lead "voice" for separation pairs: sung phrases of a harmonic tone with vibrato and
    two vowel-like formants, rests between phrases, panned near the centre; float32 `[samples,
    channels]`, peak 0.5. Nothing like a real singer, but it has what separation needs: a pitched
    source with its own timbre and timing on top of the accompaniment."""
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * sample_rate)))
    t = np.arange(n) / sample_rate
    note_seconds = rng.uniform(0.25, 0.5)
    notes = 52 + np.array([0, 2, 4, 5, 7, 9, 11, 12])[rng.integers(0, 8, size=int(seconds / note_seconds) + 2)]
    midi = notes[(t // note_seconds).astype(np.int64)]
    vibrato = 0.3 * np.sin(2 * np.pi * rng.uniform(4.5, 6.0) * t)
    f0 = 440.0 * 2.0 ** ((midi + vibrato - 69) / 12)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    formants = rng.uniform([500, 1100], [800, 1800])
    voice = np.zeros(n)
    for harmonic in range(1, 16):
        freq = harmonic * f0
        gain = sum(np.exp(-(((freq - f) / 250.0) ** 2)) for f in formants) + 0.05 / harmonic
        voice += gain * np.sin(harmonic * phase)
    phrase = rng.uniform(1.5, 3.0)
    singing = ((t % (phrase * 1.5)) < phrase).astype(np.float64)
    envelope = np.convolve(singing, np.hanning(int(0.05 * sample_rate) + 1), mode="same")
    voice *= envelope / max(1e-9, envelope.max())
    voice /= max(1e-9, np.abs(voice).max()) / 0.5
    if channels == 1:
        return voice[:, None].astype(np.float32)
    pan = rng.uniform(0.4, 0.6)
    gains = np.ones(channels)
    gains[0], gains[1] = 1.0 - pan, pan
    return (voice[:, None] * gains[None, :]).astype(np.float32)


def synth_song(seconds: float, sample_rate: int = 44100, channels: int = 2, seed: int = 0) -> np.ndarray:
    """`synth_music` with `synth_voice` sung over it, at the levels of the demo's separation pairs: a
    song as an album holds it, a mix with a voice in it."""
    return 0.55 * synth_music(seconds, sample_rate, channels, seed) + synth_voice(seconds, sample_rate, channels, seed)


def encode(signal: np.ndarray, sample_rate: int, path: str | Path, extra_args: list[str] | None = None,
           tags: dict[str, str] | None = None) -> Path:
    """Encode float32 `[samples, channels]` to `path` with ffmpeg; the codec follows the extension
    (override with `extra_args`, e.g. `["-f", "flac"]` to write FLAC under another name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    signal = np.ascontiguousarray(signal, dtype=np.float32)
    channels = 1 if signal.ndim == 1 else signal.shape[1]
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "f32le", "-ar", str(sample_rate), "-ac", str(channels), "-i", "pipe:0"]
    if extra_args is not None:
        args += extra_args
    else:
        args += ENCODERS.get(path.suffix.lower(), [])
    for key, value in (tags or {}).items():
        args += ["-metadata", f"{key}={value}"]
    # Bit-exact muxing: Ogg/Opus would otherwise pick a random stream serial number, so the same
    # demo collection would get other content ids (and other shards) on every machine.
    args += ["-fflags", "+bitexact", "-flags:a", "+bitexact", str(path)]
    subprocess.run(args, input=signal.tobytes(), check=True, capture_output=True)
    return path


def write_track(path: str | Path, seconds: float = 2.0, sample_rate: int = 44100, channels: int = 2,
                seed: int = 0, extra_args: list[str] | None = None, tags: dict[str, str] | None = None,
                sung: bool = False) -> Path:
    """Synthesize and encode one track in one call (`sung`: with a voice, `synth_song`)."""
    signal = (synth_song if sung else synth_music)(seconds, sample_rate, channels, seed)
    return encode(signal, sample_rate, path, extra_args, tags)
