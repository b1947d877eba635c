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
