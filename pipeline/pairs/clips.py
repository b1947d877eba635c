"""A pair -> clips of mixture and target magnitude on the same grid, for `pipeline shard --pairs`.

Both signals come from `align.paired_chunks` (sample-aligned, the mixture's length), so the two
STFTs have the same frames and are cut at the same clip boundaries. The two STFT streams read one
decoded stream through `itertools.tee`, which holds only what one side has read ahead of the
other: at most a clip's worth of audio, whatever the track length.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from pipeline import format as fmt
from pipeline.audio.stft import Clip, clips_from_chunks
from pipeline.pairs.align import paired_chunks


def pair_clips(
    pair: fmt.PairRecord, stft: fmt.STFTParams = fmt.STFTParams(), clip_frames: int = fmt.DEFAULT_CLIP_FRAMES
) -> Iterator[tuple[Clip, Clip]]:
    """(mixture clip, target clip) in order; raises decode.DecodeError naming a file that fails."""
    chunks = paired_chunks(pair, sample_rate=stft.sample_rate)
    try:
        mixture, target = itertools.tee(chunks, 2)
        mixture_clips = clips_from_chunks((m for m, _ in mixture), stft, clip_frames)
        target_clips = clips_from_chunks((t for _, t in target), stft, clip_frames)
        yield from zip(mixture_clips, target_clips)
    finally:
        chunks.close()  # stops both decoders when the consumer stops early


__all__ = ["pair_clips"]
