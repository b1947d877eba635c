"""`pipeline shard`: manifests/tracks.jsonl -> shards/{split}-NNNNNN.tar + {split}.json.

plan (units of work) -> write (one unit -> one tar) -> run (resume, preflight, parallel, index);
verify and preview read the result back.
"""
