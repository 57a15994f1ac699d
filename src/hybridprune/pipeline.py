"""The whole recipe glued together: calibrate → search → prune → distil → evaluate → report.

`run_demo` runs it offline on the shipped tiny Nemotron-H teacher and the bundled corpus; the same
stages serve any checkpoint. Everything is written to a temporary sibling of the output directory
and renamed into place at the end, so an interrupted run never leaves a half-written report.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from .architectures import get_adapter
from .fsutil import atomic_directory, check_output


@dataclass
class DemoSettings:
    """Sizes of the demo run; the defaults finish in a few minutes on 2 CPU cores."""

    out: str = "runs/demo"
    teacher: str | None = None  # default: the shipped tiny Nemotron-H
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


def _stage(console: Console, title: str) -> float:
    console.rule(f"[bold]{title}")
    return time.perf_counter()


def _measure(model, val, settings: DemoSettings) -> dict[str, Any]:
    from .evaluate import evaluate_loss, measure_throughput

    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    ev = evaluate_loss(model, val, batch_size=settings.batch)
    return {
        "params": adapter.num_parameters(dims),
        "non_embedding_params": adapter.num_parameters(dims, embeddings=False),
        "val_loss": ev["loss"],
        "perplexity": ev["perplexity"],
        "tokens_per_s": measure_throughput(model, settings.batch, settings.seq_len, warmup=1, repeats=3),
    }


def run_demo(settings: DemoSettings | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run the recipe end to end and write a report; returns the measured results."""
    settings = settings or DemoSettings()
    console = console or Console()
    out = Path(settings.out)
    check_output(out, overwrite=settings.overwrite)  # before minutes of work
    results: dict[str, Any] = {}
    atomic_directory(out, lambda tmp: _run(settings, console, tmp, results), overwrite=settings.overwrite,
                     what="the demo")
    console.print(f"report: [bold]{out / 'report.md'}[/]  student: [bold]{out / 'student'}[/]")
    return results


def _run(settings: DemoSettings, console: Console, work: Path, results: dict[str, Any]) -> None:
    from .checkpoints import load_model, load_tokenizer
    from .data import load_token_samples, teacher_path
    from .distillation import DistillConfig, distill
    from .importance.calibrate import calibrate
    from .pruning.apply import prune
    from .pruning.export import export
    from .report.plots import plot_layer_importance
    from .archsearch import Budget, SearchConfig, search

    torch.manual_seed(settings.seed)
    teacher_dir = Path(settings.teacher) if settings.teacher else teacher_path()
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
    results["teacher"] = _measure(teacher, val, settings)
    results["pruned"] = _measure(pruned, val, settings)
    timings["prune"] = time.perf_counter() - t0

    t0 = _stage(console, f"distil: {settings.kd_steps} steps of {settings.batch} x {settings.seq_len} tokens")
    kd = DistillConfig(steps=settings.kd_steps, global_batch=settings.batch, micro_batch=settings.batch,
                       lr=settings.lr, min_lr=settings.min_lr, warmup=max(1, settings.kd_steps // 10),
                       seed=settings.seed, out_dir=str(work / "distill"), export=False, plot=True,
                       eval_every=max(1, settings.kd_steps // 5))
    student = distill(teacher, pruned, train, kd, val_data=val).eval()
    student.hybridprune_info = info
    results["distilled"] = _measure(student, val, settings)
    export(student, work / "student", tokenizer=tokenizer, source=str(teacher_dir),
           metadata={"distillation": {"steps": settings.kd_steps, "tokens": settings.kd_steps * settings.batch
                                      * settings.seq_len, "lr": settings.lr}})
    timings["distill"] = time.perf_counter() - t0

    results.update(plan=plan.to_dict(), timings_s={k: round(v, 1) for k, v in timings.items()},
                   settings=asdict(settings), search_top=found.top(5))
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    console.print(summary_table(results))
    _write_report(work, settings, results, found, teacher_dir)


def summary_table(results: dict[str, Any]) -> Table:
    table = Table(title="hybridprune demo")
    for col in ("model", "parameters", "non-embedding", "val loss", "perplexity", "tokens/s (fwd)"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name in ("teacher", "pruned", "distilled"):
        r = results[name]
        table.add_row(name, f"{r['params']:,}", f"{r['non_embedding_params']:,}", f"{r['val_loss']:.4f}",
                      f"{r['perplexity']:.2f}", f"{r['tokens_per_s']:,.0f}")
    return table


def _write_report(work: Path, settings: DemoSettings, results: dict[str, Any], found, teacher_dir) -> None:
    from .report.report import Report

    report = Report(
        title="hybridprune demo report",
        intro=(f"Teacher `{teacher_dir}` pruned group-aware to {settings.target_params:g}x of its non-embedding "
               f"parameters, then distilled for {settings.kd_steps} steps on `{settings.data}`. Validation loss "
               f"is measured on {settings.val_samples} held-out samples of {settings.seq_len} tokens; "
               "throughput is a forward pass measured on this machine (median of 3)."),
    )
    rows = [[name, f"{r['params']:,}", f"{r['non_embedding_params']:,}", f"{r['val_loss']:.4f}",
             f"{r['perplexity']:.2f}", f"{r['tokens_per_s']:,.0f}"]
            for name, r in ((n, results[n]) for n in ("teacher", "pruned", "distilled"))]
    report.add_table("Summary", ["model", "parameters", "non-embedding", "val loss", "perplexity", "tokens/s"], rows)
    report.add_text("Plan", "```\n" + json.dumps(results["plan"], indent=2) + "\n```")
    top = [[c["key"], f"{c['params']:,}", f"{c['params_non_embedding']:,}", f"{c['zero_shot_loss']:.4f}",
            f"{c['loss']:.4f}" if c["loss"] is not None else "-",
            f"{c['throughput']:,.0f}" if c["throughput"] is not None else "-"] for c in found.top(5)]
    report.add_table("Search: top candidates (winner first)",
                     ["candidate", "parameters", "non-embedding", "zero-shot loss", "after short KD", "tokens/s"], top)
    report.add_figure("Importance per block", work / "layer_importance.png", work)
    report.add_figure("Candidates on the size–loss plane", work / "search" / "search.png", work)
    for png in sorted((work / "distill").glob("*.png")):
        report.add_figure("Distillation loss", png, work)
    report.add_text("Time per stage (s)", "\n".join(f"- {k}: {v}" for k, v in results["timings_s"].items()))
    report.write(work / "report.md")
