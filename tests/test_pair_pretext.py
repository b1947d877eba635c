"""MixIT's two-output form of the mixture pretext (`model.output: mask_pair`): the interferer the
corruption hands back, the best assignment of the two estimates, the head, and a pretrain whose
trunk a fine-tune starts from with a fresh head."""

from __future__ import annotations

import pytest
import torch

from trainer.config import CorruptConfig, LossConfig, TrainConfig, load_config
from trainer.loop import pretrain
from trainer.model import build_model
from trainer.pretrain.corrupt import corrupt_batch
from trainer.pretrain.objective import compute_loss, pair_estimates, reconstruct
from trainer.pretrain.task import PretrainTask
from trainer.separation.finetune import head_is_a_separation_mask, resolve_finetune

from support import SMALL, write_shards

MIXIT = dict(select_rate=0.0, mask_prob=0.0, noise_prob=0.0, nsp=False, mix_prob=1.0)


def _mixed(seed=0, batch=6, cover=(1.0, 1.0), gain=(-6.0, 6.0)):
    clean = torch.rand(batch, 2, 16, 32, generator=torch.Generator().manual_seed(seed))
    cfg = CorruptConfig(mix_cover=cover, mix_gain_db=gain, **MIXIT)
    return clean, corrupt_batch(clean, torch.arange(batch), cfg, torch.Generator().manual_seed(seed))


def _ideal_head(out, swap: torch.Tensor) -> torch.Tensor:
    """Masks giving back (primary, interferer) exactly, in that order, or swapped where `swap`."""
    first = out.target / out.input.clamp(min=1e-12)
    second = out.interferer / out.input.clamp(min=1e-12)
    s = swap[:, None, None, None]
    return torch.cat((torch.where(s, second, first), torch.where(s, first, second)), dim=1)


def test_the_interferer_is_another_crop_scaled_within_its_span_and_zero_outside():
    clean, out = _mixed(cover=(0.25, 0.5))
    assert out.interferer.shape == clean.shape
    outside = ~out.mixed[:, None, None, :]
    assert torch.all(torch.where(outside, out.interferer, 0) == 0)
    for i in range(clean.shape[0]):
        span = out.mixed[i]
        ratios = [out.interferer[i][..., span] / clean[j][..., span] for j in range(clean.shape[0]) if j != i]
        assert any(torch.allclose(r, r.flatten()[0].expand_as(r), rtol=1e-4) for r in ratios)
    # two sources summed with random phase: the mixture lies between their difference and their sum
    assert torch.all(out.input <= out.target + out.interferer + 1e-6)
    assert torch.all(out.input >= (out.target - out.interferer).abs() - 1e-6)


def test_the_cheaper_assignment_is_taken_so_the_order_of_the_outputs_means_nothing():
    _, out = _mixed()
    swap = torch.tensor([False, True, False, True, True, False])
    primary, interferer, cost = pair_estimates(_ideal_head(out, swap), out)
    assert torch.allclose(primary, out.target, atol=1e-5) and torch.allclose(interferer, out.interferer, atol=1e-5)
    assert float(cost.max()) < 1e-5
    # any head: swapping its two outputs changes neither the loss nor the primary's estimate
    head = torch.rand(6, 4, 16, 32, generator=torch.Generator().manual_seed(1))
    flipped = torch.cat((head[:, 2:], head[:, :2]), dim=1)
    loss, parts, estimate = compute_loss(head, torch.zeros(6), out, LossConfig(), False, "mask_pair")
    loss_f, _, estimate_f = compute_loss(flipped, torch.zeros(6), out, LossConfig(), False, "mask_pair")
    assert torch.allclose(loss, loss_f) and torch.allclose(estimate, estimate_f)
    assert torch.allclose(parts["all_frames_l1"], pair_estimates(head, out)[2].mean())
    assert torch.allclose(reconstruct(head, out, "mask_pair"), estimate)


def test_both_outputs_learn_and_a_crop_without_interferer_has_silence_as_its_second_source():
    _, out = _mixed()
    head = torch.full((6, 4, 16, 32), 0.5, requires_grad=True)
    loss, _, _ = compute_loss(head, torch.zeros(6), out, LossConfig(), False, "mask_pair")
    loss.backward()
    assert head.grad[:, :2].abs().sum() > 0 and head.grad[:, 2:].abs().sum() > 0
    out.interferer = None
    silent = torch.cat((out.target / out.input, torch.zeros(6, 2, 16, 32)), dim=1)
    assert float(pair_estimates(silent, out)[2].max()) < 1e-5


def test_the_model_has_two_masks_starting_at_the_prior_and_differing():
    cfg = load_config("tiny", overrides=SMALL + ["model.output=mask_pair", "model.mask_prior=0.5"]).model
    model = build_model(cfg).eval()
    with torch.no_grad():
        head, _ = model(torch.rand(2, 2, 64, 8))
    assert head.shape == (2, 4, 64, 8)
    assert abs(float(head.mean()) - 0.5) < 0.2 and not torch.allclose(head[:, :2], head[:, 2:])


def test_the_config_asks_for_an_interferer_and_a_fine_tune_gets_a_fresh_head():
    with pytest.raises(ValueError, match="mask_pair needs corrupt.mix_prob > 0"):
        PretrainTask(TrainConfig.from_dict({"model": {"output": "mask_pair"}}), "shards")
    pair = {"model": {"output": "mask_pair"}, "corrupt": {"mix_prob": 1.0}}
    assert not head_is_a_separation_mask(pair)
    assert head_is_a_separation_mask({"model": {"output": "mask"}, "corrupt": {"mix_prob": 1.0}})


@pytest.mark.usefixtures("one_thread")
def test_a_mask_pair_pretrain_runs_and_fine_tunes_from_its_trunk(tmp_path):
    tracks = {f"track{i:02d}": f for i, f in enumerate([5, 7, 6, 9])}
    shards = write_shards(tmp_path / "shards", tracks, clips_per_track=2, shards_per_split=1)
    overrides = SMALL + ["model.output=mask_pair", "corrupt.mix_cover=[1,1]", "run.steps=2", "run.val_every=2"]
    pretrain(load_config("tiny", overrides=overrides), str(shards), tmp_path / "pre")
    cfg, _ = resolve_finetune(tmp_path / "ft", "tiny", None, SMALL, init=str(tmp_path / "pre"))
    assert cfg.model.output == "mask" and cfg.finetune.head == "reinit"
