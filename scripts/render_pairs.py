"""Render a collection of separation pairs from General MIDI and a synthetic voice, for development.

Independently authored, free material only: songs are written here as MIDI (chords, bass, drums, a
lead line), each instrument rendered on its own with fluidsynth and a General MIDI soundfont from
Debian's packages (fluid-soundfont-gm), and a "vocal" of espeak-ng phrases (the espeak-ng package)
placed on the bars. The result is the stems layout `pipeline pairs` reads:

    OUT/Song NN/{drums,bass,other,vocals,mixture}.wav (+ instrumental.wav for every other song,
    so both target kinds occur: the file itself, or mixture - vocals)

Never commit what this writes. Needs: fluidsynth, espeak-ng, the soundfont; numpy and scipy
(scipy comes with museval). Usage:

    python scripts/render_pairs.py OUT [--songs 24] [--seconds 40] [--seed 0] [--voices en+m3] [--prefix Song]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile

SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
RATE = 44100
WORDS = ["la", "na", "da", "so", "mi", "ri", "ka", "to", "no", "ma", "lo", "ve", "sha", "ni", "yo", "be", "tu", "ra"]
VOICES = ["en+f2", "en+f3", "en+f4", "en+m3", "en+m4", "en-us+f2", "en-us+m2"]


# --- a minimal standard MIDI file writer (format 1, one track per instrument) ----------------------


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def midi_file(events: list[tuple[int, bytes]], tempo_us: int, ticks: int = 480) -> bytes:
    """One track of (absolute tick, message bytes) events, plus the tempo."""
    data = b"\x00\xff\x51\x03" + tempo_us.to_bytes(3, "big")
    last = 0
    for tick, message in sorted(events, key=lambda e: (e[0], e[1][0] & 0xF0 == 0x90)):
        data += _varlen(tick - last) + message
        last = tick
    data += b"\x00\xff\x2f\x00"
    header = (
        b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + ticks.to_bytes(2, "big")
    )
    return header + b"MTrk" + len(data).to_bytes(4, "big") + data


def note(events, channel, start, length, pitch, velocity):
    events.append((start, bytes([0x90 | channel, pitch, velocity])))
    events.append((start + length, bytes([0x80 | channel, pitch, 0])))


# --- one song --------------------------------------------------------------------------------------


def compose(rng: np.random.Generator, seconds: float) -> tuple[dict[str, list], int, float]:
    """{stem: events} of a song, the tempo (us per beat) and the seconds per bar."""
    bpm = float(rng.uniform(84, 132))
    beat_ticks, tempo_us = 480, int(60e6 / bpm)
    bars = int(seconds / (4 * 60 / bpm)) + 1
    key = 48 + int(rng.integers(0, 12))
    scale = np.array([0, 2, 4, 5, 7, 9, 11])
    progression = rng.choice([0, 3, 4, 5, 1], size=4)
    chord_program, lead_program, bass_program = (
        int(rng.choice([0, 4, 24, 25, 48, 88])),
        int(rng.choice([56, 65, 73, 80, 11])),
        int(rng.choice([32, 33, 34, 38])),
    )
    stems = {"drums": [], "bass": [], "other": []}
    stems["bass"].append((0, bytes([0xC1, bass_program])))
    stems["other"] += [(0, bytes([0xC2, chord_program])), (0, bytes([0xC3, lead_program]))]
    for bar in range(bars):
        root = int(scale[progression[bar % 4]])
        start = bar * 4 * beat_ticks
        for interval in (0, 4, 7):  # the chord, held
            pitch = key + 12 + root + (interval if interval != 4 or root in (0, 3, 4) else 3)
            note(stems["other"], 2, start, 4 * beat_ticks - 20, pitch, 60)
        for beat in range(4):  # bass on the beats
            note(
                stems["bass"],
                1,
                start + beat * beat_ticks,
                beat_ticks - 40,
                key - 12 + root + (7 if beat == 2 else 0),
                90,
            )
        for eighth in range(8):  # drums: kick 1 and 3, snare 2 and 4, hats
            tick = start + eighth * beat_ticks // 2
            note(stems["drums"], 9, tick, 60, 42, 50)
            if eighth in (0, 4):
                note(stems["drums"], 9, tick, 60, 36, 100)
            if eighth in (2, 6):
                note(stems["drums"], 9, tick, 60, 38, 90)
        if bar % 2:  # a lead answer every other bar, where the voice rests
            for step in range(4):
                pitch = key + 24 + int(scale[rng.integers(0, 7)])
                note(stems["other"], 3, start + step * beat_ticks, beat_ticks - 30, pitch, 70)
    return stems, tempo_us, 4 * 60 / bpm


def render_midi(events: list, tempo_us: int, path: Path, work: Path) -> np.ndarray:
    mid = work / (path.stem + ".mid")
    mid.write_bytes(midi_file(events, tempo_us))
    subprocess.run(
        ["fluidsynth", "-ni", "-g", "0.6", "-r", str(RATE), "-F", str(path), SOUNDFONT, str(mid)],
        check=True,
        capture_output=True,
    )
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    assert rate == RATE, (path, rate)
    return audio


def voice(rng: np.random.Generator, bar_seconds: float, frames: int, work: Path, voices: list[str]) -> np.ndarray:
    """espeak-ng phrases on the even bars, centred, at 44.1 kHz stereo, in one of `voices`."""
    from scipy.signal import resample_poly

    out = np.zeros((frames, 2), dtype=np.float32)
    name, pitch = str(rng.choice(voices)), int(rng.integers(25, 75))
    bar, index = 0, 0
    while (start := int(bar * bar_seconds * RATE)) < frames:
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(4, 9))))
        wav = work / f"voice{index}.wav"
        subprocess.run(
            [
                "espeak-ng",
                "-v",
                name,
                "-p",
                str(pitch + int(rng.integers(-10, 10))),
                "-s",
                str(int(rng.integers(120, 170))),
                "-w",
                str(wav),
                text,
            ],
            check=True,
            capture_output=True,
        )
        phrase, rate = soundfile.read(wav, dtype="float32")
        phrase = resample_poly(phrase, RATE, rate).astype(np.float32)[: int(1.8 * bar_seconds * RATE)]
        end = min(frames, start + len(phrase))
        out[start:end] += phrase[: end - start, None] * np.array([0.5, 0.5], dtype=np.float32)
        bar, index = bar + 2, index + 1
    return out


def render_song(folder: Path, seed: int, seconds: float, with_instrumental: bool, voices: list[str] = VOICES) -> None:
    rng = np.random.default_rng(seed)
    stems, tempo_us, bar_seconds = compose(rng, seconds)
    frames = int(seconds * RATE)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        audio = {}
        for name, events in stems.items():
            rendered = render_midi(events, tempo_us, work / f"{name}.wav", work)
            audio[name] = np.pad(rendered, ((0, max(0, frames - len(rendered))), (0, 0)))[:frames]
        vocals = voice(rng, bar_seconds, frames, work, voices)
    instrumental = sum(audio.values())
    # the voice about as loud as the band (RMS), then one gain for everything: no clipping
    vocals *= np.sqrt(np.mean(instrumental**2) / max(np.mean(vocals**2), 1e-12)) * float(rng.uniform(0.6, 1.2))
    mixture = instrumental + vocals
    gain = 0.9 / max(np.abs(mixture).max(), 1e-9)
    folder.mkdir(parents=True, exist_ok=True)
    parts = {**audio, "vocals": vocals, "mixture": mixture}
    if with_instrumental:
        parts["instrumental"] = instrumental
    for name, signal in parts.items():
        soundfile.write(folder / f"{name}.wav", signal * gain, RATE, subtype="FLOAT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--songs", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--voices",
        default=",".join(VOICES),
        help="espeak-ng voices the singers are drawn from, comma-separated (one: a labelled set with one singer)",
    )
    parser.add_argument("--prefix", default="Song", help="folder names: PREFIX NN")
    args = parser.parse_args()
    voices = [v for v in args.voices.split(",") if v]
    if not voices:
        parser.error("--voices: give at least one espeak-ng voice")
    for index in range(args.songs):
        folder = args.out / f"{args.prefix} {index:02d}"
        if (folder / "mixture.wav").exists():
            continue
        render_song(folder, args.seed * 1000 + index, args.seconds, index % 2 == 0, voices)
        print(folder, flush=True)


if __name__ == "__main__":
    main()
