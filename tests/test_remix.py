"""`data.remix`: a separation batch's crops rebuilt as their own target plus another crop's residual —
the share it promises, the partner's residual and no other, the pair's scale, determinism under a
seed, and that validation and a remix of 0 leave the batch alone."""

from __future__ import annotations

import pytest
import torch

from trainer.config import load_config
from trainer.separation.remix import remix
from trainer.separation.task import SeparationTask


def _batch(size: int = 6, bins: int = 8, frames: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops whose target is the mixture (0.5) in the low half of the bins and silent in the high half:
    the residual lives in the high half only, at a level that names the crop (0.1 x (index + 1))."""
    mixture = torch.full((size, 2, bins, frames), 0.5)
    mixture[:, :, bins // 2 :] = 0.1 * torch.arange(1, size + 1, dtype=torch.float32)[:, None, None, None]
    target = mixture.clone()
    target[:, :, bins // 2 :] = 0
    return mixture, target


def test_every_crop_remixed_at_one_keeps_its_target_and_takes_another_crops_residual():
    mixture, target = _batch()
    new_mixture, new_target, remixed = remix(mixture, target, 1.0, torch.Generator().manual_seed(0))
    assert new_mixture.shape == mixture.shape and new_target.shape == target.shape and bool(remixed.all())
    bins = mixture.shape[2]
    for i in range(mixture.shape[0]):
        # the pair shares one scale: the new mixture's max is 1, the target is the old one on that scale
        assert float(new_mixture[i].amax()) == pytest.approx(1.0)
        scale = float(new_target[i, 0, 0, 0]) / 0.5
        assert torch.allclose(new_target[i, :, : bins // 2], torch.full((2, bins // 2, 16), 0.5 * scale))
        assert torch.equal(new_target[i, :, bins // 2 :], torch.zeros(2, bins // 2, 16))
        # where the target is silent, the new mixture is exactly the partner's residual: another crop's level
        level = float(new_mixture[i, 0, -1, 0]) / scale
        partner = round(level / 0.1) - 1
        assert partner != i and 0 <= partner < mixture.shape[0]
        assert scale == pytest.approx(1 / max(0.5, level))
        assert torch.allclose(new_mixture[i, :, bins // 2 :] / scale, torch.full((2, bins // 2, 16), level))
        # where the partner's residual is silent, the new mixture is the crop's own instrumental
        assert torch.allclose(new_mixture[i, :, : bins // 2], new_target[i, :, : bins // 2])


def test_the_remixed_share_follows_the_probability_and_a_seed_repeats_the_batch():
    mixture, target = _batch(size=8)
    counts = [int(remix(mixture, target, 0.3, torch.Generator().manual_seed(s))[2].sum()) for s in range(300)]
    assert sum(counts) / (300 * 8) == pytest.approx(0.3, abs=0.03)
    first = remix(mixture, target, 0.5, torch.Generator().manual_seed(7))
    again = remix(mixture, target, 0.5, torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    untouched = ~first[2]
    assert torch.equal(first[0][untouched], mixture[untouched]) and torch.equal(first[1][untouched], target[untouched])


def test_no_remix_at_zero_or_without_a_second_crop():
    mixture, target = _batch()
    out = remix(mixture, target, 0.0, torch.Generator().manual_seed(0))
    assert out[0] is mixture and out[1] is target and not bool(out[2].any())
    single = remix(mixture[:1], target[:1], 1.0, torch.Generator().manual_seed(0))
    assert not bool(single[2].any()) and torch.equal(single[0], mixture[:1])


class _Mask(torch.nn.Module):
    """A model whose mask is 1: the estimate is the mixture, so the loss shows which mixture it saw."""

    def forward(self, mixture):
        return torch.ones_like(mixture), None


def test_training_batches_are_remixed_and_validation_batches_never():
    mixture, target = _batch()
    cfg = load_config("tiny", overrides=["data.remix=1.0"])
    task = SeparationTask(cfg, "pairs/")
    batch = {"mixture": mixture, "target": target}
    _, trained, _ = task.loss(_Mask(), batch, torch.Generator().manual_seed(0), torch.device("cpu"))
    _, validated, _ = task.loss(_Mask(), batch, None, torch.device("cpu"))
    plain = (mixture - target).abs().mean()
    assert float(validated["l1"]) == pytest.approx(float(plain))
    assert float(trained["l1"]) != pytest.approx(float(plain))
    off = SeparationTask(load_config("tiny"), "pairs/")
    _, untouched, _ = off.loss(_Mask(), batch, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert float(untouched["l1"]) == pytest.approx(float(plain))


def test_a_remix_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="data.remix"):
        load_config("tiny", overrides=["data.remix=1.5"])
