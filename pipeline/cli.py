"""`pipeline` command line: drives -> manifests/ -> shards/.

Each command parses options here and imports its implementation lazily, so `--help` stays fast
and a command's heavy dependencies load only when it runs.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Turn a music collection spread over several drives into STFT training shards.

    \b
    pipeline ingest /mnt/ssd1 /mnt/ssd2 /mnt/ssd3   # -> manifests/tracks.jsonl
    pipeline shard                                  # -> shards/train-000000.tar ...
    """


# Commands are added below, one block per command.
