"""Recipes: one YAML file for a whole compression, run stage by stage by `hybridprune run`.

- `loader`: YAML with the line of every key; `schema`: the sections and their checks;
- `plan`: the stages in order and the keys that decide what reruns; `forecasts`: their memory;
- `stages`: what each stage does; `runner`: records, skipping, resuming, torchrun;
- `summary`: the numbers a run prints and reports; `demo`: the shipped demo recipe with `hybridprune demo`'s
  flags applied.
"""

from __future__ import annotations

from pathlib import Path

from .loader import RecipeError

SHIPPED = Path(__file__).resolve().parents[1] / "recipes"  # also at the repository root: recipes/

__all__ = ["RecipeError", "run_recipe", "run_recipe_text", "load_recipe"]


def load_recipe(path):
    from .runner import load_recipe as load

    return load(path)


def run_recipe(recipe: str | Path, out: str | Path, *, console=None, from_stage: str | None = None,
               dry_run: bool = False, overwrite: bool = False):
    """Run (or with `dry_run` describe) the recipe file into run directory `out`; returns the stage records."""
    from .loader import read_text

    return run_recipe_text(read_text(recipe), str(recipe), out, console=console, from_stage=from_stage,
                           dry_run=dry_run, overwrite=overwrite)


def run_recipe_text(text: str, name: str, out: str | Path, *, console=None, from_stage: str | None = None,
                    dry_run: bool = False, overwrite: bool = False):
    """`run_recipe` of a recipe given as YAML text (`name` in messages)."""
    from rich.console import Console

    from .runner import Run

    run = Run(text, name, out, console=console or Console(stderr=True), from_stage=from_stage)
    if dry_run:
        run.dry_run()
        return None
    return run.execute(overwrite=overwrite)
