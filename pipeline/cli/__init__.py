"""`pipeline` command line: drives -> manifests/ -> shards/.

The group is defined here; the commands live by stage (manifests.py: ingest, pairs, status;
shards.py: shard, verify, preview; demo.py: make-demo). Each parses its options there and imports its
implementation lazily, so `--help` stays fast and a command's heavy dependencies load only when it runs.
"""

from __future__ import annotations

import click

from pipeline.cli import demo as _demo
from pipeline.cli import manifests as _manifests
from pipeline.cli import shards as _shards


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Turn a music collection spread over several drives into STFT training shards.

    \b
    pipeline ingest /mnt/ssd1 /mnt/ssd2 /mnt/ssd3   # -> manifests/tracks.jsonl
    pipeline pairs /mnt/stems                       # -> manifests/pairs.jsonl (separation)
    pipeline status                                 # what is ingested, sharded, left
    pipeline shard                                  # -> shards/train-000000.tar ...
    pipeline shard --pairs --out pair-shards        # pairs.jsonl -> mixture + target shards
    pipeline verify                                 # re-read every shard against its index
    pipeline preview shards/                        # a picture of the first samples
    pipeline make-demo                              # a synthetic collection to try it on
    """


# in the order the data flows: drives -> manifests -> shards, then the tools around them
for _command in (
    _manifests.ingest,
    _manifests.pairs,
    _manifests.status,
    _shards.shard,
    _shards.verify,
    _shards.preview,
    _demo.make_demo,
):
    main.add_command(_command)
