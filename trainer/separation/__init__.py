"""Separation: fine-tuning the U-Net into a mixture -> instrumental mask, separating audio files
with it, and scoring it on the pairs manifest (SDR)."""
