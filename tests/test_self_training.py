"""What turns unlabelled music into a better separator, at test size: the fine-tune protocol (head kept
or new, frozen trunk, trunk learning rate), the labelled-song filter and the second training source,
`trainer pseudo-label` (pair shards a rerun does not redo, refused for another teacher), and the
budget/seed bookkeeping of `trainer label-curve`. Test-size model (support.SMALL), one thread."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from pipeline import format as fmt
from trainer.ablations.curve import CurveSettings, labelled_ids, run_curve
from trainer.checkpoint import WEIGHTS_FILE, read_checkpoint_config, read_meta, resolve_checkpoint
from trainer.cli import main as trainer_cli
from trainer.data import train_loader
from trainer.data.loader import track_of
from trainer.logs import LOCK_FILE

from support import SMALL, make_pair_shards, run_cli

STFT = fmt.STFTParams(n_fft=128, hop=64)
# another process holding a run's lock, as a second `label-curve` training that row would
HOLD_LOCK = (
    "import sys, time\nfrom pipeline.durable import exclusive\n"
    "with exclusive(sys.argv[1], 'busy', per_process=True):\n    print('held', flush=True)\n    time.sleep(600)\n"
)
COMMON = SMALL + ["run.ckpt_every=2", "data.crop_frames=64", "data.batch_size=2", "data.val_batch_size=2"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """4 labelled songs (2 train, 2 val) as pair shards, their mixtures as an unlabelled pool of
    pretraining shards with the same STFT, and a 2-step mixture-pretext pretrain on the pool."""
    base = tmp_path_factory.mktemp("self-training")
    make_pair_shards(base / "pairs", STFT, songs=4, seconds=2.0)
    pool = base / "pool-audio"
    for song in sorted((base / "pairs" / "songs").iterdir()):
        (pool / song.name).mkdir(parents=True)
        (pool / song.name / "mix.wav").symlink_to(song / "mixture.wav")
    for args in (
        ["ingest", str(pool), "--manifests", str(base / "pool-m"), "--val-fraction", "0.25"],
        ["shard", "--manifests", str(base / "pool-m"), "--out", str(base / "pool")]
        + ["--n-fft", "128", "--hop", "64", "--clip-frames", "64", "--encoding", "float16", "--quiet"],
    ):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
    result = CliRunner().invoke(
        trainer_cli,
        ["pretrain", "--shards", str(base / "pool"), "--preset", "mixture", "--run", str(base / "pre-mix")]
        + ["--steps", "2", "--device", "cpu"]
        + [f"--set={o}" for o in COMMON],
    )
    assert result.exit_code == 0, result.output
    return base


def _finetune(data, run, *extra):
    args = ["finetune", "--shards", str(data / "pairs" / "shards"), "--run", str(run), "--device", "cpu"]
    result = CliRunner().invoke(trainer_cli, args + [f"--set={o}" for o in COMMON] + list(extra))
    assert result.exit_code == 0, result.output
    return read_checkpoint_config(resolve_checkpoint(run))


def _weights(run):
    from safetensors.torch import load_file

    return load_file(str(resolve_checkpoint(run) / "model.safetensors"))


def test_the_mixture_pretext_reports_itself_against_passing_the_mixture_on(data):
    metrics = [json.loads(line) for line in (data / "pre-mix" / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in metrics if m["split"] == "train"]
    assert train and all("mix_l1" in m and "mix_pass_through_l1" in m for m in train)
    val = [m for m in metrics if m["split"] == "val"]
    assert val and 0.5 < val[-1]["pretext_ratio"] < 1.5  # the model / doing-nothing ratio on the val crops
    assert val[-1]["loss"] == val[-1]["pretext_model_l1"]  # the best checkpoint is the best at the pretext
    result = CliRunner().invoke(
        trainer_cli,
        ["evaluate", "--checkpoint", str(data / "pre-mix"), "--shards", str(data / "pool"), "--device", "cpu"],
    )
    assert result.exit_code == 0 and "mixture pretext: L1 to the primary" in result.output, result.output
    assert "masked-token L1" not in result.output  # never trained on masked tokens: only its own score


def test_a_mixture_pretext_keeps_its_mask_head_and_a_masked_token_pretext_gets_a_new_one(data, tmp_path):
    kept = _finetune(data, tmp_path / "from-mix", "--init", str(data / "pre-mix"), "--steps", "1")
    assert kept["finetune"]["head"] == "keep"
    pretrained, tuned = _weights(data / "pre-mix"), _weights(tmp_path / "from-mix")
    # one step moved the head a little from the pretrained one, not back to the prior's constant bias
    head = [k for k in tuned if k.startswith("mask_head.") and k.endswith("bias")][0]
    assert torch.allclose(tuned[head], pretrained[head], atol=0.05)
    reinit = _finetune(
        data, tmp_path / "new-head", "--init", str(data / "pre-mix"), "--steps", "1", "--set=finetune.head=reinit"
    )
    assert reinit["finetune"]["head"] == "reinit"
    assert _finetune(data, tmp_path / "scratch", "--steps", "1")["finetune"]["head"] == "reinit"


def test_a_frozen_trunk_stays_put_while_the_head_learns_and_the_trunk_factor_sets_its_learning_rate(data, tmp_path):
    run = tmp_path / "frozen"
    _finetune(data, run, "--init", str(data / "pre-mix"), "--steps", "2", "--set=finetune.freeze_steps=2")
    before, after = _weights(data / "pre-mix"), _weights(run)
    trunk = [k for k in after if not k.startswith(("mask_head.", "nsp_head."))]
    assert all(torch.equal(before[k], after[k]) for k in trunk)
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith("mask_head."))

    from trainer.config import OptimConfig, load_config
    from trainer.loop import make_optimizer
    from trainer.model import build_model

    model = build_model(load_config("tiny", overrides=SMALL).model)
    groups = make_optimizer(model, OptimConfig(lr=1e-3), torch.device("cpu"), ("mask_head.",), 0.1).param_groups
    head_ids = {id(p) for n, p in model.named_parameters() if n.startswith("mask_head.")}
    for group in groups:
        is_head = {id(p) in head_ids for p in group["params"]}
        assert len(is_head) <= 1 and group["lr"] == pytest.approx(1e-3 if is_head == {True} else 1e-4)
    assert len(make_optimizer(model, OptimConfig(), torch.device("cpu")).param_groups) == 2  # as before


def test_the_loader_keeps_only_the_named_tracks_and_mixes_in_the_extra_source_by_its_share(data):
    pairs = str(data / "pairs" / "shards")
    first = labelled_ids(data / "pairs" / "m", 1)
    loader = train_loader(pairs, batch_size=2, crop_frames=32, num_workers=0, seed=0, tracks=first)
    keys = [key for _, batch in zip(range(6), loader) for key in batch["key"]]
    assert {track_of(k) for k in keys} == set(first)

    pseudo = data / "pseudo-share"
    result = CliRunner().invoke(
        trainer_cli, ["pseudo-label", "--checkpoint", str(_teacher(data)), "--shards", str(data / "pool")]
        + ["--out", str(pseudo), "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    pool_tracks = {r.id for r in fmt.read_tracks(data / "pool-m")}
    loader = train_loader(
        pairs, batch_size=4, crop_frames=32, num_workers=0, seed=0, tracks=first, extra=str(pseudo), extra_share=0.5
    )
    keys = [key for _, batch in zip(range(25), loader) for key in batch["key"]]
    share = sum(track_of(k) in pool_tracks for k in keys) / len(keys)
    assert 0.3 <= share <= 0.7 and {track_of(k) for k in keys} <= set(first) | pool_tracks


def _teacher(data):
    teacher = data / "teacher"
    if not teacher.exists():
        _finetune(data, teacher, "--steps", "2")
    return teacher


def test_pseudo_labels_are_verified_pair_shards_a_rerun_keeps_and_another_teacher_is_refused(data, tmp_path):
    out = tmp_path / "pseudo"
    args = ["pseudo-label", "--checkpoint", str(_teacher(data)), "--shards", str(data / "pool"), "--out", str(out)]
    args += ["--encoding", "float16"]  # exact values, for the mask check below (the default is log8-zstd)
    result = CliRunner().invoke(trainer_cli, args + ["--device", "cpu"])
    assert result.exit_code == 0, result.output
    index = fmt.read_index(out / "train.json")
    source = fmt.read_index(data / "pool" / "train.json")
    assert index.sample_kind == fmt.SAMPLE_KIND_PAIRS and index.totals["samples"] == source.totals["samples"]
    verify = run_cli("verify", "--out", str(out))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    import webdataset as wds

    for sample in wds.WebDataset(str(out / index.shardlist[0].url), shardshuffle=False):
        (mix, target), meta = fmt.read_sample(sample)
        assert meta.target_kind == fmt.TARGET_PSEUDO
        assert (target.read() <= mix.read()).all()  # a mask of the mixture never adds energy
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    result = CliRunner().invoke(trainer_cli, args + ["--device", "cpu"])
    assert result.exit_code == 0 and stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    other = tmp_path / "other-teacher"
    _finetune(data, other, "--steps", "2", "--set=run.seed=5")
    result = CliRunner().invoke(trainer_cli, args + ["--device", "cpu", "--encoding", "log8"])
    assert result.exit_code != 0 and "not --encoding log8" in result.output
    args[2] = str(other)
    result = CliRunner().invoke(trainer_cli, args + ["--device", "cpu"])
    assert result.exit_code != 0 and "another teacher" in result.output
    # the default encoding is the pipeline's (log8-zstd), and a stale half-written shard is cleared
    log8 = tmp_path / "log8"
    (log8).mkdir()
    (log8 / ".train-000000.tar.tmp-999999").write_bytes(b"half")
    result = CliRunner().invoke(trainer_cli, args[:5] + ["--out", str(log8), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert fmt.read_index(log8 / "train.json").encoding == fmt.DEFAULT_ENCODING and not list(log8.glob(".*.tmp-*"))
    assert run_cli("verify", "--out", str(log8)).returncode == 0


def _curve(data, **changes) -> CurveSettings:
    """The test curve: the labelled pairs, one budget of 1 song, one seed, 1-step fine-tunes, 1 val song."""
    base = dict(pairs=str(data / "pairs" / "shards"), manifests=str(data / "pairs" / "m"), budgets=(1,), seeds=1)
    return CurveSettings(**{**base, "steps": 1, "tracks": 1, **changes})


def test_the_curve_trains_every_budget_seed_and_route_once_and_a_rerun_only_reads(data, tmp_path):
    settings = _curve(
        data,
        budgets=(1, 2),
        seeds=2,
        steps=2,
        preset="tiny",
        inits=(("mixture pretext", str(data / "pre-mix")),),
        pool=str(data / "pool"),
    )
    out = tmp_path / "curve"
    table = run_curve(settings, out, COMMON, device="cpu")
    results = json.loads((out / "curve.json").read_text())
    for k in (1, 2):
        ids = labelled_ids(settings.manifests, k)
        for seed in (0, 1):
            cell = out / f"k{k:03d}" / f"seed{seed}"
            for route, slug in (("from scratch", "from-scratch"), ("mixture pretext", "mixture-pretext")):
                saved = read_checkpoint_config(resolve_checkpoint(cell / slug))
                assert saved["run"]["seed"] == seed and saved["data"]["tracks"] == ids and saved["run"]["steps"] == 2
                assert len(results[f"{route}|{k}|{seed}"]["mdx"]) == 1
            student = read_checkpoint_config(resolve_checkpoint(cell / "self-training"))
            assert student["data"]["extra_shards"] == str(cell / "pseudo") and not student["run"]["init"]
            assert (cell / "pseudo" / "train.json").is_file()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert {"from scratch", "mixture pretext", "self-training", "mixture (floor)"} <= set(rows)
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    # a finished run is only read: the rerun works while another process holds a run's lock
    lock = out / "k001" / "seed0" / "from-scratch" / LOCK_FILE
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run_curve(settings, out, COMMON, device="cpu") == table
    finally:
        holder.kill()
        holder.wait()
    more = dataclasses.replace(settings, long_scratch=True)  # a route nobody trained
    report = run_curve(more, out, COMMON, device="cpu", report_only=True)
    assert "| from scratch, 2x steps | — | — |" in report and not list(out.rglob("from-scratch-2x-steps"))
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}


def test_curve_options_are_checked_before_anything_trains(data, tmp_path):
    base = ["label-curve", "--pairs", str(data / "pairs" / "shards"), "--pairs-manifests", str(data / "pairs" / "m")]
    base += ["--finetune-steps", "1", "--out", str(tmp_path / "c"), "--device", "cpu"]
    for extra, message in (
        (["--budgets", "1,9"], "a budget of 9 labelled songs"),
        (["--budgets", "0"], "--budgets"),
        (["--init", "nameless"], "NAME=CHECKPOINT"),
        (["--seeds", "2", "--seed", "2"], "--seed 2 is outside"),
        (["--rounds", "0"], "--rounds"),
        (["--rounds", "2"], "--rounds > 1 needs --self-train-mode pretrain"),
        (["--student-remix", "1.5"], "--student-remix"),
        (["--teacher-steps", "5"], "--teacher-steps 5: needs --self-train"),
    ):
        result = CliRunner().invoke(trainer_cli, base + extra)
        assert result.exit_code != 0 and message in result.output, result.output
    assert not (tmp_path / "c" / "k001").exists()


def test_the_pseudo_label_pretrain_route_and_the_long_scratch_control(data, tmp_path):
    settings = _curve(data, steps=2, pool=str(data / "pool"), modes=("pretrain",), long_scratch=True)
    out = tmp_path / "curve"
    table = run_curve(settings, out, COMMON, device="cpu")
    cell = out / "k001" / "seed0"
    stage = read_checkpoint_config(resolve_checkpoint(cell / "pseudo-student"))
    assert stage["data"]["tracks"] == [] and stage["run"]["steps"] == 2  # the pool alone
    tuned = read_checkpoint_config(resolve_checkpoint(cell / "pseudo-labels-then-fine-tune"))
    assert tuned["run"]["init"] == str(resolve_checkpoint(cell / "pseudo-student"))
    assert tuned["finetune"]["head"] == "keep" and tuned["data"]["tracks"] == labelled_ids(settings.manifests, 1)
    assert read_checkpoint_config(resolve_checkpoint(cell / "from-scratch-2x-steps"))["run"]["steps"] == 4
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")]
    assert rows[:3] == ["route", "from scratch", "from scratch, 2x steps"]
    assert "pseudo-labels, then fine-tune" in rows and "self-training" not in rows

    # a longer student on the same pseudo-labels, and the scratch control with the same total steps
    scratch_stamp = resolve_checkpoint(cell / "from-scratch").stat().st_mtime_ns
    longer = dataclasses.replace(settings, student_steps=3)
    table = run_curve(longer, out, COMMON, device="cpu")
    assert read_checkpoint_config(resolve_checkpoint(cell / "pseudo-student-3"))["run"]["steps"] == 3
    tuned = read_checkpoint_config(resolve_checkpoint(cell / "pseudo-labels-3-steps-then-fine-tune"))
    assert tuned["run"]["init"] == str(resolve_checkpoint(cell / "pseudo-student-3")) and tuned["run"]["steps"] == 2
    assert read_checkpoint_config(resolve_checkpoint(cell / "from-scratch-5-steps"))["run"]["steps"] == 5
    assert resolve_checkpoint(cell / "from-scratch").stat().st_mtime_ns == scratch_stamp  # the teacher is reused
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")]
    assert rows[:3] == ["route", "from scratch", "from scratch, 5 steps"]
    assert "pseudo-labels (3 steps), then fine-tune" in rows


def test_a_second_round_learns_from_the_first_rounds_student_and_students_can_be_remixed(data, tmp_path):
    settings = _curve(data, pool=str(data / "pool"), modes=("joint", "pretrain"), rounds=2, student_remix=0.5)
    table = run_curve(settings, tmp_path / "c", COMMON, device="cpu")
    cell = tmp_path / "c" / "k001" / "seed0"
    config = lambda folder: read_checkpoint_config(resolve_checkpoint(cell / folder))  # noqa: E731
    first, second = "pseudo-labels-remixed-x0.5-then-fine-tune", "pseudo-labels-remixed-x0.5-then-fine-tune-round-2"
    # round 1 learns the scratch teacher's labels, round 2 the labels of round 1's fine-tuned student
    state = lambda folder: json.loads((cell / folder / ".state" / "pseudo-label.json").read_text())  # noqa: E731
    assert state("pseudo")["teacher"] != state("pseudo-remix0.5-round2")["teacher"]
    assert config("pseudo-student-remix0.5-round2")["run"]["init"] == ""
    assert config(second)["run"]["init"] == str(resolve_checkpoint(cell / "pseudo-student-remix0.5-round2"))
    assert config(first)["run"]["init"] == str(resolve_checkpoint(cell / "pseudo-student-remix0.5"))
    # the students' training on pseudo-labels is remixed; the fine-tunes on the labelled songs are not
    for student in ("pseudo-student-remix0.5", "pseudo-student-remix0.5-round2", "self-training-remixed-x0.5"):
        assert config(student)["data"]["remix"] == 0.5
    for tuned in ("from-scratch", first, second):
        assert config(tuned)["data"]["remix"] == 0.0
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")]
    for row in ("self-training, remixed x0.5", "pseudo-labels remixed x0.5, then fine-tune"):
        assert row in rows
    assert "pseudo-labels remixed x0.5, then fine-tune, round 2" in rows
    for wrong, message in (
        ({"modes": ("joint",)}, "--rounds > 1 needs --self-train-mode pretrain"),
        ({"rounds": 0}, "--rounds must be >= 1"),
        ({"student_remix": 2.0}, "--student-remix must be in"),
    ):
        with pytest.raises(ValueError, match=message):
            run_curve(dataclasses.replace(settings, **wrong), tmp_path / "bad", COMMON, device="cpu")
    assert not (tmp_path / "bad" / "k001").exists()


def test_an_init_row_gets_its_own_protocol_overrides_and_steps(data, tmp_path):
    pretrain = str(data / "pre-mix")
    settings = _curve(
        data,
        inits=(("plain", pretrain), ("slow trunk", pretrain), ("long", pretrain)),
        init_overrides=(("slow trunk", "finetune.trunk_lr_factor=0.1"), ("long", "run.steps = 3")),
    )
    run_curve(settings, tmp_path / "c", COMMON, device="cpu")
    cell = tmp_path / "c" / "k001" / "seed0"
    config = lambda slug: read_checkpoint_config(resolve_checkpoint(cell / slug))  # noqa: E731
    factor = lambda slug: config(slug)["finetune"]["trunk_lr_factor"]  # noqa: E731
    assert factor("plain") == 1.0 and factor("slow-trunk") == 0.1 and factor("from-scratch") == 1.0
    # a row's own run.steps is its budget (a step-matched control of one pretrain); the others keep the curve's
    steps = {slug: config(slug)["run"]["steps"] for slug in ("long", "plain", "from-scratch")}
    assert steps == {"long": 3, "plain": 1, "from-scratch": 1}
    assert int(read_meta(resolve_checkpoint(cell / "long"))["step"]) == 3
    for wrong, message in (
        (("nobody", "finetune.head=keep"), "no --init row named 'nobody'"),
        (("long", "run.steps=0"), "--init-set long:run.steps=0: the row's steps must be a whole number >= 1"),
    ):
        bad = dataclasses.replace(settings, init_overrides=(wrong,))
        with pytest.raises(ValueError, match=message):
            run_curve(bad, tmp_path / "c2", COMMON, device="cpu")
    assert not (tmp_path / "c2" / "k001").exists()


def test_self_training_on_top_of_a_pretrain_learns_from_its_fine_tune_and_starts_from_it(data, tmp_path):
    pretrain = str(data / "pre-mix")
    settings = _curve(
        data, inits=(("mix", pretrain),), pool=str(data / "pool"), modes=("joint", "pretrain"), self_train_from="mix"
    )
    table = run_curve(settings, tmp_path / "c", COMMON, device="cpu")
    cell = tmp_path / "c" / "k001" / "seed0"
    config = lambda folder: read_checkpoint_config(resolve_checkpoint(cell / folder))  # noqa: E731
    state = json.loads((cell / "pseudo-from-mix" / ".state" / "pseudo-label.json").read_text())
    teacher = fmt.file_sha256(resolve_checkpoint(cell / "mix") / WEIGHTS_FILE)
    assert state["teacher"] == teacher  # the pretrain's fine-tune labels the pool
    # every student starts from the pretrain: the one on the pool alone and the joint one
    for student in ("pseudo-student-from-mix", "self-training-from-mix"):
        assert config(student)["run"]["init"] == str(resolve_checkpoint(pretrain))
    tuned = config("pseudo-labels-then-fine-tune-from-mix")
    assert tuned["run"]["init"] == str(resolve_checkpoint(cell / "pseudo-student-from-mix"))
    assert not (cell / "pseudo").exists()  # the scratch model taught nothing
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")]
    assert "pseudo-labels, then fine-tune, from mix" in rows and "self-training, from mix" in rows
    for wrong, message in (
        ({"self_train_from": "nobody"}, "--self-train-from nobody: no --init row"),
        ({"pool": None}, "--self-train-from needs --self-train"),
    ):
        with pytest.raises(ValueError, match=message):
            run_curve(dataclasses.replace(settings, **wrong), tmp_path / "bad", COMMON, device="cpu")


def test_a_longer_teacher_is_a_row_of_its_own_and_labels_the_pool_for_students_of_its_own(data, tmp_path):
    pretrain = str(data / "pre-mix")
    settings = _curve(
        data,
        inits=(("mix", pretrain),),
        init_overrides=(("mix", "optim.lr=0.002"),),
        pool=str(data / "pool"),
        modes=("pretrain",),
        self_train_from="mix",
        teacher_steps=3,
    )
    table = run_curve(settings, tmp_path / "c", COMMON, device="cpu")
    cell = tmp_path / "c" / "k001" / "seed0"
    config = lambda folder: read_checkpoint_config(resolve_checkpoint(cell / folder))  # noqa: E731
    teacher = config("mix-3-steps")  # the mix row's fine-tune, its overrides included, trained 3 steps
    assert teacher["run"]["steps"] == 3 and teacher["run"]["init"] == str(resolve_checkpoint(pretrain))
    assert teacher["optim"]["lr"] == 0.002 and config("mix")["run"]["steps"] == 1
    state = json.loads((cell / "pseudo-from-mix-teacher3" / ".state" / "pseudo-label.json").read_text())
    assert state["teacher"] == fmt.file_sha256(resolve_checkpoint(cell / "mix-3-steps") / WEIGHTS_FILE)
    assert config("pseudo-student-from-mix-teacher3")["run"]["init"] == str(resolve_checkpoint(pretrain))
    tuned = config("pseudo-labels-then-fine-tune-from-mix-teacher-3-steps")
    assert tuned["run"]["steps"] == 1  # the student's fine-tune has the curve's budget, not the teacher's
    assert not (cell / "pseudo-from-mix").exists()  # the 1-step mix row taught nothing
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")]
    assert "mix, 3 steps" in rows and "pseudo-labels, then fine-tune, from mix, teacher 3 steps" in rows
    # a scratch teacher of 2 steps is the 2x-steps scratch control: one run, one row (in each of the two tables)
    scratch = dataclasses.replace(settings, self_train_from=None, teacher_steps=2, long_scratch=True)
    table = run_curve(scratch, tmp_path / "c", COMMON, device="cpu")
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")]
    assert rows.count("from scratch, 2x steps") == 2 and "pseudo-labels, then fine-tune, teacher 2 steps" in rows
    assert config("from-scratch-2x-steps")["run"]["steps"] == 2 and not (cell / "from-scratch-2-steps").exists()
    state = json.loads((cell / "pseudo-teacher2" / ".state" / "pseudo-label.json").read_text())
    assert state["teacher"] == fmt.file_sha256(resolve_checkpoint(cell / "from-scratch-2x-steps") / WEIGHTS_FILE)
    with pytest.raises(ValueError, match="--teacher-steps 2: needs --self-train"):
        run_curve(dataclasses.replace(scratch, pool=None), tmp_path / "bad", COMMON, device="cpu")
    # a teacher row named like an --init row would share its folder: refused before anything trains
    clash = dataclasses.replace(settings, inits=(("mix", pretrain), ("mix, 3 steps", pretrain)))
    with pytest.raises(ValueError, match="row names must differ"):
        run_curve(clash, tmp_path / "bad", COMMON, device="cpu")
    assert not (tmp_path / "bad" / "k001").exists()


def test_shrink_and_perturb_blends_the_pretrain_with_the_seeds_fresh_init(data):
    from trainer.separation.finetune import resolve_finetune
    from trainer.separation.task import SeparationTask

    def start(shrink: float, perturb: float) -> tuple[str, dict, dict]:
        overrides = SMALL + [f"finetune.shrink={shrink}", f"finetune.perturb={perturb}"]
        cfg, _ = resolve_finetune(data / "unused-run", "tiny", None, overrides, init=str(data / "pre-mix"))
        task = SeparationTask(cfg, str(data / "pairs" / "shards"))
        torch.manual_seed(7)
        model = task.build_model()
        scratch = {k: v.detach().clone() for k, v in model.named_parameters()}
        origin = task.initialise(model, torch.device("cpu"))
        return origin, {k: v.detach().clone() for k, v in model.named_parameters()}, scratch

    origin, as_is, scratch = start(1.0, 0.0)
    assert "shrunk" not in origin
    pretrained = _weights(data / "pre-mix")
    assert all(torch.equal(as_is[k], pretrained[k]) for k in as_is)  # the mixture pretext's head is kept too
    assert not all(torch.equal(as_is[k], scratch[k]) for k in as_is)
    origin, blank, _ = start(0.0, 1.0)
    assert "shrunk x0 plus x1 a fresh init" in origin
    assert all(torch.equal(blank[k], scratch[k]) for k in blank)  # (0, 1) is the scratch model of the seed
    _, blend, _ = start(0.5, 0.25)
    assert all(torch.allclose(blend[k], 0.5 * pretrained[k] + 0.25 * scratch[k], atol=1e-6) for k in blend)
    with pytest.raises(ValueError, match="finetune.shrink must be"):
        start(1.5, 0.0)
