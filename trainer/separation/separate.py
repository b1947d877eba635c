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
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import format as fmt

OUTPUT_FORMATS = {"flac": "PCM_24", "wav": "FLOAT"}
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

    def __post_init__(self):
        if self.window_frames < 2:
            raise ValueError(f"window must be at least 2 frames, got {self.window_frames}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        self.segment = self.window_frames * self.stft.hop  # samples
        # a whole number of hops, so that every segment's frames sit on one grid
        self.fade = int(round(self.segment * self.overlap / self.stft.hop)) * self.stft.hop
        self.step = self.segment - self.fade
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
        with autocast_for(self.device):
            mask, _ = self.model(magnitude / peak)
        return mask.float()

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
    overlap: float = DEFAULT_OVERLAP,
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
        overlap,
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


def audio_files(inputs: Iterable[str]) -> Iterator[str]:
    """Files as given; directories walked (sorted) for audio file names."""
    from pipeline.ingest.probe import AUDIO_EXTENSIONS

    for item in inputs:
        if os.path.isdir(item):
            for folder, dirs, files in os.walk(item):
                dirs.sort()
                for name in sorted(files):
                    if name.rpartition(".")[2].lower() in AUDIO_EXTENSIONS and not name.startswith("."):
                        yield os.path.join(folder, name)
        else:
            yield item


def output_names(files: list[str]) -> list[str]:
    """`<name>` of each input: its file name without extension, or `<folder> - <name>` where two inputs
    share a name (a folder per song of `mixture.wav`s), numbered if that is not enough."""
    stems = [Path(f).stem for f in files]
    names = [s if stems.count(s) == 1 else f"{Path(f).parent.name} - {s}" for f, s in zip(files, stems)]
    return [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]


def separate_file(
    separator: Separator, path: str, out_dir: Path, output_format: str, progress: bool, name: str | None = None
) -> list[Path]:
    """Write `<name>_instrumental.<fmt>` and `<name>_vocals.<fmt>` into out_dir (each appears whole
    or not at all); raises DecodeError / ProbeError / OSError naming the file."""
    import soundfile
    from tqdm import tqdm

    from pipeline.audio.decode import decode_chunks
    from pipeline.durable import staged_path
    from pipeline.ingest.probe import ProbeError, probe_file

    result = probe_file(path)  # duration for the progress bar; a clear reason when it is no audio
    if result is None:
        raise ProbeError("not audio")
    stem = name or Path(path).stem
    targets = [out_dir / f"{stem}_{part}.{output_format}" for part in ("instrumental", "vocals")]
    out_dir.mkdir(parents=True, exist_ok=True)
    mixture_parts: list[np.ndarray] = []

    def mixture_chunks():
        for chunk in decode_chunks(path, sample_rate=separator.stft.sample_rate):
            mixture_parts.append(chunk)  # kept until the instrumental of these samples is out
            yield chunk

    bar = tqdm(total=round(result.duration, 1), unit="s", desc=stem[:30], disable=not progress, leave=False)
    subtype = OUTPUT_FORMATS[output_format]
    rate = separator.stft.sample_rate
    try:
        with (
            staged_path(targets[0]) as tmp_inst,
            staged_path(targets[1]) as tmp_voc,
            soundfile.SoundFile(tmp_inst, "w", rate, fmt.CHANNELS, subtype, format=output_format.upper()) as inst,
            soundfile.SoundFile(tmp_voc, "w", rate, fmt.CHANNELS, subtype, format=output_format.upper()) as voc,
        ):
            pending = np.zeros((0, fmt.CHANNELS), dtype=np.float32)
            for estimate in separator.instrumental_chunks(mixture_chunks()):
                while len(pending) < len(estimate):
                    pending = np.concatenate([pending, mixture_parts.pop(0)])
                mixture, pending = pending[: len(estimate)], pending[len(estimate) :]
                inst.write(np.clip(estimate, -1.0, 1.0) if subtype != "FLOAT" else estimate)
                vocals = mixture - estimate
                voc.write(np.clip(vocals, -1.0, 1.0) if subtype != "FLOAT" else vocals)
                bar.update(len(estimate) / rate)
    finally:
        bar.close()
    return targets


def separate_files(
    inputs: list[str],
    checkpoint: str,
    out_dir: str | os.PathLike,
    output_format: str = "flac",
    device: str = "auto",
    batch_size: int | None = None,
    window_frames: int | None = None,
    overlap: float = DEFAULT_OVERLAP,
    progress: bool | None = None,
) -> tuple[list[Path], list[str]]:
    """Separate every input; returns (files written, one-line errors). A bad file is an error line and
    the others are still done."""
    from pipeline.audio.decode import DecodeError
    from pipeline.ingest.probe import ProbeError

    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {output_format!r} (flac or wav)")
    separator = load_separator(checkpoint, device, batch_size, window_frames, overlap)
    progress = sys.stderr.isatty() if progress is None else progress
    written, errors = [], []
    files = list(audio_files(inputs))
    if not files:
        errors.append(f"{', '.join(inputs)}: no audio files")
    for path, name in zip(files, output_names(files)):
        try:
            if not os.path.exists(path):
                raise FileNotFoundError(path)
            written += separate_file(separator, path, Path(out_dir), output_format, progress, name)
        except FileNotFoundError:
            errors.append(f"{path}: no such file")
        except (DecodeError, ProbeError, OSError, RuntimeError) as exc:
            message = " ".join(str(exc).split())
            errors.append(message if message.startswith(path) else f"{path}: {message}")
    return written, errors


__all__ = [
    "Separator",
    "load_separator",
    "separate_file",
    "separate_files",
    "audio_files",
    "output_names",
    "OUTPUT_FORMATS",
]
