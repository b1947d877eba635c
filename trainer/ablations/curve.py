"""`trainer label-curve`: the label-efficiency curve — what a pretrain or self-training is worth in
separation, as a function of how many labelled songs there are.

For every budget k (the first k train songs of the pairs manifest, in the order `select_pairs` uses
for val) and every seed, the same fine-tune (preset, steps, `--set` values, `run.seed` = the seed,
`data.tracks` = those k songs) runs from scratch and from every named pretraining checkpoint; with
an unlabelled pool, the scratch model is also the teacher of self-training: it pseudo-labels the pool
(`trainer pseudo-label`) and a student with the same budget, from scratch, trains on the k songs
plus the pseudo-labelled pool (`data.extra_shards`). Every model is scored on the same whole val
songs (instrumental SDR, MDX; BSSEval v4 optional), next to the mixture (floor) and the oracle mask.

With `modes` containing "pretrain", a second student learns the pseudo-labelled pool alone (as a
pretrain on the collection; `student_steps`, default the fine-tune's steps) and is then fine-tuned on
the k songs with the same budget; with `long_scratch`, a scratch fine-tune of as many steps as that
route's two stages together is the control for routes that add training. With `rounds` > 1 that route
iterates: round r's fine-tuned student labels the pool again for round r + 1's student. With
`student_remix`, every student trains with `data.remix` (trainer/separation/remix.py), the noise of
a noisy student: the pretrain route's student on its pseudo-labels (its fine-tune on the k songs is
not remixed), the joint student on its whole batches. With `teacher_steps`, the first teacher is a
fine-tune of its own with that many steps (a teacher trained longer than the fine-tunes it is compared
with, as self-training papers train theirs to convergence), scored as a row of its own: the route's
students must beat it, not only the shorter scratch fine-tune, for the pool to have added anything.

Layout: OUT/k{k}/seed{s}/{from-scratch, <name>, pseudo, self-training, ...} and the cell's scores
(curve.json there: per route, the per-song SDRs); all cells merged in OUT/curve.json, the table in
OUT/curve.md and the plot in OUT/curve.png. A rerun after a kill continues: finished fine-tunes are
not trained again, scored ones not scored again (unless their run was trained further since),
pseudo-labelled shards not labelled again. With
`--seed S` a process does one seed's cells only, so two processes can share a machine's cores.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.durable import write_text
from trainer.ablations.downstream import SCRATCH, slug

SELF_TRAINING = "self-training"  # a student on the k songs + the pseudo-labelled pool, from scratch
SELF_TRAINING_MODES = ("joint", "pretrain")
FLOOR_KEY, ORACLE_KEY = "floor", "oracle"
RESULTS_FILE, TABLE_FILE, PLOT_FILE = "curve.json", "curve.md", "curve.png"


@dataclass(frozen=True)
class CurveSettings:
    pairs: str  # pair shards of the labelled songs (`pipeline shard --pairs`)
    manifests: str  # the folder holding their pairs.jsonl
    budgets: tuple[int, ...]  # labelled songs per point of the curve
    seeds: int  # fine-tunes per point and route (run.seed 0 .. seeds - 1)
    steps: int  # fine-tune steps, the same for every model
    preset: str = "tiny"
    inits: tuple[tuple[str, str], ...] = ()  # (row name, pretraining run or checkpoint)
    init_overrides: tuple[tuple[str, str], ...] = ()  # (row name, section.key=value) for that row's fine-tunes
    pool: str | None = None  # unlabelled pretraining shards: self-training when given
    extra_share: float = 0.5  # of the student's crops from the pseudo-labelled pool
    modes: tuple[str, ...] = ("joint",)  # self-training routes: SELF_TRAINING ("joint"), self_pretrain ("pretrain")
    long_scratch: bool = False  # add the scratch control with the pretrain route's total steps
    tracks: int | None = None  # val songs scored (None: all)
    bsseval: bool = False
    student_steps: int | None = None  # the pretrain route's steps on the pseudo-labelled pool (None: steps)
    rounds: int = 1  # pretrain route: round r's teacher is round r - 1's fine-tuned student
    student_remix: float = 0.0  # data.remix of every student's training (noisy student / RemixIT)
    # an --init row: its fine-tune is the first teacher and its pretrain the start of every student,
    # instead of the scratch model and a random init (self-training on top of a pretrain)
    self_train_from: str | None = None
    teacher_steps: int | None = None  # the first teacher's fine-tune steps (None: steps, the row itself)

    @property
    def _from(self) -> str:
        taught = f", teacher {self.teacher_steps} steps" if self.teacher_row else ""
        return (f", from {self.self_train_from}" if self.self_train_from else "") + taught

    @property
    def teacher_row(self) -> str | None:
        """The first teacher as a row of its own when it trains longer (or shorter) than the fine-tunes."""
        if self.teacher_steps is None or self.teacher_steps == self.steps:
            return None
        if self.self_train_from:
            return f"{self.self_train_from}, {self.teacher_steps} steps"
        return self._scratch_of(self.teacher_steps)

    @property
    def _taught(self) -> str:
        return f"-teacher{self.teacher_steps}" if self.teacher_row else ""

    @property
    def pool_steps(self) -> int:
        return self.student_steps or self.steps

    @property
    def self_pretrain(self) -> str:
        """The route that pretrains a student on the pseudo-labelled pool alone, then fine-tunes it."""
        return self.self_pretrain_round(1)

    def self_pretrain_round(self, round_: int) -> str:
        """Round `round_` of that route: its teacher is the previous round's fine-tuned student."""
        steps = "" if self.pool_steps == self.steps else f" ({self.pool_steps} steps)"
        remixed = f" remixed x{self.student_remix:g}" if self.student_remix else ""
        route = f"pseudo-labels{remixed}{steps}, then fine-tune{self._from}"
        return route + (f", round {round_}" if round_ > 1 else "")

    @property
    def self_training(self) -> str:
        """The joint student's route: the k songs and the pseudo-labelled pool in every batch."""
        return SELF_TRAINING + (f", remixed x{self.student_remix:g}" if self.student_remix else "") + self._from

    def pseudo_folder(self, round_: int) -> str:
        """Where round r's pseudo-labels go: round 1's come from the scratch model (or the
        `self_train_from` row's fine-tune), a later round's from the previous round's fine-tuned student."""
        if round_ == 1:
            return "pseudo" + (f"-from-{slug(self.self_train_from)}" if self.self_train_from else "") + self._taught
        return "pseudo" + self.student_folder_round(round_).removeprefix("pseudo-student")

    def student_folder_round(self, round_: int) -> str:
        folder = self.student_folder + (f"-remix{self.student_remix:g}" if self.student_remix else "")
        return folder + (f"-round{round_}" if round_ > 1 else "")

    @property
    def scratch_long(self) -> str:
        """The scratch control for routes that add training steps: as many steps as self_pretrain."""
        return self._scratch_of(self.steps + self.pool_steps)

    def _scratch_of(self, total: int) -> str:
        return "from scratch, 2x steps" if total == 2 * self.steps else f"from scratch, {total} steps"

    @property
    def student_folder(self) -> str:
        folder = "pseudo-student" if self.pool_steps == self.steps else f"pseudo-student-{self.pool_steps}"
        return folder + (f"-from-{slug(self.self_train_from)}" if self.self_train_from else "") + self._taught


def labelled_ids(manifests: str | os.PathLike, k: int) -> list[str]:
    """The pair ids of the first k train songs (by name, then id; duplicates left out)."""
    from trainer.separation.evaluate import select_pairs

    pairs = [p for p in select_pairs(manifests, "train") if not getattr(p, "duplicate_of", None)]
    if len(pairs) < k:
        raise ValueError(f"{manifests}: a budget of {k} labelled songs, but the train split holds {len(pairs)}")
    return [p.id for p in pairs[:k]]


def routes(settings: CurveSettings) -> list[str]:
    names = [SCRATCH] + ([settings.scratch_long] if settings.long_scratch else [])
    names += [name for name, _ in settings.inits]
    shared = settings.long_scratch and settings.teacher_row == settings.scratch_long  # one run, one row
    if settings.pool and settings.teacher_row and not shared:
        names.append(settings.teacher_row)
    if settings.pool:
        self_routes = (settings.self_training, settings.self_pretrain)
        names += [route for mode, route in zip(SELF_TRAINING_MODES, self_routes) if mode in settings.modes]
        if "pretrain" in settings.modes:
            names += [settings.self_pretrain_round(r) for r in range(2, settings.rounds + 1)]
    return names


def check_settings(settings: CurveSettings) -> None:
    """Everything the curve will read, checked before the first fine-tune."""
    from trainer.checkpoint import read_checkpoint_config, resolve_checkpoint
    from trainer.config import TASK_PRETRAIN, load_config
    from trainer.data import resolve_shards
    from trainer.separation.evaluate import select_pairs

    if not settings.budgets or min(settings.budgets) < 1:
        raise ValueError(f"--budgets must be positive song counts, got {list(settings.budgets)}")
    if settings.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {settings.seeds}")
    if settings.student_steps is not None and settings.student_steps < 1:
        raise ValueError(f"--student-steps must be >= 1, got {settings.student_steps}")
    if settings.rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {settings.rounds}")
    if settings.teacher_steps is not None and (settings.teacher_steps < 1 or not settings.pool):
        raise ValueError(f"--teacher-steps {settings.teacher_steps}: needs --self-train and a count >= 1")
    if settings.rounds > 1 and "pretrain" not in settings.modes:
        raise ValueError("--rounds > 1 needs --self-train-mode pretrain (the route whose student teaches the next)")
    if not 0.0 <= settings.student_remix <= 1.0:
        raise ValueError(f"--student-remix must be in [0, 1], got {settings.student_remix}")
    if settings.self_train_from is not None:
        if not settings.pool:
            raise ValueError("--self-train-from needs --self-train (the unlabelled shards the teacher labels)")
        if settings.self_train_from not in dict(settings.inits):
            raise ValueError(f"--self-train-from {settings.self_train_from}: no --init row of that name")
    names = routes(settings)
    rounds = range(1, settings.rounds + 1)
    folders = {settings.pseudo_folder(r) for r in rounds} | {settings.student_folder_round(r) for r in rounds}
    if len({slug(n) for n in names}) != len(names) or any(slug(n) in folders for n in names):
        raise ValueError(f"row names must differ from each other and from {SCRATCH!r}/{SELF_TRAINING!r}: {names}")
    resolve_shards(settings.pairs, "train")
    labelled_ids(settings.manifests, max(settings.budgets))
    select_pairs(settings.manifests, "val", settings.tracks)
    load_config(settings.preset)
    for name, init in settings.inits:
        task = read_checkpoint_config(resolve_checkpoint(init)).get("run", {}).get("task", TASK_PRETRAIN)
        if task != TASK_PRETRAIN:
            raise ValueError(f"--init {name}={init}: not a pretraining checkpoint")
    for row, value in settings.init_overrides:
        if row not in dict(settings.inits):
            raise ValueError(f"--init-set {row}:{value}: no --init row named {row!r}")
        load_config(settings.preset, overrides=[value])  # a bad key or value names itself
        if _row_steps(settings, row) < 1:  # the config allows 0 steps; a fine-tune row does not
            raise ValueError(f"--init-set {row}:{value}: the row's steps must be a whole number >= 1")
    if settings.pool:
        resolve_shards(settings.pool, "train")
    unknown = sorted(set(settings.modes) - set(SELF_TRAINING_MODES))
    if unknown or not settings.modes:
        raise ValueError(f"self-training modes must be some of {SELF_TRAINING_MODES}, got {list(settings.modes)}")


def _load_results(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable curve results ({exc}); remove it to score again") from exc
    if not isinstance(results, dict):
        raise ValueError(f"{path}: not a curve results file; remove it to score again")
    return results


def _key(route: str, k: int, seed: int) -> str:
    return f"{route}|{k}|{seed}"


def collect_results(out: Path, settings: CurveSettings) -> dict:
    """Every scored cell of OUT, merged (cells may come from several processes, one per seed)."""
    results: dict = {}
    for k in settings.budgets:
        for seed in range(settings.seeds):
            results.update(_load_results(out / f"k{k:03d}" / f"seed{seed}" / RESULTS_FILE))
    return results


def run_curve(
    settings: CurveSettings,
    out: str | os.PathLike,
    common=(),
    device: str = "auto",
    only_seed: int | None = None,
    report_only: bool = False,
) -> str:
    """Train and score every (budget, seed, route) — or only seed `only_seed`, so that one process per
    seed can share the work; or nothing with `report_only` — and return the table of every cell
    scored so far (also written to OUT, with the plot)."""
    from trainer.ablations.downstream import Downstream, finetune_row
    from trainer.checkpoint import resolve_checkpoint
    from trainer.separation.evaluate import evaluate_separation
    from trainer.separation.pseudo_label import pseudo_label

    check_settings(settings)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    budget = Downstream(settings.pairs, settings.manifests, settings.steps, settings.tracks, settings.bsseval)
    for k in [] if report_only else settings.budgets:
        ids = labelled_ids(settings.manifests, k)
        for seed in range(settings.seeds) if only_seed is None else [only_seed]:
            cell = out / f"k{k:03d}" / f"seed{seed}"
            results = _load_results(cell / RESULTS_FILE)
            overrides = [*common, f"run.seed={seed}", f"data.tracks={json.dumps(ids)}"]
            runs = {SCRATCH: finetune_row(cell / slug(SCRATCH), settings.preset, None, budget, overrides, device)}
            for name, init in settings.inits:
                path = resolve_checkpoint(init)
                own = _row_overrides(settings, name, overrides)
                steps = dataclasses.replace(budget, steps=_row_steps(settings, name))
                runs[name] = finetune_row(cell / slug(name), settings.preset, path, steps, own, device)
            if settings.long_scratch:
                longer = dataclasses.replace(budget, steps=settings.steps + settings.pool_steps)
                runs[settings.scratch_long] = finetune_row(
                    cell / slug(settings.scratch_long), settings.preset, None, longer, overrides, device
                )
            if settings.pool:
                origin = settings.self_train_from
                start = resolve_checkpoint(dict(settings.inits)[origin]) if origin else None  # of every student
                row = settings.teacher_row
                if row and row not in runs:  # the origin row's fine-tune, trained longer (else: the long scratch)
                    own = _row_overrides(settings, origin, overrides)
                    longer = dataclasses.replace(budget, steps=settings.teacher_steps)
                    runs[row] = finetune_row(cell / slug(row), settings.preset, start, longer, own, device)
                teacher = runs[row or origin or SCRATCH]
                pseudo = cell / settings.pseudo_folder(1)
                pseudo_label(teacher, settings.pool, pseudo, device=device)
                noise = [f"data.remix={settings.student_remix}"] if settings.student_remix else []
                if "joint" in settings.modes:
                    student = [
                        *overrides,
                        *noise,
                        f"data.extra_shards={pseudo}",
                        f"data.extra_share={settings.extra_share}",
                    ]
                    runs[settings.self_training] = finetune_row(
                        cell / slug(settings.self_training), settings.preset, start, budget, student, device
                    )
                for round_ in range(1, settings.rounds + 1) if "pretrain" in settings.modes else []:
                    # the student learns the pool alone (remixed if asked), then the k songs as they are
                    if round_ > 1:
                        pseudo = cell / settings.pseudo_folder(round_)
                        pseudo_label(teacher, settings.pool, pseudo, device=device)
                    on_pool = dataclasses.replace(budget, pairs=str(pseudo), steps=settings.pool_steps)
                    stage = [*common, *noise, f"run.seed={seed}"]
                    first = finetune_row(
                        cell / settings.student_folder_round(round_), settings.preset, start, on_pool, stage, device
                    )
                    route = settings.self_pretrain_round(round_)
                    runs[route] = finetune_row(
                        cell / slug(route), settings.preset, resolve_checkpoint(first), budget, overrides, device
                    )
                    teacher = runs[route]
            scored = {r: str(resolve_checkpoint(runs[r])) for r in runs}  # a run trained further is scored again
            todo = [r for r in runs if results.get(_key(r, k, seed), {}).get("checkpoint") != scored[r]]
            if todo:
                scores, _ = evaluate_separation(
                    [str(runs[r]) for r in todo],
                    settings.manifests,
                    "val",
                    settings.tracks,
                    settings.bsseval,
                    device,
                    labels=todo,
                    progress=False,
                )
                for route in todo:
                    results[_key(route, k, seed)] = {**_per_song(scores[route]), "checkpoint": scored[route]}
                floor, oracle = list(scores.values())[-2:]
                results.setdefault(FLOOR_KEY, _per_song(floor))
                results.setdefault(ORACLE_KEY, _per_song(oracle))
                write_text(cell / RESULTS_FILE, json.dumps(results, indent=1) + "\n")
            print(f"label-curve: k={k} seed={seed}: " + _cell_summary(results, runs, k, seed), flush=True)
    results = collect_results(out, settings)
    write_text(out / RESULTS_FILE, json.dumps(results, indent=1) + "\n")
    table = format_curve(results, settings)
    write_text(out / TABLE_FILE, table + "\n")
    plot_curve(results, settings, out / PLOT_FILE)
    return table


def _row_overrides(settings: CurveSettings, name: str | None, common: list[str]) -> list[str]:
    """The fine-tune overrides of the --init row `name`: every row's, then its own --init-set values."""
    return [*common, *(value for row, value in settings.init_overrides if row == name)]


def _row_steps(settings: CurveSettings, name: str) -> int:
    """The --init row's fine-tune steps: its own `--init-set NAME:run.steps=N` (a longer fine-tune of one
    pretrain, e.g. the step-matched control of a route that trains more), else `--finetune-steps`."""
    from trainer.config import parse_overrides

    own = parse_overrides([value for row, value in settings.init_overrides if row == name])
    return own.get("run", {}).get("steps", settings.steps)


def _per_song(scores) -> dict:
    return {"mdx": list(scores.instrumental_mdx), "bss": list(scores.instrumental_bss)}


def _median(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(finite)) if finite else math.nan


def _cell_summary(results: dict, runs: dict, k: int, seed: int) -> str:
    return ", ".join(f"{r} {_median(results[_key(r, k, seed)]['mdx']):.2f} dB" for r in runs)


def point(results: dict, route: str, k: int, seeds: int) -> list[float]:
    """Median instrumental MDX SDR over the val songs, one per seed that has been scored."""
    return [_median(results[_key(route, k, s)]["mdx"]) for s in range(seeds) if _key(route, k, s) in results]


def format_curve(results: dict, settings: CurveSettings) -> str:
    budgets, names = settings.budgets, routes(settings)
    head = "| route | " + " | ".join(f"k = {k}" for k in budgets) + " |"
    rule = "|---|" + "---|" * len(budgets)
    lines = [
        f"Label-efficiency curve: instrumental SDR (MDX, dB), median over the val songs of {settings.manifests}; "
        f"per cell the mean over seeds and each seed's value; {settings.steps} fine-tune steps of the "
        f"`{settings.preset}` preset for every model but the rows that name their steps; k = the first k "
        f"train songs of {settings.pairs}.",
        "",
        head,
        rule,
    ]
    for name in names:
        cells = []
        for k in budgets:
            values = point(results, name, k, settings.seeds)
            cells.append(f"{np.mean(values):.2f} ({' / '.join(f'{v:.2f}' for v in values)})" if values else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for key, label in ((FLOOR_KEY, "mixture (floor)"), (ORACLE_KEY, "oracle mask (ceiling)")):
        if key in results:
            lines.append(f"| {label} | " + " | ".join(f"{_median(results[key]['mdx']):.2f}" for _ in budgets) + " |")
    lines += [
        "",
        f"Difference to the {settings.steps}-step scratch fine-tune of the same budget and seed (dB, per seed; "
        "a row that names more steps is compared with it too, its control is the scratch row of as many):",
        "",
        head,
        rule,
    ]
    for name in names[1:]:
        cells = []
        for k in budgets:
            pairs = [
                (_median(results[_key(name, k, s)]["mdx"]), _median(results[_key(SCRATCH, k, s)]["mdx"]))
                for s in range(settings.seeds)
                if _key(name, k, s) in results and _key(SCRATCH, k, s) in results
            ]
            cells.append(" / ".join(f"{a - b:+.2f}" for a, b in pairs) if pairs else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curve(results: dict, settings: CurveSettings, path: Path) -> None:
    """SDR against labelled songs: a line per route through the seeds' mean, each seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.durable import staged_path

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name in routes(settings):
        points = [(k, point(results, name, k, settings.seeds)) for k in settings.budgets]
        points = [(k, values) for k, values in points if values]
        if not points:
            continue
        (line,) = ax.plot([k for k, _ in points], [float(np.mean(v)) for _, v in points], marker="o", label=name)
        for k, values in points:  # each seed, in the line's colour
            ax.scatter([k] * len(values), values, s=10, alpha=0.5, color=line.get_color())
    for key, label, style in ((ORACLE_KEY, "oracle mask", "--"), (FLOOR_KEY, "mixture (floor)", ":")):
        if key in results:
            ax.axhline(_median(results[key]["mdx"]), color="grey", linestyle=style, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(settings.budgets), [str(k) for k in settings.budgets])
    ax.set_xlabel("labelled songs")
    ax.set_ylabel("instrumental SDR, MDX (dB)")
    ax.set_title(f"{settings.steps} fine-tune steps, {settings.seeds} seed(s)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with staged_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


__all__ = ["CurveSettings", "run_curve", "format_curve", "plot_curve", "labelled_ids", "routes", "SCRATCH"]
