"""The data path: drives -> manifests/ -> shards/.

ingest/   walk the drives, probe each audio file, write manifests/tracks.jsonl
shard/    plan, decode, STFT and write the manifest's tracks as webdataset shards; verify them
audio/    streaming decoder and STFT shared by the shard stage and the separator
format    the on-disk contract every stage (and the trainer) reads and writes
durable   atomic file writes and folder locks used by every writer
demo/     a synthetic collection to try the whole chain on
"""
