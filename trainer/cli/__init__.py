"""`trainer` command line: shards/ -> runs/NAME/.

The group is defined here; the commands live by job (pretrain.py, separation.py, with what they share in
options.py). Each command parses its options there and imports its implementation lazily, so `--help`
stays fast.
"""

from __future__ import annotations

import click

from trainer.cli import export as _export
from trainer.cli import pretrain as _pretrain
from trainer.cli import separation as _separation


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """BERT-style pretraining of a spectrogram U-Net frame transformer on pipeline shards.

    \b
    trainer pretrain --shards shards/ --preset tiny --run runs/demo
    trainer evaluate --checkpoint runs/demo/checkpoints/last --shards shards/val.json
    trainer finetune --shards pair-shards/ --init runs/demo --run runs/sep   # separation
    trainer export runs/sep --out shared/sep     # a folder to share
    trainer summary --preset base
    """


for _command in (
    _pretrain.pretrain,
    _pretrain.evaluate,
    _separation.finetune,
    _separation.separate,
    _separation.evaluate_separation,
    _separation.pseudo_label,
    _separation.label_curve,
    _export.export,
    _pretrain.ablate,
    _pretrain.summary,
    _pretrain.preview,
):
    main.add_command(_command)
