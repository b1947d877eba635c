"""The U-Net frame transformer: config and presets, shapes for any T, mask range, gradients everywhere,
frequency-only convs, autocast, torch.compile, and the summary."""

import dataclasses
import re
import shutil

import pytest
import torch
from click.testing import CliRunner

from trainer.cli import main as trainer_cli
from trainer.model import ModelConfig, build_model, load_model_preset
from trainer.model.attention import FrameAttention
from trainer.model.summary import summarize
from trainer.model.unet import FrameEncoder


def small_config(**overrides) -> ModelConfig:
    """Transformer blocks at every level (unlike tiny, which starts at 128 bins), in a few kB."""
    fields = dict(
        bins=32,
        num_downsamples=2,
        channels=[4, 6, 8],
        num_encoders=2,
        num_decoders=2,
        num_heads=2,
        min_head_dim=8,
        max_distance=4,
        dropout=0.0,
        nsp_hidden=8,
    )
    return ModelConfig(**{**fields, **overrides})


def test_config_round_trips_and_rejects_unknown_keys():
    cfg = small_config(position="rope")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="hidden_size, layers"):
        ModelConfig.from_dict({"bins": 64, "layers": 3, "hidden_size": 8})


@pytest.mark.parametrize(
    "bad,reason",
    [
        (dict(bins=1000), "not divisible"),
        (dict(channels=[4, 4]), "entries"),
        (dict(position="absolute"), "position"),
        (dict(frame_kernel=4), "odd"),
    ],
)
def test_config_names_what_is_wrong(bad, reason):
    fields = {**small_config().to_dict(), **bad}
    if "bins" in bad:
        fields["num_downsamples"] = 5
        fields["channels"] = [4] * 6
    with pytest.raises(ValueError, match=reason):
        ModelConfig(**fields)


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ValueError, match="base, small, tiny"):
        load_model_preset("huge")


def count_params(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(cfg).parameters())


def test_preset_sizes():
    tiny, small, base = (count_params(load_model_preset(name)) for name in ("tiny", "small", "base"))
    assert tiny <= 3_000_000
    assert tiny < small < base
    assert 180_000_000 <= base <= 220_000_000
    for name in ("tiny", "small", "base"):
        cfg = load_model_preset(name)
        assert cfg.bins == 1024 and cfg.num_downsamples == 5 and cfg.position == "relative"


@pytest.mark.parametrize("frames", [1, 7, 16, 37])
def test_tiny_preset_shapes_for_any_frame_count(frames):
    torch.manual_seed(frames)
    model = build_model(load_model_preset("tiny")).eval()
    x = torch.rand(2, 2, 1024, frames)
    with torch.no_grad():
        mask, nsp_logit = model(x)
    assert mask.shape == x.shape and nsp_logit.shape == (2,)
    assert mask.dtype == torch.float32 and torch.isfinite(nsp_logit).all()
    assert mask.min() >= 0.0 and mask.max() <= 1.0


@pytest.mark.parametrize("position", ["relative", "rope"])
@pytest.mark.parametrize("frames", [5, 21])
def test_every_level_shapes_and_mask_range(position, frames):
    torch.manual_seed(0)
    model = build_model(small_config(position=position)).eval()
    x = torch.rand(3, 2, 32, frames) * 10
    with torch.no_grad():
        mask, nsp_logit = model(x)
    assert mask.shape == x.shape and nsp_logit.shape == (3,)
    assert mask.min() >= 0.0 and mask.max() <= 1.0


@pytest.mark.parametrize("position", ["relative", "rope"])
def test_gradient_reaches_every_parameter(position):
    torch.manual_seed(0)
    model = build_model(small_config(position=position)).train()
    x = torch.rand(2, 2, 32, 12)
    mask, nsp_logit = model(x)
    ((mask * x - x.flip(-1)).abs().mean() + nsp_logit.square().mean()).backward()
    # A memory bottleneck's bias shifts every memory token by a constant, which the decoder block's
    # memory LayerNorm removes: its gradient is zero up to rounding (exactly zero on some CPUs).
    missing = [
        name
        for name, p in model.named_parameters()
        if (p.grad is None or not p.grad.abs().sum() > 0) and not re.search(r"memory_bottlenecks\.\d+\.bias$", name)
    ]
    assert not missing, f"no gradient reaches: {missing}"


def test_every_attention_has_its_own_q_k_v_convs():
    model = build_model(small_config())
    attentions = [m for m in model.modules() if isinstance(m, FrameAttention)]
    # per level: 2 encoders x 1 + 2 decoders x 4 attentions (decoders at the 2 deeper levels only)
    assert len(attentions) == 3 * 2 + 2 * 2 * 4
    weights = [conv.conv.weight for a in attentions for conv in (a.q_conv, a.k_conv, a.v_conv)]
    assert len({w.data_ptr() for w in weights}) == len(weights)


def test_conv_path_never_mixes_frames():
    """Without transformer blocks the U-Net is Nx1 convs only: frame t of the mask sees frame t alone."""
    torch.manual_seed(0)
    model = build_model(small_config(first_transformer_level=3)).eval()
    x = torch.rand(1, 2, 32, 9)
    moved = x.clone()
    moved[..., 4] += 1.0
    with torch.no_grad():
        changed = (model(moved)[0] - model(x)[0]).abs().sum(dim=(0, 1, 2)) > 0
    assert changed.tolist() == [t == 4 for t in range(9)]


def test_frame_encoder_halves_bins_only():
    encoder = FrameEncoder(2, 4, kernel=5, downsample=True)
    assert encoder(torch.rand(9, 2, 32)).shape == (9, 4, 16)


def test_samples_do_not_interact_in_eval():
    torch.manual_seed(0)
    model = build_model(small_config()).eval()
    x = torch.rand(3, 2, 32, 10)
    with torch.no_grad():
        together, _ = model(x)
        alone, _ = model(x[1:2])
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-5)


def test_wrong_input_shape_is_named():
    model = build_model(small_config())
    with pytest.raises(ValueError, match=r"expected input \[B, 2, 32, T\]"):
        model(torch.rand(1, 2, 64, 8))


def test_runs_under_bf16_autocast():
    torch.manual_seed(0)
    model = build_model(small_config()).train()
    x = torch.rand(2, 2, 32, 11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mask, nsp_logit = model(x)
        loss = (mask * x - x).abs().mean() + nsp_logit.float().square().mean()
    loss.backward()
    assert mask.shape == x.shape and torch.isfinite(mask).all() and mask.min() >= 0 and mask.max() <= 1
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def compile_unavailable_reason() -> str | None:
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    from torch import _dynamo

    if not _dynamo.is_dynamo_supported():
        return "TorchDynamo does not support this Python"
    return None


COMPILE_UNAVAILABLE = compile_unavailable_reason()


@pytest.mark.skipif(COMPILE_UNAVAILABLE is not None, reason=str(COMPILE_UNAVAILABLE))
def test_whole_model_compiles_as_one_graph():
    """fullgraph=True: no graph breaks anywhere (aot_eager keeps it to seconds; inductor is the slow test)."""
    torch.manual_seed(0)
    model = build_model(small_config(num_downsamples=1, channels=[4, 4], num_encoders=1, num_decoders=1))
    x = torch.rand(2, 2, 32, 9)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    mask, nsp_logit = compiled(x)
    (mask.mean() + nsp_logit.mean()).backward()
    with torch.no_grad():
        eager_mask, eager_logit = model(x)
    torch.testing.assert_close(mask, eager_mask, atol=1e-5, rtol=1e-5)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.slow
@pytest.mark.skipif(COMPILE_UNAVAILABLE is not None, reason=str(COMPILE_UNAVAILABLE))
def test_inductor_compiled_model_matches_eager():
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("inductor needs a C++ compiler on CPU and none is on PATH")
    torch.manual_seed(0)
    model = build_model(small_config(num_downsamples=1, channels=[4, 4], num_encoders=1, num_decoders=1))
    x = torch.rand(2, 2, 32, 9)
    mask, nsp_logit = torch.compile(model)(x)
    (mask.mean() + nsp_logit.mean()).backward()
    with torch.no_grad():
        eager_mask, eager_logit = model(x)
    torch.testing.assert_close(mask, eager_mask, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(nsp_logit, eager_logit, atol=1e-4, rtol=1e-4)


def test_summary_counts_every_parameter_and_measures_flops():
    cfg = small_config()
    summary = summarize(cfg, frames=12)
    assert summary.params == count_params(cfg) == sum(part.params for part in summary.parts)
    assert summary.forward_flops > 0 and summary.saved_activation_bytes > 0
    assert sum(part.forward_flops for part in summary.parts) <= summary.forward_flops
    longer = summarize(cfg, frames=24)
    assert longer.forward_flops > 1.9 * summary.forward_flops


def test_summary_command_prints_the_table():
    result = CliRunner().invoke(trainer_cli, ["summary", "--preset", "tiny", "--frames", "37"])
    assert result.exit_code == 0, result.output
    assert "encoder_stacks.3 (level 3, 128 bins)" in result.output and "FLOPs per sample" in result.output
    rope = CliRunner().invoke(trainer_cli, ["summary", "--preset", "tiny", "--frames", "8", "--position", "rope"])
    assert rope.exit_code == 0 and "position rope" in rope.output
    missing = CliRunner().invoke(trainer_cli, ["summary", "--preset", "huge"])
    assert missing.exit_code != 0 and "unknown model preset 'huge'" in missing.output


def test_dataclass_replace_revalidates():
    with pytest.raises(ValueError, match="position"):
        dataclasses.replace(small_config(), position="alibi")


def test_checkpoint_blocks_gives_the_same_gradients_with_less_saved():
    torch.manual_seed(0)
    plain = build_model(small_config())
    recomputing = build_model(small_config(checkpoint_blocks=True))
    recomputing.load_state_dict(plain.state_dict())
    x = torch.rand(2, 2, 32, 10)
    for model in (plain, recomputing):
        mask, nsp_logit = model(x)
        ((mask * x - x).abs().mean() + nsp_logit.square().mean()).backward()
    for (name, a), b in zip(plain.named_parameters(), recomputing.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)
    summary = summarize(small_config(), frames=16)
    assert summary.recomputed_activation_bytes < summary.saved_activation_bytes
