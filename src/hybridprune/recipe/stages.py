"""What each stage of a recipe does, given its settings and the outputs of the stages before it.

Every stage writes only inside its own directory (`DIR/NN-stage/`), through the same writers as the
commands (atomic checkpoints and scores), so a stage killed half-way leaves nothing a rerun mistakes
for finished work. Two stages resume rather than restart: distillation from its last checkpoint, and
the search from its candidate log.
"""

from __future__ import annotations

import json
import shutil

from pathlib import Path
from typing import Any



from ..architectures import get_adapter
from ..stages.common import Loader, LoadSettings
from .plan import RECORD, Stage, foreign_words, record_fix


def model_path(spec: str) -> Path:
    """A recipe's `model`: a shipped teacher (`shipped:tiny-nemotron-h`, `shipped:tiny-qwen3-5`), a local
    directory, or a Hub id `org/name[@rev]`, resolved as every command resolves `--model`."""
    from ..checkpoint.load import check_weight_files, resolve

    path = Path(resolve(spec, role="model"))
    check_weight_files(path, "model", allow_pickle=False)  # pickles refused with the conversion, as by every command
    return path


class Context:
    """What the stages of one run share: the recipe, the run directory, loaded models and data."""

    def __init__(self, recipe, run_dir: Path, console, rank: int = 0, world: int = 1):
        self.recipe, self.dir, self.console, self.rank, self.world = recipe, run_dir, console, rank, world
        self.source = model_path(recipe.model)
        self.loader = SharedLoader(self)
        #: the recipe's own loading options, for the stages whose sections hold none (search, distill)
        self.loading = LoadSettings(seed=recipe.seed, dtype=recipe.dtype, device=recipe.device,
                               text_field=recipe.text_field)

    # ---- models and data, loaded once per process ----
    def model(self, path: Path):
        """The model at `path` as the recipe's `dtype` and `device` load it."""
        return self.loader.model(path, self.loading)

    def tok(self):
        return self.loader.tokenizer(self.source, self.loading)

    def output(self, stage: Stage | None, key: str = "model") -> Path:
        """The path of an earlier stage's output (None: the recipe's model), found by the stage's kind:
        a record may come from elsewhere, so the names in it are never followed."""
        if stage is None:
            return self.source
        return stage.output(key)

    def voice(self):
        from ..stages.common import SILENT, console_voice

        return SILENT if self.console is None else console_voice(self.console)


class SharedLoader(Loader):
    """The stages' `Loader` for one run: each model, tokenizer and set of windows is loaded once per
    process and kept for the later stages (the teacher is read by calibrate, search and eval). The
    tokenizer is always the recipe model's: every stage's model is pruned from it. A private copy
    (`keep=False`: distillation's) is loaded afresh, and the kept copies of that model are let go
    first, so that no second copy is held."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self._models: dict[tuple, Any] = {}
        self._tokenizers: dict[tuple, Any] = {}
        self._samples: dict[tuple, Any] = {}

    def model(self, path, s, *, role: str = "model", whole: bool = False, keep: bool = True):
        if not keep:
            self.forget(path)
            return super().model(path, s, role=role, whole=whole)
        key = (str(path), s.dtype, s.device or "auto", getattr(s, "device_map", None), s.trust_remote_code, whole)
        if key not in self._models:
            self._models[key] = super().model(path, s, role=role, whole=whole)
        return self._models[key]

    def forget(self, path: Path) -> None:
        for key in [k for k in self._models if k[0] == str(path)]:
            del self._models[key]

    def tokenizer(self, path, s, *, role: str = "model", keep: bool = True):
        if not keep:
            return super().tokenizer(path, s, role=role)
        key = (str(self.ctx.source), s.trust_remote_code)
        if key not in self._tokenizers:
            self._tokenizers[key] = super().tokenizer(self.ctx.source, s, role=role)
        return self._tokenizers[key]

    def samples(self, data, tokenizer, *, split, seq_len, n, seed, text_field, vocab):
        key = (data, id(tokenizer), split, seq_len, n, seed, text_field, vocab)
        if key not in self._samples:
            self._samples[key] = super().samples(data, tokenizer, split=split, seq_len=seq_len, n=n, seed=seed,
                                                 text_field=text_field, vocab=vocab)
        return self._samples[key]


def _section(stage: Stage):
    return stage.settings


# ---- the stages ---------------------------------------------------------------------------------

def calibrate(ctx: Context, stage: Stage, work: Path) -> dict:
    from ..stages import calibrate as calibrate_stage

    calibrate_stage.run(stage.settings, ctx.output(stage.model_in), ctx.recipe.data, work / "scores",
                        plot=work / calibrate_stage.PLOT_FILE, voice=ctx.voice(), loader=ctx.loader)
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
    found = run(s, path, ctx.recipe.data, work / "search", loading=ctx.loading, check_memory=False,
                scores=ctx.output(stage.inputs["calibrate"], "scores"), original=original, voice=ctx.voice(),
                loader=ctx.loader)
    return {"plan": found.best.to_dict(), "best_key": found.best_key, "top": found.top(5), "search": "search"}


def prune(ctx: Context, stage: Stage, work: Path) -> dict:
    from ..output.documents import DocumentError
    from ..pruning.plan import Plan, PlanError
    from ..stages import prune as prune_stage

    if stage.inputs.get("search") is not None:  # the search stage's record: it may have run in another command
        found = stage.inputs["search"]
        try:
            plan = Plan.from_dict(found.record_outputs()["plan"])
        except PlanError as exc:
            raise DocumentError(f"{found.dir / RECORD}: outputs.plan: {exc}; {record_fix(found.dir)}") from None
    else:
        plan = stage.plan  # parsed when the stages were planned
    prune_stage.run(stage.settings, ctx.output(stage.model_in), ctx.output(stage.inputs["calibrate"], "scores"),
                    work / "model", overwrite=True, plan=plan, voice=ctx.voice(), loader=ctx.loader)
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
    trainer = run(replace(s, progress=s.progress and ctx.console is not None), Models(ctx.source, student_dir),
                  r.data, out, seed=r.seed, text_field=r.text_field, device=r.device,
                  resume=out if resume else None, check_memory=False,
                  voice=ctx.voice(), loader=ctx.loader)  # its models are private copies: the kept ones are let go
    steps = trainer.total_steps
    return {"model": "student", "steps": steps, "tokens": steps * s.global_batch * s.seq_len}


def evaluate(ctx: Context, stage: Stage, work: Path) -> dict:
    import dataclasses

    from ..evaluate import MissingExtra
    from ..evaluate.harness import require_lm_eval
    from ..pruning.model_card import rewrite_with_evaluation
    from ..stages import evaluate as evaluate_stage
    from .summary import evaluation_tables, measure, summary_table

    s, skipped = stage.settings, None
    models = {"teacher": ctx.source}
    rounds = [r for r in stage.inputs.get("rounds", [])]
    for i, (pruned, distilled) in enumerate(rounds, 1):
        tag = "" if len(rounds) == 1 else f" r{i}"
        models[f"pruned{tag}"] = ctx.output(pruned)
        if distilled is not None:
            models[f"distilled{tag}"] = ctx.output(distilled)
    if s.tasks:
        try:
            require_lm_eval()
        except MissingExtra as exc:  # a run does not stop at its last stage for an extra: the tasks are skipped
            s, skipped = dataclasses.replace(s, tasks=[]), str(exc)
            ctx.console.print(f"[yellow]tasks skipped:[/] {exc}")
    done = evaluate_stage.run(s, models, ctx.recipe.data, voice=ctx.voice(), loader=ctx.loader)
    evaluation = done.result
    rows = {row["name"]: row for row in evaluation["models"]}
    results: dict[str, Any] = {name: measure(m, rows[name], s) for name, m in done.models.items()}
    if skipped:
        evaluation["tasks_skipped"] = skipped
    results["evaluation"] = evaluation
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    ctx.console.print(summary_table(results, list(done.models)))
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


