"""`pipeline pairs`: find mixture / instrumental pairs, align them, write manifests/pairs.jsonl."""
