"""The `hybridprune` command line: one typer app, one module per stage.

Each module in `COMMAND_MODULES` defines `register(app)`; adding a stage is one line here.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="hybridprune",
    help="Group-aware pruning and distillation of hybrid Mamba-Transformer language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

COMMAND_MODULES = [
    "tokenize",
    "calibrate",
    "prune",
    "search",
    "distill",
    "teacher_logits",
    "evaluate",
    "demo",
    "report",
]

for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(app)


def main() -> None:
    app()
