"""The objective's switches (model.output, loss.domain, model.input_scale, corrupt.pair_task) and the
evaluation yardstick: what each computes, pinned on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.config import LossConfig, load_config
from trainer.model import ModelConfig, build_model
from trainer.pretrain.corrupt import CorruptConfig, corrupt_batch
from trainer.pretrain.evaluate import band_masks, evaluate, frame_errors, yardstick
from trainer.pretrain.objective import compute_loss, reconstruct, to_loss_domain


def batch(b=4, bins=32, frames=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 2, bins, frames, generator=g) ** 6 * 0.99


def corrupt(clean, seed=1, **cfg):
    return corrupt_batch(clean, torch.arange(clean.shape[0]), CorruptConfig(**cfg), torch.Generator().manual_seed(seed))


def small_model(**overrides) -> ModelConfig:
    fields = dict(
        bins=32, num_downsamples=2, channels=[4, 6, 8], num_encoders=1, num_decoders=1, num_heads=2,
        min_head_dim=8, max_distance=4, dropout=0.0, nsp_hidden=8,
    )  # fmt: skip
    return ModelConfig(**{**fields, **overrides})


def test_masked_frames_are_the_selected_frames_set_to_the_mask_value():
    clean = batch(8)
    out = corrupt(clean, token_frames=8, select_rate=0.3)
    assert out.masked is not None and not (out.masked & ~out.selected).any()
    b, t = torch.nonzero(out.masked, as_tuple=True)
    assert (out.input[b, :, :, t] == 1.0).all() and out.masked.any()


def test_sop_swaps_the_halves_of_the_same_crop_and_labels_the_swap():
    clean = batch(16, frames=64)
    out = corrupt(clean, token_frames=8, pair_task="sop", nsp_prob=0.5)
    kept, swapped = out.nsp_label == 1, out.nsp_label == 0
    assert kept.any() and swapped.any()
    sep = out.separator[0]
    rolled = torch.roll(clean, 32, dims=-1)
    assert torch.equal(out.target[kept][..., ~sep], clean[kept][..., ~sep])
    assert torch.equal(out.target[swapped][..., ~sep], rolled[swapped][..., ~sep])
    with pytest.raises(ValueError, match="pair_task"):
        CorruptConfig(pair_task="order")


def test_mask_output_is_mask_times_input_and_mask_fill_ignores_the_mask_value():
    clean = batch()
    out = corrupt(clean)
    head = torch.full_like(clean, 0.5)
    assert torch.equal(reconstruct(head, out, "mask"), 0.5 * out.input)
    gate, fill = torch.full_like(clean, 0.25), torch.full_like(clean, 0.01)
    rec = reconstruct(torch.cat((gate, fill), dim=1), out, "mask_fill")
    m = out.masked[:, None, None, :].expand_as(clean)
    assert torch.allclose(rec[m], torch.full_like(rec[m], 0.01))  # [MASK] frames: the fill alone
    assert torch.allclose(rec[~m], 0.25 * out.input[~m] + 0.75 * 0.01)


def test_log_domain_loss_weighs_quiet_bins_like_loud_ones():
    cfg = LossConfig(domain="log", log_eps=1e-3)
    x = torch.tensor([0.0, 1e-3, 1.0])
    assert torch.allclose(to_loss_domain(x, cfg), torch.tensor([0.0, math.log(2.0), math.log(1001.0)]))
    # halving a quiet bin costs as much as halving a loud one (up to eps), unlike linear L1
    quiet, loud = torch.tensor([0.1]), torch.tensor([1.0])
    log_cost = [float((to_loss_domain(v, cfg) - to_loss_domain(v / 2, cfg)).abs()) for v in (quiet, loud)]
    assert log_cost[0] == pytest.approx(log_cost[1], rel=0.02)
    with pytest.raises(ValueError, match="loss.domain"):
        LossConfig(domain="db")


def test_compute_loss_reports_the_loss_domain_l1():
    clean = batch()
    out = corrupt(clean)
    head = torch.full_like(clean, 0.5)
    _, lin, _ = compute_loss(head, torch.zeros(4), out, LossConfig(), True)
    _, log, _ = compute_loss(head, torch.zeros(4), out, LossConfig(domain="log"), True)
    assert float(lin["masked_l1"]) != pytest.approx(float(log["masked_l1"]))


def test_mask_fill_model_head_starts_at_its_priors_and_log_input_is_bounded():
    torch.manual_seed(0)
    cfg = small_model(output="mask_fill", mask_prior=0.5, fill_prior=1e-3, input_scale="log", distance_bias=True)
    model = build_model(cfg).eval()
    head, logit = model(batch(2))
    assert head.shape == (2, 4, 32, 96) and logit.shape == (2,)
    assert model.mask_head.bias[:2].sigmoid().allclose(torch.tensor(0.5))
    assert model.mask_head.bias[2:].sigmoid().allclose(torch.tensor(1e-3))
    with pytest.raises(ValueError, match="output must be one of"):
        small_model(output="fill")


def test_yardstick_is_the_original_tokens_whatever_the_training_corruption():
    trained = CorruptConfig(token_frames=4, select_rate=0.5, mask_prob=1.0, noise_prob=0.0, pair_task="sop")
    y = yardstick(trained)
    assert (y.token_frames, y.select_rate, y.mask_prob, y.noise_prob) == (16, 0.15, 0.8, 0.1)
    assert y.pair_task == "sop" and y.mask_value == trained.mask_value
    assert yardstick(CorruptConfig()) == CorruptConfig()


def test_frame_errors_split_bands_and_lsd_is_zero_for_a_perfect_prediction():
    bands = band_masks(1024)
    assert int(bands["lows"].sum()) == 12 and int(bands["mids"].sum()) == 174
    assert sum(int(b.sum()) for b in bands.values()) == 1024
    target = torch.rand(2, 2, 1024, 8, generator=torch.Generator().manual_seed(0)) * 0.4 + 0.1  # above the floor
    selected = torch.zeros(2, 8, dtype=torch.bool)
    selected[:, 2:4] = True
    perfect = frame_errors(target, target, selected, bands)
    assert all(float(v) == 0.0 for v in perfect.values())
    doubled = frame_errors(target * 2, target, selected, bands)
    assert float(doubled["lsd"]) / 4 == pytest.approx(20 * math.log10(2), rel=1e-4)  # 6.02 dB on every bin
    assert float(doubled["l1"]) == pytest.approx(float(doubled["l1_lows"] + doubled["l1_mids"] + doubled["l1_highs"]))


def test_evaluate_scores_every_model_on_the_same_frames_and_reports_nsp_chance():
    torch.manual_seed(0)
    clean = [{"spec": batch(4, frames=64, seed=s), "group": torch.arange(4)} for s in range(2)]
    results = []
    for output in ("mask", "mask_fill"):
        model = build_model(small_model(output=output))
        results.append(evaluate(model, clean, yardstick(CorruptConfig()), torch.device("cpu"), output=output))
    a, b = results
    assert a.selected_frames == b.selected_frames
    assert a.copy_nearest_l1 == b.copy_nearest_l1 and a.interpolate_l1 == b.interpolate_l1
    assert 0.5 <= a.nsp_chance <= 1.0
    # the gap metric scores the [MASK] frames only, for model and baselines alike
    assert a.scores["interpolate"]["l1_gaps"] > 0 and a.to_dict()["model_l1_gaps"] > 0
    flat = a.to_dict()
    assert {"model_l1", "model_lsd", "copy_nearest_l1_lows", "interpolate_l1_highs", "ratio_copy", "nsp_chance"} <= set(
        flat
    )


def test_named_original_config_is_the_persons_objective():
    cfg = load_config("original")
    assert cfg.model.output == "mask" and cfg.model.input_scale == "linear" and cfg.loss.domain == "linear"
    assert (cfg.corrupt.token_frames, cfg.corrupt.select_rate, cfg.corrupt.mask_prob) == (16, 0.15, 0.8)
    assert cfg.corrupt.nsp and cfg.corrupt.pair_task == "nsp" and not cfg.model.distance_bias


def test_changed_frames_are_masked_or_noised_and_kept_tokens_are_intact():
    clean = batch(16)
    out = corrupt(clean, token_frames=8, select_rate=0.5)
    assert torch.equal(out.changed(), out.masked | out.noised) and not (out.masked & out.noised).any()
    kept = out.selected & ~out.changed()
    assert kept.any() and out.noised.any()
    b, t = torch.nonzero(kept, as_tuple=True)
    assert torch.equal(out.input[b, :, :, t], out.target[b, :, :, t])


def test_mask_refine_starts_at_the_interpolation_across_masked_frames():
    from trainer.pretrain.baselines import interpolate

    torch.manual_seed(0)
    clean = batch(4, frames=64)
    out = corrupt(clean, token_frames=8, select_rate=0.3)
    model = build_model(small_model(output="mask_refine", mask_prior=0.5, fill_prior=0.5)).eval()
    with torch.no_grad():
        head, _ = model(out.input)
    rec = reconstruct(head, out, "mask_refine")
    expected = interpolate(out.input, out.masked, out.separator)
    m = out.masked[:, None, None, :].expand_as(clean)
    assert torch.allclose(rec[m], expected[m], atol=1e-6)
    # elsewhere: input x (g + (1 - g) x 1) = the input
    assert torch.allclose(rec[~m], out.input[~m], atol=1e-6)


def test_mask_detect_untrained_fills_noise_and_gaps_exactly_like_the_interpolation_baseline():
    """With a neutral head (gate 0.5, factor 1, no learned opinion on noise) the noised frames are found
    by the rule and every changed frame gets the interpolation from intact frames, which is the
    baseline's estimate; intact frames and the separator keep the input."""
    from trainer.pretrain.baselines import interpolate

    clean = batch(8, bins=256, frames=96) * 0.2  # music never within 12 dB of the max in a quarter of its bins
    out = corrupt(clean, token_frames=8, select_rate=0.3, mask_prob=0.5, noise_prob=0.4)
    assert out.noised.any() and out.masked.any() and out.separator.any()
    neutral = torch.full((8, 6, 256, 96), 0.5)
    rec = reconstruct(neutral, out, "mask_detect")
    expected = interpolate(out.input, out.changed(), out.separator)
    assert torch.allclose(rec, expected, atol=1e-6)


def test_mask_detect_keeps_loud_music_and_the_separator_and_a_learned_logit_can_overrule_the_rule():
    from trainer.pretrain.objective import noise_logit

    clean = torch.full((1, 2, 32, 64), 1e-3)
    clean[..., 40:48, :] = 1.0  # loud in a quarter of the bins: still music by the rule
    out = corrupt(clean, token_frames=8, select_rate=0.0)
    out.masked[:] = False
    noise = torch.rand(1, 2, 32, 8, generator=torch.Generator().manual_seed(0))
    out.input[..., 8:16] = torch.maximum(noise, clean[..., 8:16])
    assert out.separator.any() and (noise_logit(out.input)[0, out.separator[0]] > 0).all()  # 1,0,1,0: loud
    neutral = torch.full((1, 6, 32, 64), 0.5)
    rec = reconstruct(neutral, out, "mask_detect")
    assert rec[..., 8:16].max() < 0.01  # the noise is gone
    keep = torch.ones(64, dtype=torch.bool)
    keep[8:16] = False
    assert torch.allclose(rec[..., keep], out.input[..., keep])  # music and separator pass through
    # near the rule's midpoint the learned logit decides: loud in half the bins is noise to the rule
    # (logit +6), music when the head says so (its logit -14)
    out.input[..., 8:16] = clean[..., 8:16]
    out.input[:, :, :16, 8:16] = 1.0
    assert rec.shape == out.input.shape and reconstruct(neutral, out, "mask_detect")[:, :, :16, 8:16].max() < 0.01
    music = torch.cat((torch.full((1, 4, 32, 64), 0.5), torch.zeros(1, 2, 32, 64)), 1)
    assert torch.allclose(reconstruct(music, out, "mask_detect")[..., 8:16], out.input[..., 8:16], atol=1e-3)
