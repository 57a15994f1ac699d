"""The whole recipe glued together: calibrate → search → prune → distil → evaluate → report.

`run_demo` runs it offline on the shipped tiny Nemotron-H teacher and the bundled corpus; the same
stages serve any checkpoint. Everything is written to a temporary sibling of the output directory
and renamed into place at the end, so an interrupted run never leaves a half-written report.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console, Group
from rich.table import Table

from .architectures import get_adapter
from .fsutil import atomic_directory, check_output


@dataclass
class DemoSettings:
    """Sizes of the demo run; the defaults finish in a few minutes on 2 CPU cores."""

    out: str = "runs/demo"
    teacher: str | None = None  # a checkpoint or a bundled teacher's name; default: the shipped tiny Nemotron-H
    data: str = "shakespeare"
    target_params: float = 0.5  # fraction of the teacher's non-embedding parameters
    seq_len: int = 256
    calib_samples: int = 128
    depth_samples: int = 16
    val_samples: int = 48
    search_top_k: int = 3
    search_max_candidates: int = 12
    search_kd_steps: int = 15
    kd_steps: int = 150
    batch: int = 8
    lr: float = 1e-3
    min_lr: float = 1e-4
    seed: int = 0
    overwrite: bool = False
    # generation speed of teacher / pruned / distilled, side by side (see evaluate.speed)
    speed_batch_sizes: tuple[int, ...] = (1, 8)
    speed_contexts: tuple[int, ...] = (256,)
    speed_new_tokens: int = 32
    speed_repeats: int = 3
    # lm-eval tasks (skipped with a note when lm-eval is not installed)
    tasks: tuple[str, ...] = ("next_line_choice", "corpus_bpb")
    task_limit: int | None = 100


def _stage(console: Console, title: str) -> float:
    console.rule(f"[bold]{title}")
    return time.perf_counter()


def _measure(model, val, settings: DemoSettings, tokenizer) -> dict[str, Any]:
    from .evaluate import evaluate_loss, measure_throughput
    from .evaluate.shared_text import own_tokens

    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    tokens, n_bytes = own_tokens(val, tokenizer)  # as the side-by-side evaluation reads the text
    ev = evaluate_loss(model, tokens, batch_size=settings.batch, num_bytes=n_bytes)
    return {
        "params": adapter.num_parameters(dims),
        "non_embedding_params": adapter.num_parameters(dims, embeddings=False),
        "val_loss": ev["loss"],
        "perplexity": ev["perplexity"],
        "bits_per_byte": ev["bits_per_byte"],
        "tokens_per_s": measure_throughput(model, settings.batch, settings.seq_len, warmup=1, repeats=3),
    }


def _evaluate_side_by_side(models: dict, tokenizer, val, settings: DemoSettings, console: Console) -> dict[str, Any]:
    """Loss, bits per byte, lm-eval tasks and generation speed of the demo's models in one evaluation."""
    from .evaluate import MissingExtra, SpeedSettings, compare_models
    from .evaluate.harness import require_lm_eval

    tasks = tuple(settings.tasks)
    skipped = None
    if tasks:
        try:
            require_lm_eval()
        except MissingExtra as exc:
            tasks, skipped = (), str(exc)
            console.print(f"[yellow]tasks skipped:[/] {exc}")
    speed = SpeedSettings(batch_sizes=tuple(settings.speed_batch_sizes), contexts=tuple(settings.speed_contexts),
                          new_tokens=settings.speed_new_tokens, warmup=1, repeats=settings.speed_repeats,
                          seed=settings.seed)
    evaluation = compare_models(models, tokenizers=tokenizer, samples=val, batch_size=settings.batch, speed=speed,
                                tasks=tasks, task_limit=settings.task_limit,
                                data_info={"source": settings.data, "split": "validation", "samples": len(val),
                                           "seq_len": settings.seq_len},
                                progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    if skipped:
        evaluation["tasks_skipped"] = skipped
    return evaluation


def run_demo(settings: DemoSettings | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run the recipe end to end and write a report; returns the measured results."""
    settings = settings or DemoSettings()
    console = console or Console()
    out = Path(settings.out)
    check_output(out, overwrite=settings.overwrite)  # before minutes of work
    results: dict[str, Any] = {}
    atomic_directory(out, lambda tmp: _run(settings, console, tmp, results), overwrite=settings.overwrite,
                     what="the demo")
    console.print(f"report: [bold]{out / 'report.html'}[/] and [bold]{out / 'report.md'}[/]  "
                  f"student: [bold]{out / 'student'}[/]")
    return results


def _run(settings: DemoSettings, console: Console, work: Path, results: dict[str, Any]) -> None:
    from .checkpoints import load_model, load_tokenizer
    from .data import load_token_samples, resolve_teacher
    from .distillation import DistillConfig, distill
    from .importance.calibrate import calibrate
    from .pruning.apply import prune
    from .pruning.export import export
    from .report.plots import plot_layer_importance
    from .archsearch import Budget, SearchConfig, search

    torch.manual_seed(settings.seed)
    teacher_dir = resolve_teacher(settings.teacher)
    t0 = _stage(console, f"teacher: {teacher_dir}")
    # The one checked load path: safetensors only, no remote code and no prompt, every tensor present.
    teacher = load_model(teacher_dir, dtype=torch.float32, role="teacher")
    tokenizer = load_tokenizer(teacher_dir, role="teacher")
    kw = dict(seq_len=settings.seq_len, seed=settings.seed, model_vocab_size=teacher.config.vocab_size)
    calib = load_token_samples(settings.data, tokenizer, num_samples=settings.calib_samples, split="calibration", **kw)
    val = load_token_samples(settings.data, tokenizer, num_samples=settings.val_samples, split="validation", **kw)
    train = load_token_samples(settings.data, tokenizer, split="train", **kw)
    timings = {"load": time.perf_counter() - t0}

    t0 = _stage(console, "calibrate")
    scores = calibrate(teacher, calib, batch_size=settings.batch, depth_samples=settings.depth_samples)
    scores.save(work / "scores")
    kinds = list(get_adapter(teacher).dims(teacher.config).block_kinds)
    plot_layer_importance(scores, kinds, work / "layer_importance.png")
    timings["calibrate"] = time.perf_counter() - t0

    t0 = _stage(console, f"search: {settings.target_params:g}x of the non-embedding parameters")
    budget = Budget(params=f"{settings.target_params}x", params_kind="non_embedding",
                    seq_len=settings.seq_len, batch=settings.batch)
    kd_short = {"steps": settings.search_kd_steps, "global_batch": settings.batch, "micro_batch": settings.batch,
                "lr": settings.lr, "min_lr": settings.min_lr, "seed": settings.seed}
    found = search(teacher, scores, val, budget, SearchConfig(top_k=settings.search_top_k, kd=kd_short,
                   max_candidates=settings.search_max_candidates, batch_size=settings.batch),
                   train_data=train, out_dir=work / "search", console=console)
    plan = found.best
    timings["search"] = time.perf_counter() - t0

    t0 = _stage(console, f"prune: {plan}")
    pruned = prune(teacher, scores, plan)
    info = pruned.hybridprune_info
    results["teacher"] = _measure(teacher, val, settings, tokenizer)
    results["pruned"] = _measure(pruned, val, settings, tokenizer)
    pruned_kept = copy.deepcopy(pruned)  # distillation trains `pruned` in place; keep the untrained one
    timings["prune"] = time.perf_counter() - t0

    t0 = _stage(console, f"distil: {settings.kd_steps} steps of {settings.batch} x {settings.seq_len} tokens")
    kd = DistillConfig(steps=settings.kd_steps, global_batch=settings.batch, micro_batch=settings.batch,
                       lr=settings.lr, min_lr=settings.min_lr, warmup=max(1, settings.kd_steps // 10),
                       seed=settings.seed, out_dir=str(work / "distill"), export=False, plot=True,
                       eval_every=max(1, settings.kd_steps // 5))
    student = distill(teacher, pruned, train, kd, val_data=val).eval()
    student.hybridprune_info = info
    results["distilled"] = _measure(student, val, settings, tokenizer)
    export(student, work / "student", tokenizer=tokenizer, source=str(teacher_dir),
           metadata={"distillation": {"steps": settings.kd_steps, "tokens": settings.kd_steps * settings.batch
                                      * settings.seq_len, "lr": settings.lr}})
    timings["distill"] = time.perf_counter() - t0

    t0 = _stage(console, "evaluate: loss, tasks and generation speed, side by side")
    results["evaluation"] = _evaluate_side_by_side({"teacher": teacher, "pruned": pruned_kept, "distilled": student},
                                                   tokenizer, val, settings, console)
    timings["evaluate"] = time.perf_counter() - t0

    results.update(plan=plan.to_dict(), timings_s={k: round(v, 1) for k, v in timings.items()},
                   settings=asdict(settings), search_top=found.top(5))
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    console.print(summary_table(results))
    console.print(evaluation_tables(results["evaluation"]))
    _write_report(work, settings, results, found, teacher_dir)


def summary_table(results: dict[str, Any]) -> Table:
    table = Table(title="hybridprune demo")
    for col in ("model", "parameters", "non-embedding", "val loss", "perplexity", "bits/byte", "tokens/s (fwd)"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name in ("teacher", "pruned", "distilled"):
        r = results[name]
        table.add_row(name, f"{r['params']:,}", f"{r['non_embedding_params']:,}", f"{r['val_loss']:.4f}",
                      f"{r['perplexity']:.2f}", f"{r['bits_per_byte']:.4f}", f"{r['tokens_per_s']:,.0f}")
    return table


def evaluation_tables(evaluation: dict[str, Any]) -> Group:
    """The side-by-side evaluation (tasks, generation speed) as rich tables."""
    from .evaluate.tables import quality_table, speed_table

    tables = []
    for title, (columns, rows) in (("tasks", quality_table(evaluation)),
                                   ("generation speed (medians; ratio to the teacher)", speed_table(evaluation))):
        table = Table(title=title)
        for col in columns:
            table.add_column(col, justify="left" if col == "model" else "right")
        for row in rows:
            table.add_row(*row)
        tables.append(table)
    return Group(*tables)


def _write_report(work: Path, settings: DemoSettings, results: dict[str, Any], found, teacher_dir) -> None:
    """report.md (figures in report_figures/) and the self-contained report.html, from the run's artefacts."""
    from .report import build_run_report

    intro = (f"Teacher `{teacher_dir}` pruned group-aware to {settings.target_params:g}x of its non-embedding "
             f"parameters, then distilled for {settings.kd_steps} steps on `{settings.data}`. Loss, perplexity and "
             f"bits per byte are measured on {settings.val_samples} held-out samples of {settings.seq_len} tokens; "
             "tasks run through lm-evaluation-harness on the held-out test plays; generation speed is measured "
             "on this machine with the three models interleaved.")
    build_run_report(work, title="hybridprune demo report", intro=intro)
