"""`trainer` command line: shards/ -> runs/NAME/.

Each command parses options here and imports its implementation lazily, so `--help` stays fast.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """BERT-style pretraining of a spectrogram U-Net frame transformer on pipeline shards.

    \b
    trainer pretrain --shards shards/ --preset tiny --run runs/demo
    trainer evaluate --checkpoint runs/demo/checkpoints/last --shards shards/val.json
    trainer summary --preset base
    """


# Commands are added below, one block per command.


@main.command()
@click.option("--preset", default="tiny", show_default=True, help="Model preset (trainer/model/presets/NAME.yaml).")
@click.option("--frames", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Crop length T (frames) the FLOPs and activations are measured for.")
@click.option("--position", type=click.Choice(["relative", "rope"]), default=None,
              help="Override the preset's attention position encoding.")
def summary(preset, frames, position):
    """Print parameters and forward FLOPs per part, and activation memory, of a model preset."""
    import dataclasses

    from trainer.model import load_model_preset
    from trainer.model.summary import format_summary, summarize

    try:
        cfg = load_model_preset(preset)
        if position:
            cfg = dataclasses.replace(cfg, position=position)
        click.echo(format_summary(summarize(cfg, frames), title=preset))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
