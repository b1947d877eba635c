"""Statistics and exact placement of the BERT-style corruptions (trainer/pretrain/corrupt.py)."""

from __future__ import annotations

import pytest
import torch

from trainer.pretrain.corrupt import CorruptConfig, corrupt_batch, eligible_tokens, separator_frames, separator_pattern

BINS = 16
FRAMES = 512
TOKEN = 16


def random_batch(batch: int, frames: int = FRAMES, bins: int = BINS, seed: int = 0) -> torch.Tensor:
    # strictly below 1.0 so a masked token (all 1.0) is never confused with clean content
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 2, bins, frames, generator=generator) * 0.99


def corrupt(clean, group=None, seed=1, **overrides):
    cfg = CorruptConfig(**overrides)
    if group is None:
        group = torch.arange(clean.shape[0])
    return corrupt_batch(clean, group, cfg, torch.Generator().manual_seed(seed)), cfg


def token_view(x: torch.Tensor, token_frames: int = TOKEN) -> torch.Tensor:
    """[B, C, F, T] -> [B, n_tokens, C * F * token_frames] (T a multiple of token_frames)."""
    batch, channels, bins, frames = x.shape
    tokens = x.reshape(batch, channels, bins, frames // token_frames, token_frames)
    return tokens.permute(0, 3, 1, 2, 4).reshape(batch, frames // token_frames, -1)


@pytest.fixture(scope="module")
def big():
    clean = random_batch(1024)
    out, cfg = corrupt(clean)
    return clean, out, cfg


def test_shapes_and_dtypes(big):
    clean, out, _ = big
    assert out.input.shape == clean.shape and out.target.shape == clean.shape
    assert out.selected.shape == (1024, FRAMES) and out.selected.dtype == torch.bool
    assert out.separator.shape == (1024, FRAMES) and out.separator.dtype == torch.bool
    assert out.nsp_label.shape == (1024,) and out.nsp_label.dtype == clean.dtype


def test_separator_pattern_and_placement_exact(big):
    _, out, _ = big
    expected_frames = torch.zeros(FRAMES, dtype=torch.bool)
    expected_frames[FRAMES // 2 - TOKEN // 2 : FRAMES // 2 + TOKEN // 2] = True
    assert torch.equal(out.separator, expected_frames.expand(1024, FRAMES))
    pattern = torch.tensor([1.0, 0.0] * (BINS // 2))
    for tensor in (out.input, out.target):
        sep = tensor[..., expected_frames]  # [B, 2, F, 16]
        assert torch.equal(sep, pattern[None, None, :, None].expand_as(sep))


def test_separator_never_selected(big):
    _, out, _ = big
    assert not (out.selected & out.separator).any()
    # tokens that merely overlap the separator are excluded too: with the join at 256 and 16-frame
    # tokens, tokens 15 and 16 (frames 240..271) are both half separator
    assert not out.selected[:, 240:272].any()


def test_selection_rate_and_minimum(big):
    _, out, cfg = big
    tokens_selected = out.selected.view(1024, -1, TOKEN)
    # every frame of a token shares its selection
    assert torch.equal(tokens_selected.all(dim=2), tokens_selected.any(dim=2))
    per_sample = tokens_selected.any(dim=2).sum(dim=1).float()
    eligible = FRAMES // TOKEN - 2
    assert per_sample.min() >= 1
    assert abs(per_sample.mean().item() / eligible - cfg.select_rate) < 0.01


def test_at_least_one_token_even_for_short_crops():
    clean = random_batch(2000, frames=48)  # 3 tokens, the middle one under the separator
    out, _ = corrupt(clean)
    per_sample = out.selected.view(2000, 3, TOKEN).any(dim=2)
    assert torch.equal(per_sample.sum(dim=1), torch.ones(2000, dtype=torch.long))
    assert not per_sample[:, 1].any()
    assert per_sample[:, 0].any() and per_sample[:, 2].any()  # both eligible tokens get picked


def test_selection_rate_holds_for_short_crops_without_nsp():
    # 20 tokens * 0.15 = 3.0; with 10 tokens 1.5: stochastic rounding keeps the mean exact
    clean = random_batch(4000, frames=160)
    out, _ = corrupt(clean, nsp=False)
    per_sample = out.selected.view(4000, 10, TOKEN).any(dim=2).sum(dim=1).float()
    assert abs(per_sample.mean().item() - 1.5) < 0.05
    assert not out.separator.any()
    assert torch.equal(out.nsp_label, torch.ones(4000))
    assert torch.equal(out.target, clean)


def test_80_10_10_split(big):
    _, out, _ = big
    inp, tgt = token_view(out.input), token_view(out.target)
    selected = out.selected.view(1024, -1, TOKEN).any(dim=2)
    masked = (inp == 1.0).all(dim=2)
    unchanged = (inp == tgt).all(dim=2)
    noised = ~masked & ~unchanged
    assert not (masked & ~selected).any() and not (noised & ~selected).any()
    # noise only raises values: max(noise, original)
    assert ((inp >= tgt) | ~noised[..., None]).all()
    n = selected.sum().item()
    assert n > 4000  # tolerances below are > 3 standard deviations at this count
    assert abs(masked[selected].float().mean().item() - 0.8) < 0.02
    assert abs(noised[selected].float().mean().item() - 0.1) < 0.015
    assert abs((unchanged & selected)[selected].float().mean().item() - 0.1) < 0.015


def test_unselected_frames_of_input_equal_target(big):
    _, out, _ = big
    keep = ~out.selected[:, None, None, :]
    assert torch.equal(out.input.masked_select(keep), out.target.masked_select(keep))


def test_nsp_balance_partner_group_and_targets_untouched():
    batch = 2048
    clean = random_batch(batch)
    group = torch.arange(batch) // 4  # four clips per track, as in real batches
    out, _ = corrupt(clean, group=group)
    assert abs(out.nsp_label.mean().item() - 0.5) < 0.04
    half = FRAMES // 2
    sep = out.separator[0]
    not_sep = ~sep
    first = torch.arange(FRAMES) < half
    # first halves (outside the separator) are the clean crop, always
    assert torch.equal(out.target[..., first & not_sep], clean[..., first & not_sep])
    kept = out.nsp_label == 1.0
    assert torch.equal(out.target[kept][..., not_sep], clean[kept][..., not_sep])
    # replaced second halves equal the second half of a sample of another group
    second = ~first & not_sep
    replaced = torch.nonzero(~kept).flatten()
    probe = int(torch.nonzero(second)[0])  # first frame of the second half after the separator
    for i in replaced[:64].tolist():
        partners = torch.nonzero((clean[..., probe] == out.target[i, :, :, probe]).flatten(1).all(dim=1)).flatten()
        assert len(partners) == 1
        assert torch.equal(out.target[i][..., second], clean[partners[0]][..., second])
        assert group[partners[0]] != group[i]


def test_one_group_batch_has_no_replacement():
    clean = random_batch(64)
    out, _ = corrupt(clean, group=torch.full((64,), 7))
    assert torch.equal(out.nsp_label, torch.ones(64))
    not_sep = ~out.separator[0]
    assert torch.equal(out.target[..., not_sep], clean[..., not_sep])


def test_deterministic_given_generator_and_sensitive_to_seed():
    clean = random_batch(32)
    a, _ = corrupt(clean, seed=5)
    b, _ = corrupt(clean, seed=5)
    c, _ = corrupt(clean, seed=6)
    for name in ("input", "target", "selected", "separator", "nsp_label"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.selected, c.selected)


def test_config_values_are_honoured():
    clean = random_batch(512, frames=256)
    out, _ = corrupt(clean, token_frames=8, select_rate=0.5, mask_prob=1.0, noise_prob=0.0, mask_value=0.25)
    assert torch.equal(out.separator[0], separator_frames(256, 8))
    selected_tokens = out.selected.view(512, -1, 8).any(dim=2)
    eligible = int(eligible_tokens(256, 8, separator_frames(256, 8)).sum())
    assert abs(selected_tokens.sum(dim=1).float().mean().item() / eligible - 0.5) < 0.02
    sel = out.selected[:, None, None, :].expand_as(out.input)
    assert torch.equal(out.input[sel], torch.full_like(out.input[sel], 0.25))


def test_odd_lengths_and_partial_last_token():
    clean = random_batch(256, frames=101)  # 7 tokens, the last of 5 frames
    out, _ = corrupt(clean)
    assert torch.equal(out.separator[0], separator_frames(101, TOKEN))
    assert int(out.separator[0].sum()) == TOKEN
    assert (out.selected.sum(dim=1) >= 5).all()
    assert out.selected[:, 96:].any()  # the partial token can be selected


def test_crop_with_no_eligible_token_is_a_clear_error():
    with pytest.raises(ValueError, match="no token"):
        corrupt(random_batch(2, frames=32))


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError, match="mask_prob"):
        CorruptConfig(mask_prob=0.95, noise_prob=0.1)


def test_separator_pattern_values():
    assert separator_pattern(5).tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]


def test_host_side_eligible_count_matches_the_token_mask():
    from trainer.pretrain.corrupt import _count_eligible, separator_span

    for token_frames in (1, 2, 3, 16):
        for frames in range(1, 80):
            span = separator_span(frames, token_frames)
            mask = eligible_tokens(frames, token_frames, separator_frames(frames, token_frames))
            assert _count_eligible(frames, token_frames, span) == int(mask.sum()), (frames, token_frames)
            assert _count_eligible(frames, token_frames, (0, 0)) == len(mask)
