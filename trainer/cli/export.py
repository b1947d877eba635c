"""`trainer export`: a run or checkpoint as a folder to share (model.safetensors, config.json, README.md)."""

from __future__ import annotations

import click

from trainer.cli.options import one_line
from trainer.cli.types import Int


@click.command("export")
@click.argument("source", type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="The folder to write.")
@click.option("--half", is_flag=True, help="Store the weights as float16 (half the size).")
@click.option("--name", default=None, help="The model card's title [default: the run's folder name].")
@click.option(
    "--data",
    "data_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="A manifests folder (tracks.jsonl / pairs.jsonl) the model was trained on, for the card's counts "
    "and hours (no paths are written); repeatable.",
)
@click.option(
    "--evaluate",
    "eval_manifests",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="A pairs manifests folder: put evaluate-separation's table (val split, with floor and oracle) in the card.",
)
@click.option("--tracks", type=Int(1, 10**6), default=None, help="With --evaluate: the first N val songs.")
@click.option("--bsseval/--no-bsseval", default=False, show_default=True, help="With --evaluate: also BSSEval v4.")
def export(source, out_dir, half, name, data_dirs, eval_manifests, tracks, bsseval):
    """Write a run, checkpoint or exported folder as a folder to share (the Hugging Face Hub layout).

    \b
    trainer export runs/sep --out shared/sep-tiny --data pair-manifests --evaluate pair-manifests
    trainer separate songs/ --checkpoint shared/sep-tiny --out separated/

    Every command that takes a checkpoint takes the folder; loading checks config.json's schema and
    the weights' sha256.
    """
    from pathlib import Path

    from trainer.checkpoint import read_checkpoint_config, resolve_checkpoint
    from trainer.export import export_checkpoint
    from trainer.logs import read_metrics
    from trainer.model_card import describe_manifests

    try:
        checkpoint = resolve_checkpoint(source)
        run = checkpoint.parent.parent
        extras = {"name": name or (run.name if (run / "checkpoints").is_dir() else Path(source).name)}
        extras["data"] = [line for folder in data_dirs for line in describe_manifests(folder)]
        if (run / "metrics.jsonl").is_file():
            times = [r["time"] for r in read_metrics(run) if "time" in r]
            extras["seconds"] = max(times) - min(times) if len(times) > 1 else None
        if eval_manifests:
            if read_checkpoint_config(checkpoint).get("run", {}).get("task") != "separation":
                raise ValueError("--evaluate scores separators; this is a pretraining checkpoint")
            from trainer.separation.evaluate import evaluate_separation

            _, table = evaluate_separation(
                [str(checkpoint)], eval_manifests, "val", tracks, bsseval, "auto", labels=[extras["name"]]
            )
            extras["evaluation"] = table.replace(f" ({Path(eval_manifests) / 'pairs.jsonl'})", "")  # no paths
        folder = export_checkpoint(checkpoint, out_dir, half, extras)
    except (ValueError, RuntimeError, OSError) as exc:
        raise one_line(exc) from exc
    click.echo(f"exported {checkpoint} to {folder} (model.safetensors, config.json, README.md)")
