"""The mixture pretext (trainer/pretrain/mixture.py through corrupt_batch): shapes, the proportions it
promises, determinism under a seed, the primary as the target, and the checks of its config values."""

from __future__ import annotations

import pytest
import torch

from trainer.config import CorruptConfig, TrainConfig
from trainer.pretrain.corrupt import corrupt_batch, separator_frames
from trainer.pretrain.mixture import random_phase_sum

MIX_ONLY = dict(select_rate=0.0, mask_prob=0.0, noise_prob=0.0, nsp=False)


def _batch(batch=16, bins=32, frames=64, seed=0):
    x = torch.rand(batch, 2, bins, frames, generator=torch.Generator().manual_seed(seed))
    return x / x.amax(dim=(1, 2, 3), keepdim=True), torch.arange(batch)


def _corrupt(clean, group, seed=0, **config):
    return corrupt_batch(clean, group, CorruptConfig(**config), torch.Generator().manual_seed(seed))


def test_every_crop_gets_one_span_of_its_cover_share_and_the_target_is_the_primary():
    clean, group = _batch()
    out = _corrupt(clean, group, mix_prob=1.0, mix_cover=(0.25, 0.5), **MIX_ONLY)
    assert out.input.shape == out.target.shape == clean.shape and out.mixed.shape == (16, 64)
    for row in out.mixed:
        span = row.nonzero().flatten()
        assert 16 <= len(span) <= 32  # a quarter to a half of 64 frames
        assert (span.diff() == 1).all()  # one contiguous span
    assert torch.equal(out.selected, out.mixed | out.selected) and out.mixed.any(dim=1).all()
    # target = the primary on the mixture's scale: the same crop up to one factor per sample
    ratio = clean / out.target.clamp(min=1e-12)
    assert torch.allclose(ratio, ratio.amax(dim=(1, 2, 3), keepdim=True).expand_as(ratio), rtol=1e-4)
    # outside the span the input is the target; inside it differs; the mixture peaks at 1
    outside = ~out.mixed[:, None, None, :]
    assert torch.allclose(torch.where(outside, out.input, 0), torch.where(outside, out.target, 0))
    assert not torch.allclose(torch.where(~outside, out.input, 0), torch.where(~outside, out.target, 0))
    assert torch.allclose(out.input.amax(dim=(1, 2, 3)), torch.ones(16))


def test_the_share_of_mixed_crops_follows_mix_prob_and_a_single_track_batch_is_never_mixed():
    clean, group = _batch(batch=64)
    out = _corrupt(clean, group, mix_prob=0.25, **MIX_ONLY)
    share = out.mixed.any(dim=1).float().mean().item()
    assert 0.1 <= share <= 0.4
    alone = _corrupt(clean, torch.zeros(64, dtype=torch.long), mix_prob=1.0, **MIX_ONLY)
    assert not alone.mixed.any() and torch.equal(alone.input, alone.target)


def test_the_interferer_is_quieter_than_the_primary_by_the_configured_gain():
    clean, group = _batch(batch=32)
    loud = _corrupt(clean, group, mix_prob=1.0, mix_gain_db=(-1.0, -1.0), mix_cover=(1.0, 1.0), **MIX_ONLY)
    quiet = _corrupt(clean, group, mix_prob=1.0, mix_gain_db=(-30.0, -30.0), mix_cover=(1.0, 1.0), **MIX_ONLY)
    change = lambda out: (out.input - out.target).abs().mean().item()  # noqa: E731
    assert change(quiet) < change(loud) / 10


def test_a_louder_interferer_is_allowed_over_a_span_and_the_target_stays_the_primary():
    clean, group = _batch(batch=32)
    out = _corrupt(clean, group, mix_prob=1.0, mix_gain_db=(6.0, 6.0), mix_cover=(0.5, 0.5), **MIX_ONLY)
    span = out.mixed[:, None, None, :]
    inside = lambda x: torch.where(span, x, 0).square().sum().item()  # noqa: E731
    # 6 dB louder: the interferer's energy in the span is ~4x the primary's, so the mixture's ~5x
    assert 3.5 < inside(out.input) / inside(out.target) < 6.5
    ratio = clean / out.target.clamp(min=1e-12)
    assert torch.allclose(ratio, ratio.amax(dim=(1, 2, 3), keepdim=True).expand_as(ratio), rtol=1e-4)
    assert (~out.mixed).any(dim=1).all()  # the primary alone somewhere in every crop


def test_the_same_generator_seed_gives_the_same_mixture_and_another_seed_another():
    clean, group = _batch()
    a = _corrupt(clean, group, seed=3, mix_prob=0.7)
    b = _corrupt(clean, group, seed=3, mix_prob=0.7)
    c = _corrupt(clean, group, seed=4, mix_prob=0.7)
    assert torch.equal(a.input, b.input) and torch.equal(a.mixed, b.mixed) and torch.equal(a.target, b.target)
    assert not torch.equal(a.input, c.input)


def test_masked_tokens_and_the_separator_combine_with_mixing_and_the_separator_is_never_mixed():
    clean, group = _batch(frames=128)
    out = _corrupt(clean, group, mix_prob=1.0, mix_cover=(1.0, 1.0), select_rate=0.3, mask_prob=1.0, noise_prob=0.0)
    separator = separator_frames(128, 16)
    assert not out.mixed[:, separator].any()
    assert out.mixed[:, ~separator].all()
    assert torch.all(out.input[out.masked[:, None, None, :].expand_as(out.input)] == 1.0)
    without = _corrupt(clean, group, select_rate=0.3, mask_prob=1.0, noise_prob=0.0)
    # mixing is drawn last: the tokens and the masking are those of the same seed without mixing
    assert without.mixed is None and torch.equal(out.masked, without.masked)
    assert torch.equal(out.selected, without.selected | out.mixed)


def test_random_phase_sum_stays_between_the_difference_and_the_sum_of_the_magnitudes():
    a, b = torch.rand(1000), torch.rand(1000)
    mixed = random_phase_sum(a, b, torch.Generator().manual_seed(0))
    assert torch.all(mixed <= a + b + 1e-6) and torch.all(mixed >= (a - b).abs() - 1e-6)
    # independent phases: the energies add on average
    assert mixed.square().mean().item() == pytest.approx((a.square() + b.square()).mean().item(), rel=0.1)


@pytest.mark.parametrize(
    "values, message",
    [
        (dict(mix_prob=1.5), "mix_prob"),
        (dict(mix_gain_db=(-3.0, 13.0)), "mix_gain_db"),
        (dict(mix_gain_db=(-1.0, -6.0)), "mix_gain_db"),
        (dict(mix_cover=(0.0, 0.5)), "mix_cover"),
        (dict(mix_cover=(0.6, 0.5)), "mix_cover"),
    ],
)
def test_bad_mixture_values_are_refused_naming_the_key(values, message):
    with pytest.raises(ValueError, match=message):
        CorruptConfig(**values)


def test_a_louder_interferer_over_the_whole_crop_is_refused_unless_both_sources_are_given_back():
    louder_everywhere = {"mix_prob": 1.0, "mix_gain_db": [-3.0, 2.0], "mix_cover": [0.5, 1.0]}
    with pytest.raises(ValueError, match=r"corrupt.mix_gain_db above 0 dB .* needs mix_cover below 1"):
        TrainConfig.from_dict({"corrupt": louder_everywhere})
    TrainConfig.from_dict({"corrupt": louder_everywhere, "model": {"output": "mask_pair"}})
    # a separation run never mixes, whatever its corrupt section says
    TrainConfig.from_dict({"corrupt": louder_everywhere, "run": {"task": "separation"}})
