"""`trainer separate`: songs -> `<name>_instrumental` and `<name>_vocals` with a fine-tuned checkpoint.

The signal is cut into overlapping segments of `window_frames` STFT frames (the run's training crop
by default) starting every `window - overlap` samples. Each segment is analysed exactly as the
training shards were (the checkpoint's STFT parameters: centred, zero-padded, periodic Hann),
its magnitude normalised by its own max as the loader normalises a crop, masked by the model, and
inverted with the mixture's phase. Neighbouring segments are cross-faded with complementary linear
ramps over the overlap, so the edges of a segment (whose frames see the zero padding) never reach
the output alone: no seams. Segments are run through the model in batches (`batch_size`, large on a
GPU). Memory is a batch of segments whatever the track length: the decoder streams chunks in,
finished samples stream out to the file (open-unmix's `separate` and demucs' `apply_model` with
`split=True` work the same way on whole tracks in memory; here the track is never whole).

The vocals are the residual: mixture - instrumental, sample by sample.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import format as fmt

DEFAULT_OVERLAP = 0.25  # of a window


@dataclass
class Separator:
    """A fine-tuned model and how to run it over a signal."""

    model: torch.nn.Module
    stft: fmt.STFTParams
    window_frames: int
    overlap: float = DEFAULT_OVERLAP
    batch_size: int = 4
    device: torch.device = torch.device("cpu")
    name: str = ""
    stereo_swap: bool = False  # TTA: also mask the stereo-swapped windows and average

    def __post_init__(self):
        if self.window_frames < 2:
            raise ValueError(f"window must be at least 2 frames, got {self.window_frames}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        self.segment = self.window_frames * self.stft.hop  # samples
        # a whole number of hops, so that every segment's frames sit on one grid
        self.fade = int(round(self.segment * self.overlap / self.stft.hop)) * self.stft.hop
        self.step = self.segment - self.fade
        if self.step <= 0:  # the windows would never advance: only the first would be written
            raise ValueError(
                f"--window {self.window_frames} with --overlap {self.overlap:g}: an overlap of "
                f"{self.fade // self.stft.hop} frames is the whole window, so the windows cannot cover the track "
                f"(use a lower --overlap or a longer --window)"
            )
        # test-time augmentation's second grid starts half a window (a whole number of hops) earlier
        self.shift = (self.window_frames // 2) * self.stft.hop
        self._window = torch.hann_window(self.stft.n_fft, periodic=True, device=self.device)

    # --- one batch of segments ----------------------------------------------------------------
    def _spectrum(self, segments: torch.Tensor) -> torch.Tensor:
        """[B, 2, n] float32 -> complex [B, 2, n_fft/2 + 1, frames], the pipeline's framing."""
        b, c, n = segments.shape
        spec = torch.stft(
            segments.reshape(b * c, n),
            self.stft.n_fft,
            self.stft.hop,
            window=self._window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        return spec.reshape(b, c, *spec.shape[-2:])

    def _inverse(self, spectrum: torch.Tensor, length: int) -> torch.Tensor:
        b, c = spectrum.shape[:2]
        signal = torch.istft(
            spectrum.reshape(b * c, *spectrum.shape[-2:]),
            self.stft.n_fft,
            self.stft.hop,
            window=self._window,
            center=True,
            length=length,
        )
        return signal.reshape(b, c, length)

    @torch.no_grad()
    def mask(self, magnitude: torch.Tensor) -> torch.Tensor:
        """[B, 2, bins, frames] magnitudes (any scale) -> the float32 instrumental mask; each window is
        seen divided by its peak, as training crops are."""
        from trainer.device import autocast_for

        peak = magnitude.amax(dim=(1, 2, 3), keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        scaled = magnitude / peak
        if self.stereo_swap:  # TTA: the stereo-swapped window in the same batch, its mask swapped back
            scaled = torch.cat([scaled, scaled.flip(1)])
        with autocast_for(self.device):
            mask, _ = self.model(scaled)
        mask = mask.float()
        if self.stereo_swap:
            straight, swapped = mask.chunk(2)
            mask = (straight + swapped.flip(1)) / 2
        return mask

    @torch.no_grad()
    def _instrumental(self, segments: np.ndarray) -> np.ndarray:
        """[B, n, 2] mixture segments -> [B, n, 2] instrumental."""
        x = torch.from_numpy(np.ascontiguousarray(segments.transpose(0, 2, 1))).to(self.device)
        spectrum = self._spectrum(x)
        mask = self.mask(spectrum.abs()[:, :, : self.stft.bins])
        mask = torch.cat([mask, mask[:, :, -1:]], dim=2)  # the Nyquist bin (not modelled) takes its neighbour's
        out = self._inverse(spectrum * mask, x.shape[-1])
        return out.transpose(1, 2).cpu().numpy()

    # --- a whole signal, streamed --------------------------------------------------------------
    def instrumental_chunks(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The instrumental of a mixture given as float32 `[n, 2]` chunks, as consecutive float32
        `[n, 2]` chunks of the same total length (other sizes)."""
        from pipeline.audio.reader import SampleReader

        reader = SampleReader(iter(chunks))
        down = ((np.arange(self.fade)[::-1] + 0.5) / max(self.fade, 1)).astype(np.float32)[:, None]
        up = down[::-1]
        buffer = reader.read(self.segment)  # the signal from the current segment's start, <= segment samples
        tail = None  # the previous segment's last `fade` samples, already faded out
        while len(buffer):
            batch: list[tuple[np.ndarray, bool]] = []
            while len(buffer) and len(batch) < self.batch_size:
                # reading the next segment's new samples now tells whether this one is the last
                more = reader.read(self.step) if len(buffer) == self.segment else buffer[:0]
                last = not len(more)
                batch.append((buffer, last))
                buffer = buffer[:0] if last else np.concatenate([buffer[self.step :], more])
            padded = [np.pad(b, ((0, self.segment - len(b)), (0, 0))) for b, _ in batch]
            for (segment, last), estimate in zip(batch, self._instrumental(np.stack(padded))):
                estimate = estimate[: len(segment)]
                if tail is not None:  # cross-fade with the previous segment (a non-last one is longer than the fade)
                    estimate[: self.fade] = estimate[: self.fade] * up + tail
                if last:
                    yield estimate
                else:
                    yield estimate[: self.step]
                    tail = estimate[self.step :] * down if self.fade else None


def load_separator(
    checkpoint: str | os.PathLike,
    device: str = "auto",
    batch_size: int | None = None,
    window_frames: int | None = None,
    overlap: float | None = None,
) -> Separator:
    """A Separator from a fine-tuned run or checkpoint; ValueError for a pretraining checkpoint."""
    from trainer.checkpoint import load_checkpoint, read_checkpoint_config, read_meta, resolve_checkpoint
    from trainer.config import TASK_SEPARATION, load_config
    from trainer.device import pick_device
    from trainer.separation.task import build_separation_model

    path = resolve_checkpoint(checkpoint)
    cfg = load_config(base=read_checkpoint_config(path))
    meta = read_meta(path)
    if cfg.run.task != TASK_SEPARATION or not meta.get("stft"):
        raise ValueError(f"{path}: not a separation checkpoint (fine-tune it first: trainer finetune --init {path})")
    dev = pick_device(device)
    model = build_separation_model(cfg).to(dev)
    load_checkpoint(path, model, device=dev)
    model.eval()
    stft = fmt.STFTParams.from_dict(meta["stft"])
    if stft.bins != cfg.model.bins:
        raise ValueError(f"{path}: STFT of {stft.bins} bins recorded for a model of {cfg.model.bins}")
    default_batch = 16 if dev.type == "cuda" else 2
    window, batch = window_frames or cfg.data.crop_frames, batch_size or default_batch
    _check_memory(cfg, window, batch, dev)
    return Separator(
        model,
        stft,
        window,
        DEFAULT_OVERLAP if overlap is None else overlap,
        batch,
        dev,
        name=f"{path.parent.parent.name}/{path.name}",
    )


def _check_memory(cfg, window: int, batch: int, dev: torch.device) -> None:
    """ValueError when a batch of windows cannot fit the device: the windows' spectra and one
    attention matrix per window (a lower bound: every frame is a token, so it grows as window**2)."""
    from pipeline.cli_types import machine_memory

    needed = batch * (window * cfg.model.bins * cfg.model.audio_channels * 4 * 4 + cfg.model.num_heads * window**2 * 4)
    available = torch.cuda.get_device_properties(dev).total_memory if dev.type == "cuda" else machine_memory()
    if needed > available:
        raise ValueError(
            f"--window {window} x --batch-size {batch}: at least {needed / 1e9:.3g} GB at once, more than the "
            f"{available / 1e9:.3g} GB of {dev}; use a smaller --window or --batch-size"
        )


# (format, bit depth) -> soundfile subtype; FLAC stores integers only
SUBTYPES = {
    ("flac", "16"): "PCM_16",
    ("flac", "24"): "PCM_24",
    ("wav", "16"): "PCM_16",
    ("wav", "24"): "PCM_24",
    ("wav", "float"): "FLOAT",
}
DEFAULT_BIT_DEPTH = {"flac": "24", "wav": "float"}


def output_subtype(output_format: str, bit_depth: str | None) -> str:
    """The soundfile subtype of `--format` and `--bit-depth`; ValueError naming both when they do not go together."""
    depth = bit_depth or DEFAULT_BIT_DEPTH.get(output_format, "")
    if (output_format, depth) not in SUBTYPES:
        if output_format not in DEFAULT_BIT_DEPTH:
            raise ValueError(f"--format {output_format}: unknown (flac or wav)")
        raise ValueError(f"--bit-depth {depth} with --format {output_format}: FLAC stores 16 or 24 bits (use wav)")
    return SUBTYPES[(output_format, depth)]


def progress_bar(seconds: float, label: str, enabled: bool, file=None):
    """A bar in whole seconds of audio (tqdm would print the float sums of the chunk lengths)."""
    from tqdm import tqdm

    return tqdm(
        total=seconds,
        desc=label[:40],
        disable=not enabled,
        leave=False,
        file=file,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]",
    )


def write_stems(
    separator,
    path: str,
    targets: dict[str, Path],
    subtype: str,
    progress: bool,
    label: str = "",
) -> list[str]:
    """Separate `path` into `targets` (stem -> final path: "instrumental", "vocals"); each file
    appears under its final name only when complete. Returns warnings (a stem clipped in an integer
    format); raises DecodeError / ProbeError / OSError naming the file. `separator` is a Separator or
    an Ensemble."""
    import contextlib

    import soundfile

    from pipeline.audio.decode import decode_chunks
    from pipeline.durable import staged_path
    from pipeline.ingest.probe import ProbeError, probe_file

    result = probe_file(path)  # duration for the progress bar; a clear reason when it is no audio
    if result is None:
        raise ProbeError("not audio")
    rate = separator.stft.sample_rate if isinstance(separator, Separator) else separator.sample_rate
    mixture_parts: list[np.ndarray] = []

    def mixture_chunks():
        for chunk in decode_chunks(path, sample_rate=rate):
            mixture_parts.append(chunk)  # kept until the instrumental of these samples is out
            yield chunk

    integer = subtype != "FLOAT"
    peaks = dict.fromkeys(targets, 0.0)
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(progress_bar(result.duration, label or Path(path).name, progress))
        files = {}
        for stem, target in targets.items():
            tmp = stack.enter_context(staged_path(target))
            kind = target.suffix.lstrip(".").upper()
            files[stem] = stack.enter_context(soundfile.SoundFile(tmp, "w", rate, fmt.CHANNELS, subtype, format=kind))
        pending = np.zeros((0, fmt.CHANNELS), dtype=np.float32)
        for estimate in separator.instrumental_chunks(mixture_chunks()):
            while len(pending) < len(estimate):
                pending = np.concatenate([pending, mixture_parts.pop(0)])
            mixture, pending = pending[: len(estimate)], pending[len(estimate) :]
            for stem, out in files.items():
                signal = estimate if stem == "instrumental" else mixture - estimate
                if len(signal):
                    peaks[stem] = max(peaks[stem], float(np.abs(signal).max()))
                out.write(np.clip(signal, -1.0, 1.0) if integer else signal)
            bar.update(len(estimate) / rate)
    return [
        f"{path}: the {stem} peaks at {20 * np.log10(peak):+.1f} dBFS and was clipped in {targets[stem].name} "
        f"(--format wav --bit-depth float keeps it)"
        for stem, peak in peaks.items()
        if integer and peak > 1.0
    ]


__all__ = [
    "Separator",
    "load_separator",
    "write_stems",
    "output_subtype",
    "progress_bar",
    "SUBTYPES",
    "DEFAULT_OVERLAP",
]
