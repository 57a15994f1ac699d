"""`hybridprune demo`: `hybridprune run` of the shipped `recipes/demo.yaml`, with the flags below applied."""

from __future__ import annotations

from pathlib import Path

import typer

from ..options import DEMO
from . import shared
from .common import console, fail_cleanly


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)


@fail_cleanly
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory: the stages, the report, the plots and the student."),
    target_params: float = typer.Option(0.5, "--target-params", help="Fraction of the teacher's non-embedding parameters to keep."),
    kd_steps: int = typer.Option(150, "--kd-steps", **DEMO.bounds("kd_steps"), help="Distillation steps of the final student."),
    search_kd_steps: int = typer.Option(15, "--search-kd-steps", **DEMO.bounds("search_kd_steps"), help="Short-distillation steps per top candidate in the search."),
    top_k: int = typer.Option(3, "--top-k", **DEMO.bounds("top_k"), help="Candidates given the short distillation (the search scores four times as many)."),
    calib_samples: int = typer.Option(128, "--calib-samples", **DEMO.bounds("calib_samples"), help="Calibration samples (an eighth of them measure depth importance)."),
    seq_len: int = typer.Option(256, "--seq-len", **DEMO.bounds("seq_len"), help="Tokens per sample (and the generation speed's context; an eighth of it is generated)."),
    val_samples: int = typer.Option(48, "--val-samples", **DEMO.bounds("val_samples"), help="Held-out samples of the search's loss, the distillation's validation and the evaluation (lm-eval tasks: about twice as many documents)."),
    teacher: Path = typer.Option(None, "--teacher", help="Another checkpoint of any supported family, or a shipped "
                                 "teacher by name: tiny-nemotron-h (the default) or tiny-qwen3-5 (Gated DeltaNet)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh in an existing --out (a rerun without it skips finished stages)."),
    seed: int = shared.seed(0, "Seed for data sampling and training."),
) -> None:
    """Calibrate → search → prune → distil → evaluate → report, in minutes on a CPU (`run recipes/demo.yaml`)."""
    DEMO.check({"target_params": target_params})
    from ..recipe.demo import DemoSettings, run_demo

    settings = DemoSettings(out=str(out), teacher=str(teacher) if teacher else None, target_params=target_params,
                            kd_steps=kd_steps, search_kd_steps=search_kd_steps, search_top_k=top_k,
                            calib_samples=calib_samples, seq_len=seq_len, val_samples=val_samples, overwrite=overwrite,
                            seed=seed)
    run_demo(settings, console=console)
