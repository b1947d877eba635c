"""The trainer: BERT-style pretraining of the spectrogram U-Net on pipeline shards, and fine-tuning it
into a separator. docs/design.md maps the folders (one per job) and the shared modules at the top."""
