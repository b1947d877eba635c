"""Sample encodings on real music, in one run: size, shard speed, loader speed, fidelity.

Takes the first `--hours` of audio of a manifest (tracks sorted by id, duplicates left out), and
  size      shards it once per encoding (`pipeline shard --encoding E`, `--workers` processes) and
            reports GB per hour of audio, against the same tracks transcoded to 320 kbps MP3
            (ffmpeg/libmp3lame, tags dropped) — the reference the goal is judged on (log8 <= 1.5x);
  speed     shard x realtime (audio seconds / wall seconds of the run) per encoding, and
            trainer.data.train_loader's samples/s (batch 8, crop 512 frames, `--loader-workers`
            workers, over the batches after the first) and the stored MB/s that is, against what
            one GPU consumes for the base preset: its training FLOPs per 512-frame sample
            (`trainer summary --preset base --frames 512`, x3 for forward + backward) at
            `--mfu` of `--peak-tflops`; and the time to decode a whole stored sample vs the
            centred 512-frame crop of it that the loader decodes;
  fidelity  every float16 sample re-encoded in each other encoding, as the shard writer does, and
            decoded: max and mean |error| in dB over the values within the encoding's range (the
            rest, silence below -80 dB re. the sample's max, is counted, and decodes to 0), and the
            mean |error| of the sample divided by its max, the scale of the trainer's masked-token
            L1 (every crop is divided by its max before the loss), next to the mean value on that
            scale.

    .venv/bin/python benchmarks/encoding_bench.py --manifests M --work DIR [--hours 1] [--workers 2]

Shard sets and MP3s are kept under --work (reruns reuse the MP3s; shard sets are rebuilt).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from pipeline import codec
from pipeline import format as fmt
from pipeline.shard.plan import ShardOptions
from pipeline.shard.run import run_shard
from trainer.data import train_loader

CROP_FRAMES = 512
BATCH = 8


def subset(manifests: Path, hours: float, out: Path) -> list[fmt.TrackRecord]:
    tracks = sorted((t for t in fmt.read_tracks(manifests) if not t.duplicate_of), key=lambda t: t.id)
    chosen, seconds = [], 0.0
    for track in tracks:
        if seconds >= hours * 3600:
            break
        chosen.append(track)
        seconds += track.duration
    fmt.write_jsonl(out / fmt.TRACKS_FILE, chosen)
    return chosen


def mp3_bytes(tracks: list[fmt.TrackRecord], folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for track in tracks:
        target = folder / f"{track.id}.mp3"
        if not target.exists():
            partial = target.with_suffix(".part.mp3")
            subprocess.run(
                ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", track.path, "-map_metadata", "-1", "-vn"]
                + ["-c:a", "libmp3lame", "-b:a", "320k", str(partial)],
                check=True,
            )
            partial.rename(target)
        total += target.stat().st_size
    return total


def shard_set(manifests: Path, out: Path, encoding: str, workers: int) -> tuple[float, float, int, int]:
    """(audio seconds, wall seconds, bytes, samples) of a fresh shard run."""
    shutil.rmtree(out, ignore_errors=True)
    options = ShardOptions(encoding=encoding, shard_bytes=256_000_000)
    started = time.perf_counter()
    summary = run_shard(manifests, out, options, workers=workers, progress=False)
    wall = time.perf_counter() - started
    size = sum(p.stat().st_size for p in out.glob("*.tar"))
    return summary.seconds, wall, size, summary.samples


def loader_rate(shards: Path, workers: int, batches: int) -> float:
    loader = train_loader(shards, batch_size=BATCH, crop_frames=CROP_FRAMES, num_workers=workers, seed=0)
    it = iter(loader)
    next(it)
    started = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * BATCH / (time.perf_counter() - started)


def decode_ms(shards: Path, samples: int = 24) -> tuple[float, float]:
    """Mean ms to decode a whole sample and a centred 512-frame crop of it (what the loader does)."""
    stored = []
    for tar in sorted(shards.glob("*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False):
            stored.append(fmt.read_sample(sample)[0][0])
            if len(stored) >= samples:
                break
        if len(stored) >= samples:
            break
    times = []
    for read in (lambda s: s.read(), lambda s: s.read((s.frames - CROP_FRAMES) // 2, (s.frames + CROP_FRAMES) // 2)):
        started = time.perf_counter()
        for s in stored:
            np.ascontiguousarray(read(s))
        times.append((time.perf_counter() - started) / len(stored) * 1e3)
    return times[0], times[1]


def fidelity(shards: Path, encoding: str) -> dict:
    """Stats of re-encoding every float16 sample of `shards` in `encoding`."""
    max_db = sum_db = 0.0
    counted = silenced = total = 0
    l1 = value = 0.0
    samples = 0
    for tar in sorted(shards.glob("*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False, empty_check=False):
            (stored,), meta = fmt.read_sample(sample)
            original = stored.read()
            members = fmt.encode_sample({"spec": original}, meta, encoding)
            (decoded,), _ = fmt.read_sample({**members, "__key__": sample["__key__"]})
            x = original[:, :, : meta.valid_frames].astype(np.float32)
            y = decoded.read(0, meta.valid_frames).astype(np.float32)
            peak = float(x.max())
            if peak <= 0:
                continue
            audible = x >= peak * 10 ** (-codec.LOG8_RANGE_DB / 20)
            error_db = np.abs(20 * np.log10(np.maximum(y[audible], 1e-30) / x[audible]))
            max_db = max(max_db, float(error_db.max()))
            sum_db += float(error_db.sum())
            counted += int(audible.sum())
            silenced += int((x > 0).sum() - audible.sum())
            total += x.size
            l1 += float(np.abs(y / max(float(y.max()), 1e-30) - x / peak).mean())
            value += float((x / peak).mean())
            samples += 1
    return {
        "max_db": max_db,
        "mean_db": sum_db / max(counted, 1),
        "below_range": silenced / max(total, 1),
        "l1": l1 / max(samples, 1),
        "mean_value": value / max(samples, 1),
        "samples": samples,
    }


def gpu_samples_per_s(mfu: float, peak_tflops: float) -> tuple[float, float]:
    from trainer.model import load_model_preset
    from trainer.model.summary import summarize

    flops = summarize(load_model_preset("base"), CROP_FRAMES).training_flops
    return mfu * peak_tflops * 1e12 / flops, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifests", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2, help="shard worker processes")
    parser.add_argument("--loader-workers", type=int, default=1)
    parser.add_argument("--loader-batches", type=int, default=30)
    parser.add_argument("--mfu", type=float, default=0.4)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    tracks = subset(args.manifests, args.hours, args.work / "m")
    hours = sum(t.duration for t in tracks) / 3600
    mp3 = mp3_bytes(tracks, args.work / "mp3")
    print(f"subset: {len(tracks)} tracks, {hours:.3f} h; MP3 320 kbps: {mp3 / 1e9 / hours:.3f} GB/h")
    need, flops = gpu_samples_per_s(args.mfu, args.peak_tflops)
    print(
        f"one GPU, base preset, {CROP_FRAMES}-frame crops: {flops / 1e12:.2f} TFLOP per training sample; "
        f"at {args.mfu:.0%} MFU of {args.peak_tflops:g} TFLOP/s it consumes {need:.1f} samples/s"
    )
    rows = []
    for encoding in fmt.ENCODINGS:
        out = args.work / f"s-{encoding}"
        seconds, wall, size, samples = shard_set(args.work / "m", out, encoding, args.workers)
        rate = loader_rate(out, args.loader_workers, args.loader_batches)
        per_sample = size / samples
        whole, crop = decode_ms(out)
        mb_s = rate * per_sample / 1e6
        rows.append((encoding, size / 1e9 / hours, size / mp3, seconds / wall, rate, mb_s, whole, crop))
        print(f"{encoding}: {size / 1e9:.3f} GB, {samples} samples, sharded in {wall:.1f} s", flush=True)
    print(
        "\n| encoding | GB per hour | x MP3 320k | shard x realtime | loader samples/s | stored MB/s "
        "| x one GPU | decode ms: sample / 512-frame crop |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for encoding, gb_h, ratio, realtime, rate, mbs, whole, crop in rows:
        cells = [encoding, f"{gb_h:.3f}", f"{ratio:.2f}", f"{realtime:.0f}", f"{rate:.1f}", f"{mbs:.0f}"]
        cells += [f"{rate / need:.2f}", f"{whole:.1f} / {crop:.1f}"]
        print("| " + " | ".join(cells) + " |")
    print(f"| MP3 320 kbps | {mp3 / 1e9 / hours:.3f} | 1.00 | | | | | |")
    print("\n| vs float16 | max dB error | mean dB error | values below range | L1 (sample / max) | mean value |")
    print("|---|---|---|---|---|---|")
    for encoding in fmt.ENCODINGS:
        if encoding == codec.FLOAT16:
            continue
        f = fidelity(args.work / "s-float16", encoding)
        print(
            f"| {encoding} | {f['max_db']:.3f} | {f['mean_db']:.3f} | {f['below_range']:.2%} | "
            f"{f['l1']:.2e} | {f['mean_value']:.2e} |"
        )
    print(f"\nmachine: {os.cpu_count()} CPUs; load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
