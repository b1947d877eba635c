"""The mask head starts at the configured prior (ModelConfig.mask_prior), not at sigmoid(0) = 0.5."""

import math

import pytest
import torch

from trainer.config import load_config
from trainer.model import ModelConfig, build_model


def small_config(**overrides) -> ModelConfig:
    fields = dict(
        bins=32,
        num_downsamples=2,
        channels=[4, 6, 8],
        num_encoders=1,
        num_decoders=1,
        num_heads=2,
        min_head_dim=8,
        max_distance=4,
        dropout=0.0,
        nsp_hidden=8,
    )
    return ModelConfig(**{**fields, **overrides})


def initial_mask(cfg: ModelConfig, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    generator = torch.Generator().manual_seed(seed)
    # Spectra normalised to the max: mostly small values, a few near 1, some tokens set to 1.0.
    x = torch.rand(2, cfg.audio_channels, cfg.bins, 24, generator=generator) ** 8
    x[..., 8:12] = 1.0
    with torch.no_grad():
        mask, _ = model(x)
    return mask


@pytest.mark.parametrize("prior", [1e-3, 0.01, 0.2])
def test_initial_mask_is_centred_on_the_prior_in_logit_space(prior):
    mask = initial_mask(small_config(mask_prior=prior))
    logits = torch.logit(mask.double())
    assert logits.median().item() == pytest.approx(math.log(prior / (1 - prior)), abs=0.5)
    # The weights keep their default init: the mask depends on the input from the first step on.
    assert 0.01 < logits.std().item() < 1.5
    assert mask.min() > 0 and mask.max() < 1


def test_mask_head_bias_is_the_prior_logit():
    model = build_model(small_config(mask_prior=0.003))
    assert torch.allclose(model.mask_head.bias, torch.full_like(model.mask_head.bias, math.log(0.003 / 0.997)))


@pytest.mark.parametrize("prior", [0.0, 1.0, -0.1, 2.0])
def test_prior_outside_the_open_unit_interval_is_refused(prior):
    with pytest.raises(ValueError, match="mask_prior must be in \\(0, 1\\)"):
        small_config(mask_prior=prior)


def test_every_preset_output_starts_where_its_head_means_no_change():
    # a plain mask multiplies the input, so it starts near the magnitude (the original objective) or,
    # for the mixture pretext of the presets, near passing the mixture on (the fine-tune's prior); a
    # gate-and-fill output starts its fill there instead; a gate-and-refine output starts at factor 1
    # on the interpolation (odds of 0.5)
    for name in ("original", "recipe", "mixture", "tiny", "small", "base"):
        cfg = load_config(name)
        model = cfg.model
        if model.output == "mask" and cfg.corrupt.mix_prob > 0:
            assert model.mask_prior == 0.9
        elif model.output == "mask":
            assert model.mask_prior <= 0.01
        elif model.output == "mask_fill":
            assert model.fill_prior <= 0.01
        else:
            assert model.fill_prior == 0.5


def test_prior_is_a_config_override_even_as_a_bare_exponent():
    assert load_config("tiny", overrides=["model.mask_prior=0.05"]).model.mask_prior == pytest.approx(0.05)
    assert load_config("tiny", overrides=["model.mask_prior=1e-4"]).model.mask_prior == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="model.mask_prior must be like .*, got 'low'"):
        load_config("tiny", overrides=["model.mask_prior=low"])
