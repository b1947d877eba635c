import pytest
import yaml

from trainer.config import TrainConfig, load_config, parse_overrides, preset_names, save_config
from trainer.model import load_model_preset


def test_every_training_preset_resolves_and_names_its_model_preset():
    assert {"tiny", "small", "base", "original"} <= set(preset_names())
    for name in ("tiny", "small", "base", "original"):
        cfg = load_config(name)
        architecture = load_model_preset("tiny" if name == "original" else name)
        # the training preset may set the objective's model fields (output, input scale, priors)
        objective = {"output", "mask_prior", "fill_prior", "input_scale", "distance_bias"}
        assert {k: v for k, v in cfg.model.to_dict().items() if k not in objective} == {
            k: v for k, v in architecture.to_dict().items() if k not in objective
        }
        assert cfg.run.steps > 0 and cfg.data.crop_frames >= 2 * cfg.corrupt.token_frames


def test_overrides_parse_yaml_values_including_bare_exponents():
    cfg = load_config(
        "tiny",
        overrides=[
            "model.bins=128",
            "optim.lr=3e-4",
            "run.compile=true",
            "optim.betas=[0.8, 0.9]",
            "corrupt.select_rate=0.5",
            "data.batch_size=2",
        ],
    )
    assert cfg.model.bins == 128 and cfg.model.channels == load_model_preset("tiny").channels
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.run.compile is True and cfg.optim.betas == (0.8, 0.9)
    assert cfg.corrupt.select_rate == 0.5 and cfg.data.batch_size == 2
    assert parse_overrides(["a.b=x", "a.c=2"]) == {"a": {"b": "x", "c": 2}}


@pytest.mark.parametrize(
    "override, message",
    [
        ("run.stepz=5", "unknown key.*stepz"),
        ("model.binz=5", "binz"),
        ("nope.x=1", "unknown section.*nope"),
        ("run.steps=lots", "run.steps must be like"),
        ("run.compile=1", "run.compile must be like"),
        ("optim.decay=step", "optim.decay must be one of"),
        ("runsteps=5", "not of the form section.key=value"),
        ("data.batch_size=0", r"data.batch_size must be an integer in \[1, 65536\], got 0"),
        ("model.num_heads=abc", "model.num_heads must be like"),
        ("run.seed=-1", r"run.seed must be an integer in \[0, "),
        ("run.val_batches=0", r"run.val_batches must be an integer in \[1, "),
        ("model.channels=5", "model.channels must be like"),
        ("model.channels=[8,x,16,24,32,48]", "model.channels must be like"),
        # non-finite values train NaN weights; refused before anything is built
        ("optim.lr=inf", "optim.lr must be a finite number"),
        ("optim.lr=.inf", "optim.lr must be a finite number"),
        ("corrupt.mask_value=nan", "corrupt.mask_value must be a finite number"),
        ("optim.betas=[0.9, .nan]", "optim.betas must be a finite number"),
        ("optim.eps=0", r"optim.eps must be a finite number in \(0"),
        ("run.steps=1e400", "run.steps must be a finite number"),
        ("run.steps=100000000000000000000000", "run.steps must be a finite number"),
        ("model.mask_prior=-.inf", "model.mask_prior must be a finite number"),
        # malformed YAML in a value: one line, not PyYAML's multi-line report
        ("optim.lr=[", "override 'optim.lr=\\[': the value is not valid YAML"),
        ("run.seed={a: [}", "not valid YAML"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ValueError, match=message) as info:
        load_config("tiny", overrides=[override])
    assert "\n" not in str(info.value)


def test_config_file_with_model_preset_plus_fields(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        yaml.safe_dump(
            {"model": {"preset": "tiny", "bins": 256}, "loss": {"all_frames_weight": 0.1}, "run": {"steps": 7}}
        )
    )
    cfg = load_config(config_file=path)
    assert cfg.model.bins == 256 and cfg.model.num_heads == load_model_preset("tiny").num_heads
    assert cfg.loss.all_frames_weight == 0.1 and cfg.run.steps == 7
    assert cfg.optim == TrainConfig().optim  # untouched sections keep defaults

    path.write_text("run: {steps: [\n")
    with pytest.raises(ValueError, match="mine.yaml: unreadable config"):
        load_config(config_file=path)
    with pytest.raises(ValueError, match="unknown training preset 'huge'"):
        load_config("huge")


def test_saved_config_reproduces_the_run_without_presets(tmp_path):
    cfg = load_config("small", overrides=["model.bins=256", "run.seed=3"])
    save_config(cfg, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert isinstance(saved["model"], dict) and "preset" not in saved["model"]
    again = load_config(base=saved)
    assert again == cfg and again.to_dict() == cfg.to_dict()
    # A saved run config plus overrides: how `trainer pretrain --resume --steps N` extends a run.
    longer = load_config(base=saved, overrides=["run.steps=99999"])
    assert longer.run.steps == 99999 and longer.model == cfg.model


def test_optim_eps_reaches_adamw_and_the_default_is_pytorchs():
    import torch

    from trainer.loop import make_optimizer

    model = torch.nn.Linear(3, 2)
    default = make_optimizer(model, load_config("tiny").optim, torch.device("cpu"))
    assert {group["eps"] for group in default.param_groups} == {1e-8}
    small = make_optimizer(model, load_config("tiny", overrides=["optim.eps=1e-12"]).optim, torch.device("cpu"))
    assert {group["eps"] for group in small.param_groups} == {1e-12}


def test_a_preset_pretrains_and_fine_tunes_with_its_own_budgets(tmp_path):
    from trainer.separation.finetune import resolve_finetune

    tiny = load_config("tiny")
    assert tiny.run.steps == 900 and tiny.finetune.steps == 1350  # the CPU recipe's pretrain, then its fine-tune
    fresh = tmp_path / "no-run-yet"
    assert resolve_finetune(fresh, "tiny", None)[0].run.steps == 1350
    assert resolve_finetune(fresh, "tiny", None, ["run.steps=40"])[0].run.steps == 40  # what --steps sets
    assert resolve_finetune(fresh, "tiny", None, ["finetune.steps=70"])[0].run.steps == 70
    # finetune.steps 0 (small, base): the fine-tune shares the pretraining budget, as before
    assert resolve_finetune(fresh, "small", None)[0].run.steps == load_config("small").run.steps
    with pytest.raises(ValueError, match="finetune.steps must be"):
        load_config("tiny", overrides=["finetune.steps=-1"])
