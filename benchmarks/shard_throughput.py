"""`pipeline shard --workers N` against a minimal reference on the same real music, in one run.

Reference (the decode+STFT limit): a process pool of N that decodes each file whole (the faster of
libsndfile and an ffmpeg pipe for its format, chosen by timing both on one file per format first)
and computes the STFT magnitude as float16 with torch.stft on one thread, writing nothing. Each
`--encodings` value is one contender (`pipeline shard --encoding E`). Goals: `pipeline shard`
reaches >= 0.85x the reference's audio-seconds per second; the default encoding >= 0.9x (issue 22).
The pipeline is this checkout's (`python -c "from pipeline.cli import main"` from the repository
root), not whatever `pipeline` script is on the PATH.

Music: the Wesnoth soundtrack (Debian package, never committed):
    cd /tmp && apt-get download wesnoth-1.16-music && dpkg -x wesnoth-1.16-music_*.deb wesnoth
    .venv/bin/python benchmarks/shard_throughput.py --music /tmp/wesnoth/usr/share/games/wesnoth
A subset (--minutes of audio) is transcoded round-robin to mp3/flac/m4a/opus/wav on two "drives"
under --work, ingested with `pipeline ingest`, then each contender runs --repeat times alternately
and the best run of each is compared.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

FORMATS = {  # extension -> ffmpeg encoder arguments (typical library settings)
    ".mp3": ["-c:a", "libmp3lame", "-b:a", "320k"],
    ".flac": ["-c:a", "flac"],
    ".m4a": ["-c:a", "aac", "-b:a", "256k"],
    ".opus": ["-c:a", "libopus", "-b:a", "160k"],
    ".wav": ["-c:a", "pcm_s16le"],
}
N_FFT, HOP, SAMPLE_RATE = 2048, 1024, 44100


def probe_seconds(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.strip())


def prepare_collection(music: Path, work: Path, minutes: float, clip_seconds: float) -> list[Path]:
    """Transcode the first sources (by name), each cut to `clip_seconds`, until `minutes` of audio;
    cached between runs. Cutting gives every format several files in a short benchmark."""
    sources = sorted(music.rglob("*.ogg"))
    if not sources:
        raise SystemExit(f"{music}: no .ogg files (see the module docstring for the download)")
    files, total = [], 0.0
    extensions = list(FORMATS)
    for source in sources:
        if total >= minutes * 60:
            break
        seconds = min(clip_seconds, probe_seconds(source))
        if seconds < 20:  # jingles: too short to say anything about throughput
            continue
        ext = extensions[len(files) % len(extensions)]
        target = work / "collection" / f"drive{len(files) % 2}" / "wesnoth" / f"{source.stem}{ext}"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".tmp{ext}")
            subprocess.run(
                [
                    "ffmpeg",
                    "-nostdin",
                    "-v",
                    "error",
                    "-y",
                    "-i",
                    str(source),
                    "-t",
                    str(clip_seconds),
                    *FORMATS[ext],
                    str(tmp),
                ],
                check=True,
            )
            tmp.rename(target)
        files.append(target)
        total += seconds
    return files


# --- reference ----------------------------------------------------------------------------


def decode_soundfile(path: str):
    import numpy as np
    import soundfile

    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        return None
    return np.repeat(data, 2, axis=1) if data.shape[1] == 1 else data[:, :2]


def decode_ffmpeg(path: str):
    import numpy as np

    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-f", "f32le", "-ac", "2", "-ar", str(SAMPLE_RATE), "pipe:1"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, dtype=np.float32).reshape(-1, 2)


def stft_f16(signal):
    import torch

    torch.set_num_threads(1)
    x = torch.from_numpy(signal.T.copy())
    spec = torch.stft(
        x, N_FFT, HOP, window=torch.hann_window(N_FFT), center=True, pad_mode="constant", return_complex=True
    )
    return spec[:, : N_FFT // 2].abs().half()


def reference_one(job: tuple[str, str]) -> int:
    path, decoder = job
    signal = decode_soundfile(path) if decoder == "soundfile" else None
    if signal is None:
        signal = decode_ffmpeg(path)
    return int(stft_f16(signal).shape[-1])


def pick_decoders(files: list[Path]) -> dict[str, str]:
    """Per extension, whichever of libsndfile and the ffmpeg pipe decodes its first file faster."""
    choice = {}
    for ext in sorted({f.suffix for f in files}):
        sample = str(next(f for f in files if f.suffix == ext))
        timings = {}
        for name, decode in (("soundfile", decode_soundfile), ("ffmpeg", decode_ffmpeg)):
            best = float("inf")
            for _ in range(3):  # best of 3: the machine is shared
                start = time.perf_counter()
                try:
                    ok = decode(sample) is not None
                except Exception:  # libsndfile lacks some codecs (m4a, opus); then ffmpeg wins by default
                    ok = False
                best = min(best, time.perf_counter() - start if ok else float("inf"))
            timings[name] = best
        choice[ext] = min(timings, key=timings.get)
    return choice


def children_cpu() -> float:
    """CPU seconds of reaped descendants (pool workers, ffmpeg): robust to a busy shared machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_reference(files: list[Path], decoders: dict[str, str], workers: int) -> tuple[float, float]:
    jobs = sorted(((str(f), decoders[f.suffix]) for f in files), key=lambda j: -os.path.getsize(j[0]))
    cpu, start = children_cpu(), time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(reference_one, jobs))
    return time.perf_counter() - start, children_cpu() - cpu


REPO = Path(__file__).resolve().parents[1]
PIPELINE = [sys.executable, "-c", "from pipeline.cli import main; main()"]  # run from REPO: this checkout's code


def run_pipeline(manifests: Path, out: Path, workers: int, shard_size: str, encoding: str) -> tuple[float, float, int]:
    """(wall s, CPU s, bytes of the tars) of one fresh `pipeline shard` run."""
    shutil.rmtree(out, ignore_errors=True)
    cpu, start = children_cpu(), time.perf_counter()
    subprocess.run(
        [
            *PIPELINE,
            "shard",
            "--manifests",
            str(manifests),
            "--out",
            str(out),
            "--workers",
            str(workers),
            "--shard-size",
            shard_size,
            "--encoding",
            encoding,
            "--quiet",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=REPO,
    )
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    return wall, cpu, sum(p.stat().st_size for p in out.glob("*.tar"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--music", type=Path, default=Path("/tmp/wesnoth/usr/share/games/wesnoth"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/shard-throughput"))
    parser.add_argument("--minutes", type=float, default=15.0, help="Audio to use.")
    parser.add_argument("--track-seconds", type=float, default=90.0, help="Cut each source to this length.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--shard-size", default="16MB", help="Small enough that the subset makes several shards per worker."
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--encodings", default="log8-zstd,log8,float16", help="Comma-separated `--encoding` values, one run each."
    )
    args = parser.parse_args()
    encodings = args.encodings.split(",")

    files = prepare_collection(args.music, args.work, args.minutes, args.track_seconds)
    manifests = args.work / "manifests"
    subprocess.run(
        [
            *PIPELINE,
            "ingest",
            *(str(p) for p in sorted((args.work / "collection").iterdir())),
            "--manifests",
            str(manifests),
            "--val-fraction",
            "0",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=REPO,
    )
    audio = sum(probe_seconds(f) for f in files)
    decoders = pick_decoders(files)
    print(
        f"{len(files)} files, {audio / 60:.1f} min of audio "
        f"({', '.join(f'{e}: {sum(f.suffix == e for f in files)}' for e in FORMATS)}); "
        f"reference decoders {decoders}",
        flush=True,
    )
    runs: dict[str, list[tuple[float, float, int]]] = {}
    for i in range(args.repeat):
        # Rotate who goes first so a neighbour's load burst does not always hit the same one.
        order = [("reference", lambda: (*run_reference(files, decoders, args.workers), 0))]
        for encoding in encodings:
            out = args.work / f"shards-{encoding}"
            order.append(
                (encoding, lambda out=out, e=encoding: run_pipeline(manifests, out, args.workers, args.shard_size, e))
            )
        shift = i % len(order)
        for name, run in order[shift:] + order[:shift]:
            result = run()
            runs.setdefault(name, []).append(result)
            print(f"  {name:10s} {result[0]:6.1f} s wall, {result[1]:6.1f} CPU-s", flush=True)
        print(f"  load average after repetition {i + 1}: {os.getloadavg()}", flush=True)
    ref_wall = min(w for w, _, _ in runs["reference"])
    ref_cpu = min(c for _, c, _ in runs["reference"])
    print(f"\n{audio / 3600:.3f} h of audio, best of {args.repeat}; workers {args.workers}")
    print(
        "| contender | best wall (s) | x real time | / limit (wall) | audio-s per CPU-s | / limit (CPU) "
        "| GB per audio hour |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| decode+STFT limit (reference) | {ref_wall:.1f} | {audio / ref_wall:.0f} | 1.00 | {audio / ref_cpu:.0f} "
        "| 1.00 | |"
    )
    for encoding in encodings:
        wall = min(w for w, _, _ in runs[encoding])
        cpu = min(c for _, c, _ in runs[encoding])
        size = runs[encoding][-1][2]
        print(
            f"| `pipeline shard --encoding {encoding}` | {wall:.1f} | {audio / wall:.0f} | {ref_wall / wall:.2f} "
            f"| {audio / cpu:.0f} | {ref_cpu / cpu:.2f} | {size / 1e9 / (audio / 3600):.3f} |"
        )


if __name__ == "__main__":
    main()
