"""MixIT's two-output form of the mixture pretext (`model.output: mask_pair`): the interferer the
corruption hands back, the best assignment of the two estimates, the head, and a pretrain whose
trunk a fine-tune starts from with a fresh head."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from trainer.checkpoint import WEIGHTS_FILE, resolve_checkpoint
from trainer.config import CorruptConfig, LossConfig, TrainConfig, load_config
from trainer.loop import pretrain
from trainer.model import build_model
from trainer.pretrain.corrupt import corrupt_batch
from trainer.pretrain.objective import compute_loss, masked_l1, pair_estimates, reconstruct, to_loss_domain
from trainer.separation.finetune import head_is_a_separation_mask, resolve_finetune
from trainer.separation.task import SeparationTask, build_separation_model, load_pretrained

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
    primary, interferer, masked, all_frames = pair_estimates(_ideal_head(out, swap), out)
    assert torch.allclose(primary, out.target, atol=1e-5) and torch.allclose(interferer, out.interferer, atol=1e-5)
    assert float(masked) < 1e-5 and float(all_frames) < 1e-5
    # any head: swapping its two outputs changes neither the loss nor the primary's estimate
    head = torch.rand(6, 4, 16, 32, generator=torch.Generator().manual_seed(1))
    flipped = torch.cat((head[:, 2:], head[:, :2]), dim=1)
    loss, parts, estimate = compute_loss(head, torch.zeros(6), out, LossConfig(), False, "mask_pair")
    loss_f, _, estimate_f = compute_loss(flipped, torch.zeros(6), out, LossConfig(), False, "mask_pair")
    assert torch.allclose(loss, loss_f) and torch.allclose(estimate, estimate_f)
    assert torch.allclose(reconstruct(head, out, "mask_pair"), estimate)


@pytest.mark.parametrize("domain, all_frames_weight", [("linear", 0.0), ("linear", 1.0), ("log", 0.5)])
def test_the_loss_is_the_least_over_every_assignment_of_the_batch_even_where_only_a_span_counts(
    domain, all_frames_weight
):
    """Brute force over the 2**B ways to assign the outputs, each scored as a fixed assignment: the
    trained loss is their minimum, also when the masked term covers only the interferer's span."""
    _, out = _mixed(batch=4, cover=(0.25, 0.5))
    loss_cfg = LossConfig(domain=domain, all_frames_weight=all_frames_weight)
    head = torch.rand(4, 4, 16, 32, generator=torch.Generator().manual_seed(2))
    first, second = head[:, :2] * out.input, head[:, 2:] * out.input

    def fixed(swap: torch.Tensor) -> float:
        s = swap[:, None, None, None]
        pairs = ((torch.where(s, second, first), out.target), (torch.where(s, first, second), out.interferer))
        total = 0.0
        for estimate, reference in pairs:
            e, r = to_loss_domain(estimate, loss_cfg), to_loss_domain(reference, loss_cfg)
            total += float(masked_l1(e, r, out.selected)) + all_frames_weight * float((e - r).abs().mean())
        return total

    patterns = [torch.tensor([bool(n >> b & 1) for b in range(4)]) for n in range(16)]
    best = min(fixed(p) for p in patterns)
    loss, _, _ = compute_loss(head, torch.zeros(4), out, loss_cfg, False, "mask_pair")
    assert float(loss) == pytest.approx(best, rel=1e-5)
    assert float(loss) < max(fixed(p) for p in patterns)  # the choice mattered


def test_both_outputs_learn_and_a_crop_without_interferer_has_silence_as_its_second_source():
    _, out = _mixed()
    head = torch.full((6, 4, 16, 32), 0.5, requires_grad=True)
    loss, _, _ = compute_loss(head, torch.zeros(6), out, LossConfig(), False, "mask_pair")
    loss.backward()
    assert head.grad[:, :2].abs().sum() > 0 and head.grad[:, 2:].abs().sum() > 0
    out.interferer = None
    silent = torch.cat((out.target / out.input, torch.zeros(6, 2, 16, 32)), dim=1)
    assert float(pair_estimates(silent, out, LossConfig(all_frames_weight=1.0))[3]) < 1e-5


def test_the_model_has_two_masks_starting_at_the_prior_and_differing():
    cfg = load_config("tiny", overrides=SMALL + ["model.output=mask_pair", "model.mask_prior=0.5"]).model
    model = build_model(cfg).eval()
    with torch.no_grad():
        head, _ = model(torch.rand(2, 2, 64, 8))
    assert head.shape == (2, 4, 64, 8)
    assert abs(float(head.mean()) - 0.5) < 0.2 and not torch.allclose(head[:, :2], head[:, 2:])


def test_the_config_asks_for_an_interferer_and_a_fine_tune_gets_a_fresh_head():
    with pytest.raises(ValueError, match="mask_pair needs corrupt.mix_prob > 0"):
        TrainConfig.from_dict({"model": {"output": "mask_pair"}})
    with pytest.raises(ValueError, match="run.task separation trains one mask .* got 'mask_pair'"):
        TrainConfig.from_dict({"model": {"output": "mask_pair"}, "run": {"task": "separation"}})
    pair = {"model": {"output": "mask_pair"}, "corrupt": {"mix_prob": 1.0}}
    assert not head_is_a_separation_mask(pair)
    assert head_is_a_separation_mask({"model": {"output": "mask"}, "corrupt": {"mix_prob": 1.0}})


@pytest.mark.usefixtures("one_thread")
def test_a_mask_pair_pretrain_runs_and_a_fine_tune_takes_its_trunk_with_a_new_head(tmp_path):
    tracks = {f"track{i:02d}": f for i, f in enumerate([5, 7, 6, 9])}
    shards = write_shards(tmp_path / "shards", tracks, clips_per_track=2, shards_per_split=1)
    overrides = SMALL + ["model.output=mask_pair", "corrupt.mix_cover=[1,1]", "run.steps=2", "run.val_every=2"]
    pretrain(load_config("tiny", overrides=overrides), str(shards), tmp_path / "pre")
    cfg, _ = resolve_finetune(tmp_path / "ft", "tiny", None, SMALL, init=str(tmp_path / "pre"))
    assert cfg.model.output == "mask" and cfg.finetune.head == "reinit"
    model = build_separation_model(cfg)
    origin = SeparationTask(cfg, "pairs").initialise(model, torch.device("cpu"))
    assert "a new mask head" in origin
    source = load_file(str(resolve_checkpoint(tmp_path / "pre") / WEIGHTS_FILE))
    for name, value in model.state_dict().items():
        if name.startswith(("mask_head.", "nsp_head.")):
            continue
        assert torch.equal(value, source[name]), name
    assert model.mask_head.weight.shape[0] == 2 and source["mask_head.weight"].shape[0] == 4
    with pytest.raises(ValueError, match=r"model.output mask_pair\) is not one mask of the input"):
        load_pretrained(build_separation_model(cfg), str(tmp_path / "pre"), torch.device("cpu"), keep_head=True)
