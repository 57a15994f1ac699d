"""What each stage of a recipe does, given its settings and the outputs of the stages before it.

Every stage writes only inside its own directory (`DIR/NN-stage/`), through the same writers as the
commands (atomic checkpoints and scores), so a stage killed half-way leaves nothing a rerun mistakes
for finished work. Two stages resume rather than restart: distillation from its last checkpoint, and
the search from its candidate log.
"""

from __future__ import annotations

import json
import math
import shutil

from pathlib import Path
from typing import Any


from ..architectures import get_adapter
from ..stages.source import Source
from .plan import RECORD, Stage, foreign_words, record_fix

SHIPPED_PREFIX = "shipped:"


def model_path(spec: str) -> Path:
    """A recipe's `model`: a shipped teacher (`shipped:tiny-nemotron-h`, `shipped:tiny-qwen3-5`), a local directory, or a Hub id `org/name[@rev]`."""
    from ..checkpoint.load import check_weight_files, resolve
    from ..data.assets import BUNDLED_TEACHERS, teacher_path

    if spec.startswith(SHIPPED_PREFIX):
        name = spec[len(SHIPPED_PREFIX):]
        if name not in BUNDLED_TEACHERS:
            shipped = ", ".join(f"{SHIPPED_PREFIX}{n}" for n in BUNDLED_TEACHERS)
            raise ValueError(f"no shipped model {name!r}; the shipped ones are {shipped}")
        return teacher_path(name)
    path = Path(resolve(spec, role="model"))
    check_weight_files(path, "model", allow_pickle=False)  # pickles refused with the conversion, as by every command
    return path


class Context:
    """What the stages of one run share: the recipe, the run directory, loaded models and data."""

    def __init__(self, recipe, run_dir: Path, console, rank: int = 0, world: int = 1):
        self.recipe, self.dir, self.console, self.rank, self.world = recipe, run_dir, console, rank, world
        self.source = model_path(recipe.model)
        self._models: dict[str, Any] = {}
        self._samples: dict[tuple, Any] = {}
        self.tokenizer = None

    # ---- models and data, loaded once per process ----
    def model(self, path: Path):
        from ..cli.common import load_model

        key = str(path)
        if key not in self._models:
            self._models[key] = load_model(path, dtype=self.recipe.dtype, device=self.recipe.device,
                                           role="model").eval()
        return self._models[key]

    def forget(self, path: Path) -> None:
        self._models.pop(str(path), None)

    def tok(self):
        from ..checkpoint.load import load_tokenizer

        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.source, role="model")
        return self.tokenizer

    def samples(self, split: str, seq_len: int, n: int | None):
        from ..data import load_token_samples

        key = (split, seq_len, n)
        if key not in self._samples:
            r = self.recipe
            self._samples[key] = load_token_samples(r.data, self.tok(), seq_len=seq_len, num_samples=n, split=split,
                                                    seed=r.seed, text_field=r.text_field,
                                                    model_vocab_size=self.model(self.source).config.vocab_size)
        return self._samples[key]

    def output(self, stage: Stage | None, key: str = "model") -> Path:
        """The path of an earlier stage's output (None: the recipe's model), found by the stage's kind:
        a record may come from elsewhere, so the names in it are never followed."""
        if stage is None:
            return self.source
        return stage.output(key)


class RecipeSource(Source):
    """A stage's model in a recipe run, loaded (and its samples drawn) once through the run's `Context`."""

    def __init__(self, ctx: Context, path: Path):
        r = ctx.recipe
        super().__init__(path, data=r.data, text_field=r.text_field, seed=r.seed, dtype=r.dtype, device=r.device)
        self.ctx = ctx

    def load(self):
        return self.ctx.model(self.model)

    def tokenizer(self):
        return self.ctx.tok()

    def samples(self, split: str, seq_len: int, n: int | None, vocab_size: int):
        return self.ctx.samples(split, seq_len, n)


def _section(stage: Stage):
    return stage.settings


# ---- the stages ---------------------------------------------------------------------------------

def calibrate(ctx: Context, stage: Stage, work: Path) -> dict:
    from ..importance.calibrate import calibrate as run_calibration
    from ..report.plots import plot_layer_importance

    s = _section(stage)
    model = ctx.model(ctx.output(stage.model_in))
    calib = ctx.samples("calibration", s.seq_len, s.samples)
    scores = run_calibration(model, calib, batch_size=s.batch_size, depth_samples=s.depth_samples)
    scores.save(work / "scores")
    plot_layer_importance(scores, list(get_adapter(model).dims(model.config).block_kinds),
                          work / "layer_importance.png")
    return {"scores": "scores"}


def search(ctx: Context, stage: Stage, work: Path) -> dict:
    """The search stage's `run` on the model this round starts from, with its calibrate stage's scores; a
    relative budget (`0.5x`) is of the ORIGINAL model."""
    from ..stages.search import run

    s = _section(stage)
    path = ctx.output(stage.model_in)
    original = None
    if path != ctx.source:
        model = ctx.model(ctx.source)
        adapter = get_adapter(model)
        dims = adapter.dims(model.config)
        embeddings = s.params_kind.replace("-", "_") != "non_embedding"
        original = (adapter.num_parameters(dims, embeddings=embeddings),
                    adapter.num_active_parameters(dims) if dims.num_moe_experts is not None else None)
    found = run(s, RecipeSource(ctx, path), work / "search", scores=ctx.output(stage.inputs["calibrate"], "scores"),
                check_memory=False, original=original, console=ctx.console)
    return {"plan": found.best.to_dict(), "best_key": found.best_key, "top": found.top(5), "search": "search"}


def prune(ctx: Context, stage: Stage, work: Path) -> dict:
    from ..cli.common import resolve_dtype
    from ..importance.scores import Scores
    from ..output.documents import DocumentError
    from ..pruning.plan import Plan, PlanError
    from ..pruning.streaming import stream_prune

    s = _section(stage)
    if stage.inputs.get("search") is not None:  # the search stage's record: it may have run in another command
        found = stage.inputs["search"]
        try:
            plan = Plan.from_dict(found.record_outputs()["plan"])
        except PlanError as exc:
            raise DocumentError(f"{found.dir / RECORD}: outputs.plan: {exc}; {record_fix(found.dir)}") from None
    else:
        plan = stage.plan  # parsed when the stages were planned
    scores = Scores.load(ctx.output(stage.inputs["calibrate"], "scores"))
    source = ctx.output(stage.model_in)
    stream_prune(source, scores, plan, work / "model", dtype=None if s.dtype == "auto" else resolve_dtype(s.dtype),
                 overwrite=True, expert_importance=s.expert_importance, serve_with=s.serve_with or (),
                 tensor_parallel=s.tensor_parallel)
    return {"model": "model", "plan": plan.to_dict()}


def distill(ctx: Context, stage: Stage, work: Path, *, resume: bool) -> dict:
    """The distill stage's `run`: the round's pruned student from the recipe's model, into `student/`,
    resumed from its last checkpoint when one was written."""
    from dataclasses import replace

    from ..stages.distill import Models, run

    s, r = _section(stage), ctx.recipe
    student_dir = ctx.output(stage.inputs["prune"])
    out = work / "student"
    checkpoints = out / "checkpoints"
    resume = resume and checkpoints.is_dir() and any(checkpoints.iterdir())
    if not resume and out.exists():
        shutil.rmtree(out)  # killed before its first checkpoint: start the distillation afresh
    for path in (ctx.source, student_dir):
        ctx.forget(path)  # the run loads both in its own precision: no second copy held
    run(replace(s, progress=s.progress and ctx.console is not None), Models(ctx.source, student_dir), r.data, out,
        seed=r.seed, text_field=r.text_field, device=r.device, resume=out if resume else None, check_memory=False,
        console=ctx.console)
    steps = s.steps if s.steps is not None else math.ceil(s.tokens / (s.global_batch * s.seq_len))
    return {"model": "student", "steps": steps, "tokens": steps * s.global_batch * s.seq_len}


def evaluate(ctx: Context, stage: Stage, work: Path) -> dict:
    from ..evaluate import MissingExtra, SpeedSettings, compare_models
    from ..evaluate.harness import require_lm_eval
    from ..pruning.model_card import rewrite_with_evaluation
    from .summary import evaluation_tables, measure, summary_table

    s = _section(stage)
    val = ctx.samples("validation", s.seq_len, s.samples)
    models = {"teacher": ctx.source}
    rounds = [r for r in stage.inputs.get("rounds", [])]
    for i, (pruned, distilled) in enumerate(rounds, 1):
        tag = "" if len(rounds) == 1 else f" r{i}"
        models[f"pruned{tag}"] = ctx.output(pruned)
        if distilled is not None:
            models[f"distilled{tag}"] = ctx.output(distilled)
    loaded = {name: ctx.model(path) for name, path in models.items()}
    results: dict[str, Any] = {name: measure(m, val, s, ctx.tok()) for name, m in loaded.items()}
    tasks, skipped = tuple(s.tasks), None
    if tasks:
        try:
            require_lm_eval()
        except MissingExtra as exc:
            tasks, skipped = (), str(exc)
            ctx.console.print(f"[yellow]tasks skipped:[/] {exc}")
    speed = SpeedSettings(batch_sizes=tuple(s.batch_sizes), contexts=tuple(s.context), new_tokens=s.new_tokens,
                          warmup=s.warmup, repeats=s.repeats, seed=ctx.recipe.seed) if s.speed else None
    evaluation = compare_models(loaded, tokenizers=ctx.tok(), samples=val, batch_size=s.batch_size, speed=speed,
                                tasks=tasks, task_limit=s.task_limit,
                                data_info={"source": ctx.recipe.data, "split": "validation", "samples": len(val),
                                           "seq_len": s.seq_len},
                                progress=lambda msg: ctx.console.print(f"[dim]{msg}[/]"))
    if skipped:
        evaluation["tasks_skipped"] = skipped
    results["evaluation"] = evaluation
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    ctx.console.print(summary_table(results, list(loaded)))
    ctx.console.print(evaluation_tables(evaluation))
    last = list(models.values())[-1]
    if last != ctx.source and last.is_relative_to(ctx.dir):
        rewrite_with_evaluation(last, evaluation)  # the final checkpoint's card gains the table
    return {"results": "results.json"}


def report(ctx: Context, stage: Stage, work: Path, stages: list[Stage]) -> dict:
    from ..output.atomic import claim
    from ..output.documents import read_document
    from ..report import build_run_report
    from ..report.report import write_text_atomic

    s = _section(stage)
    results: dict[str, Any] = {}
    for st in stages:
        out = st.record_outputs()
        if st.kind == "eval":
            results.update(read_document(st.output("results"), dict, fix=record_fix(st.dir), non_finite=True))
        if st.kind == "search":
            results["search_top"] = out.get("top")
        if st.kind == "prune":
            results["plan"] = out.get("plan")
    results["timings_s"] = {st.name: st.record().get("seconds") for st in stages if st is not stage}
    results["recipe"] = ctx.recipe_doc
    claim(ctx.dir, ["results.json", "report.md", "report.html", "report_figures"])
    write_text_atomic(ctx.dir / "results.json", json.dumps(results, indent=2, default=str) + "\n")  # never through a link
    build_run_report(ctx.dir, title=s.title, intro=s.intro, overwrite=True)
    return {"report": "../report.html"}


def clear(stage: Stage) -> None:
    """Empty a stage directory for a fresh start (its record first: an empty stage is not finished).
    Only what a stage of its kind writes is removed: a link or anything else there is refused, untouched."""
    from ..output.atomic import OutputError

    work = stage.dir
    if work.is_symlink():
        raise OutputError(f"{work} is a symbolic link, which a run never writes; nothing there was removed: "
                          f"delete that link (its target is not touched), or {record_fix(work)}")
    foreign = stage.foreign()
    if foreign:
        found, todo = foreign_words(work, foreign, stage.name)
        raise OutputError(f"{found}; nothing there was removed: {todo}, or {record_fix(work)}")
    if work.is_dir():
        for p in sorted(work.iterdir(), key=lambda p: p.name != RECORD):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    work.mkdir(parents=True, exist_ok=True)


