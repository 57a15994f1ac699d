"""`hybridprune run RECIPE.yaml --out DIR`: a whole compression from one recipe file, stage by stage."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console, fail_cleanly


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)


@fail_cleanly
def run_command(
    recipe: Path = typer.Argument(..., help="The recipe YAML (see recipes/): model, data and the stages' settings."),
    out: Path = typer.Option(..., "--out", help="Run directory: one NN-stage/ folder per stage, the report at the top."),
    from_stage: str = typer.Option(None, "--from", help="Run this stage (NN-kind, NN or kind) and every one after it again."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the stages, what would be skipped or rerun, and each stage's memory forecast; run nothing."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh: remove what an earlier run wrote in --out."),
) -> None:
    """Calibrate → search/prune → distil (in rounds) → evaluate → report from one recipe; a rerun skips
    finished stages, resumes an interrupted one and reruns what a changed section affects."""
    from ..recipe import run_recipe

    run_recipe(recipe, out, console=console, from_stage=from_stage, dry_run=dry_run, overwrite=overwrite)
