"""The README.md of an exported model (`trainer export`): what it is, what it was trained on (from the
manifests, counts and hours only: no paths), the budget, its evaluation, and how to use and remake it."""

from __future__ import annotations

import os
from pathlib import Path


def describe_manifests(folder: str | os.PathLike) -> list[str]:
    """Lines on the data in a manifests folder (tracks.jsonl and/or pairs.jsonl): per split, how many
    tracks or pairs, albums and hours. ValueError naming the folder when it holds neither."""
    from pipeline import format as fmt

    folder = Path(folder)
    lines = []
    if (folder / fmt.PAIRS_FILE).is_file():
        pairs = fmt.read_pairs(folder)
        for split in sorted({p.split for p in pairs}):
            chosen = [p for p in pairs if p.split == split]
            hours = sum(p.duration for p in chosen) / 3600
            lines.append(f"- separation pairs, {split}: {len(chosen)} songs, {hours:.2f} h")
    if (folder / fmt.TRACKS_FILE).is_file():
        tracks = [t for t in fmt.read_tracks(folder) if t.duplicate_of is None]
        for split in sorted({t.split for t in tracks}):
            chosen = [t for t in tracks if t.split == split]
            hours = sum(t.duration for t in chosen) / 3600
            albums = len({t.album_key for t in chosen})
            lines.append(f"- collection, {split}: {len(chosen)} tracks, {albums} albums, {hours:.2f} h")
    if not lines:
        raise ValueError(f"--data {folder}: no {fmt.TRACKS_FILE} or {fmt.PAIRS_FILE} there")
    return lines


def model_card(config: dict, extras: dict) -> str:
    """The card's Markdown. `extras`: `data` (lines), `evaluation` (evaluate-separation's table),
    `name`, `seconds` (training wall time)."""
    training = config["training_config"]
    run, data, optim = training.get("run", {}), training.get("data", {}), training.get("optim", {})
    separation = config["task"] == "separation"
    stft = config.get("stft") or {}
    name = extras.get("name") or "spectro-bert model"
    per_step = data.get("batch_size", 0) * optim.get("accumulation", 1)
    lines = [
        "---",
        "library_name: spectro-bert",
        "tags: [audio, source-separation]" if separation else "tags: [audio, self-supervised]",
        "---",
        f"# {name}",
        "",
        (
            "A vocals/instrumental separator: a spectrogram U-Net frame transformer that predicts an "
            "instrumental mask; the vocals are the mixture minus the instrumental."
            if separation
            else "A pretrained spectrogram U-Net frame transformer (masked-token pretraining), to fine-tune."
        ),
        "",
        "## Model",
        f"- architecture: {_architecture(config['architecture'])}",
        "- STFT front end: "
        + (
            f"{stft.get('sample_rate')} Hz stereo, n_fft {stft.get('n_fft')}, hop {stft.get('hop')}, "
            f"{stft.get('window')} window, {stft.get('bins')} bins (Nyquist dropped)"
            if stft
            else f"not recorded in a pretraining checkpoint ({config['architecture'].get('bins')} bins)"
        ),
        f"- input scaling: {config['input_scaling']}",
        f"- weights: `model.safetensors`, {config['weights']['dtype']}, sha256 `{config['weights']['sha256']}`",
        "- fine-tuned from: "
        + (
            f"a pretraining checkpoint with weights sha256 `{config['init']['sha256']}`"
            if (config.get("init") or {}).get("sha256")
            else "random initialisation (from scratch)"
        ),
        "",
        "## Training data",
        *(extras.get("data") or ["- not described (export with `--data MANIFESTS_DIR`)"]),
        "",
        "## Budget",
        f"- {config.get('step')} optimiser steps of {per_step} crops of {data.get('crop_frames')} frames "
        f"({(config.get('step') or 0) * per_step} crops per rank), lr {optim.get('lr')}, seed {run.get('seed')}",
    ]
    if extras.get("seconds"):
        lines.append(f"- training wall time: {extras['seconds'] / 60:.1f} min")
    if config.get("val_loss") is not None:
        lines.append(f"- validation loss at export: {config['val_loss']:.5f}")
    if extras.get("evaluation"):
        lines += ["", "## Evaluation", "", "```", extras["evaluation"].rstrip(), "```"]
    lines += ["", "## Use", "", "```bash"]
    if separation:
        lines.append("trainer separate songs/ --checkpoint THIS_FOLDER --out separated/")
        lines.append("trainer evaluate-separation --checkpoint THIS_FOLDER --manifests pair-manifests/")
    else:
        lines.append("trainer finetune --shards pair-shards/ --init THIS_FOLDER --run runs/sep")
    lines += ["```", "", "## How it was made", "", "```bash"]
    lines += _commands(config)
    lines += ["```", "", "`config.json` holds the whole training config (`training_config`), without paths.", ""]
    return "\n".join(lines)


def _architecture(model: dict) -> str:
    keys = ("bins", "channels", "num_downsamples", "first_transformer_level", "num_encoders", "num_decoders")
    return ", ".join(f"{k} {model[k]}" for k in keys if k in model)


def _commands(config: dict) -> list[str]:
    steps = config.get("step")
    if config["task"] == "separation":
        init = " --init PRETRAINED" if (config.get("init") or {}).get("sha256") else ""
        return [
            "pipeline pairs SONGS/ --manifests pair-manifests && pipeline shard --pairs --manifests pair-manifests "
            "--out pair-shards",
            f"trainer finetune --shards pair-shards{init} --config training.yaml --steps {steps}"
            "   # training.yaml: config.json's training_config",
            f"trainer export RUN --out FOLDER{' --half' if 'float16' in str(config['weights']['dtype']) else ''}",
        ]
    return [
        "pipeline ingest DRIVES... && pipeline shard",
        f"trainer pretrain --shards shards --config training.yaml --steps {steps}"
        "   # training.yaml: config.json's training_config",
        "trainer export RUN --out FOLDER",
    ]


__all__ = ["describe_manifests", "model_card"]
