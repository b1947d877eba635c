"""Pretraining: BERT-style corruptions of spectrogram crops, the reconstruction objective, the
no-model baselines it must beat, its evaluation and the corruption preview."""
