"""`pipeline ingest`: roots (drives) -> manifests/tracks.jsonl + failures.jsonl.

scan (walk the roots) -> probe (what each file is) -> manifest (records, ids, splits, journal) -> run (the job).
"""
