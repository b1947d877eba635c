"""`trainer pseudo-label`: a fine-tuned separator labels unlabelled music, for self-training.

The teacher's mask is applied to every clip of pretraining shards (`pipeline shard`: mixtures with no
stems), and each clip becomes a pair sample — the clip as the mixture, mask x clip as the target — in
pair shards that `trainer finetune` reads like any others (`--set data.extra_shards=DIR` mixes them
with the labelled pairs). This is the teacher-student loop of noisy self-training for singing voice
separation (Wang et al., ICASSP 2021) and of semi-supervised band-split RNN (Luo & Yu, 2022): the
student sees the collection's music with the teacher's targets next to the few true ones.

Work happens in magnitudes, on the shards' own STFT grid: no audio is decoded, no phase is needed.
Each clip is cut into windows of the teacher's training crop, each seen divided by its peak, as in
`trainer separate`. Output shard N holds the clips of input shard N under the same keys, in the
project's default encoding (log8-zstd), or another `pipeline shard --encoding`.

Resumable and safe like the other writers: a shard appears under its final name only when complete
(pipeline.durable), a rerun skips the shards already written, and a folder labelled by another
teacher or from other shards is refused rather than mixed. `DIR/.state/pseudo-label.json` records the
teacher, the source and each finished shard; the index `DIR/{split}.json` lists them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from pipeline import codec
from pipeline import format as fmt
from pipeline.durable import remove_stale_temporaries, write_and_rename, write_text
from trainer.data.reader import ShardReader

STATE_FILE = ".state/pseudo-label.json"  # beside the shards, like `pipeline shard`'s .state/


def _teacher_id(checkpoint: Path) -> str:
    from trainer.checkpoint import WEIGHTS_FILE

    return fmt.file_sha256(checkpoint / WEIGHTS_FILE)


def _read_state(path: Path, teacher: str, source: str, encoding: str | None) -> dict:
    if not path.exists():
        return {"teacher": teacher, "source": source, "encoding": encoding or codec.DEFAULT_ENCODING, "shards": {}}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        known = (state["teacher"], state["source"], state.get("encoding", codec.FLOAT16), dict(state["shards"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable pseudo-label state ({exc}); remove the folder to start over") from exc
    if known[:2] != (teacher, source):
        raise ValueError(
            f"{path.parent.parent}: labelled by another teacher or from other shards ({state['source']}); "
            "give another --out or remove this folder"
        )
    if encoding is not None and known[2] != encoding:
        raise ValueError(f"{path.parent.parent}: its shards are {known[2]}, not --encoding {encoding}")
    state["encoding"] = known[2]
    return state


def label_clip(separator, spec: np.ndarray) -> np.ndarray:
    """[2, bins, frames] magnitude -> the teacher's instrumental estimate, the same shape (float32)."""
    window = separator.window_frames
    frames = spec.shape[-1]
    windows = -(-frames // window)
    padded = np.zeros((*spec.shape[:2], windows * window), dtype=np.float32)
    padded[..., :frames] = spec
    batch = torch.from_numpy(padded).reshape(*spec.shape[:2], windows, window).permute(2, 0, 1, 3)
    batch = batch.to(separator.device)
    mask = separator.mask(batch)
    estimate = (mask * batch).permute(1, 2, 0, 3).reshape(*spec.shape[:2], windows * window)
    return estimate[..., :frames].cpu().numpy()


def _label_shard(separator, url: str, out: Path, encoding: str) -> dict:
    """Write the pair shard of one input shard; returns its index entry."""
    count = 0
    with write_and_rename(out, "wb") as fh:
        # raw members (webdataset would gzip a `.gz` member again) and a fixed header time
        writer = wds.TarWriter(fh, encoder=False, mtime=0.0)
        for sample in ShardReader(max_empty_in_a_row=None).samples(iter([url])):
            try:
                (stored,), meta = fmt.read_sample(sample)
            except ValueError as exc:
                raise ValueError(f"{url}: sample {sample.get('__key__')}: {exc}") from exc
            spec = stored.read(0, stored.frames).astype(np.float32)
            target = label_clip(separator, spec)
            pair_meta = fmt.PairSampleMeta(
                track_id=meta.track_id,
                clip=meta.clip,
                start_frame=meta.start_frame,
                valid_frames=meta.valid_frames,
                album_key=meta.album_key,
                stft=meta.stft,
                target_kind=fmt.TARGET_PSEUDO,
            )
            arrays = {"mix": spec.astype(fmt.SPEC_DTYPE), "target": np.minimum(target, spec).astype(fmt.SPEC_DTYPE)}
            members = fmt.encode_sample(arrays, pair_meta, encoding)
            writer.write({"__key__": sample["__key__"], **members})
            count += 1
        writer.close()
    return {"url": out.name, "nsamples": count, "filesize": out.stat().st_size, "sha256": fmt.file_sha256(out)}


def pseudo_label(
    checkpoint: str | os.PathLike,
    shards: str,
    out: str | os.PathLike,
    split: str = "train",
    device: str = "auto",
    encoding: str | None = None,
) -> fmt.ShardIndex:
    """Label every `split` shard of `shards` with the separation `checkpoint` into pair shards in `out`,
    stored in `encoding` (None: what `out` already holds, else log8-zstd as `pipeline shard`; float16 is
    ~4x the bytes)."""
    from trainer.checkpoint import resolve_checkpoint
    from trainer.data import resolve_shards, shard_stft
    from trainer.separation.separate import load_separator

    path = resolve_checkpoint(checkpoint)
    separator = load_separator(path, device)
    urls = resolve_shards(shards, split)
    stft = shard_stft(shards, split)
    if fmt.STFTParams.from_dict(stft) != separator.stft:
        from trainer.export import describe_difference, first_difference

        ours, theirs = {"stft": separator.stft.to_dict()}, {"stft": fmt.STFTParams.from_dict(stft).to_dict()}
        field = first_difference(ours, theirs)
        raise ValueError(
            f"{shards}: made with another STFT than the teacher {path}: "
            + describe_difference(field, ours, theirs, "the shards").replace(" here ", " for the teacher ")
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # a shard half-written by a killed run
    state_path = out / STATE_FILE
    state_path.parent.mkdir(exist_ok=True)
    source = str(Path(shards).resolve()) if "://" not in shards else shards
    state = _read_state(state_path, _teacher_id(path), source, encoding)
    clip_frames = 0
    for number, url in enumerate(urls):
        name = fmt.shard_name(split, number)
        if name in state["shards"] and (out / name).exists():
            continue
        state["shards"][name] = _label_shard(separator, url, out / name, state["encoding"])
        write_text(state_path, json.dumps(state, indent=1) + "\n")
        print(f"pseudo-label: {out / name} ({state['shards'][name]['nsamples']} clips)", flush=True)
    entries = [fmt.ShardEntry(**state["shards"][fmt.shard_name(split, n)]) for n in range(len(urls))]
    source_index = Path(shards) / fmt.index_name(split) if Path(shards).is_dir() else None
    if source_index is not None and source_index.is_file():
        clip_frames = fmt.read_index(source_index).clip_frames
    index = fmt.ShardIndex(
        split=split,
        shardlist=entries,
        stft=stft,
        clip_frames=clip_frames or fmt.DEFAULT_CLIP_FRAMES,
        totals={"samples": sum(e.nsamples for e in entries), "bytes": sum(e.filesize for e in entries)},
        sample_kind=fmt.SAMPLE_KIND_PAIRS,
        encoding=state["encoding"],
    )
    fmt.write_index(out / fmt.index_name(split), index)
    return index


__all__ = ["pseudo_label", "label_clip", "STATE_FILE"]
