"""The `hybridprune` command line: one typer app, one module per stage.

Each module in `COMMAND_MODULES` defines `register(app)`; adding a stage is one line here.
"""

from __future__ import annotations

import gc
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
    "run",
    "report",
]



def _show_version(value: bool) -> None:
    """`hybridprune --version`: ours and the versions that decide what a checkpoint loads as."""
    if not value:
        return
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    parts = []
    for name in ("torch", "transformers", "safetensors"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} missing")
    typer.echo(f"hybridprune {__version__} ({', '.join(parts)}, python {platform.python_version()})")
    raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Print the version (with torch's and transformers') and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also show other libraries' progress bars, log lines and warnings (lm-eval, datasets)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only warnings and errors."),
) -> None:
    """Group-aware pruning and distillation of hybrid Mamba-Transformer language models.

    Global options go before the command: `hybridprune -q prune ...`."""
    from .console import set_volume

    if verbose and quiet:
        raise typer.BadParameter("-v/--verbose and -q/--quiet exclude each other; give one", param_hint="'--quiet'")
    ctx.call_on_close(set_volume(verbose=verbose, quiet=quiet))


def _register_commands() -> None:
    """Import every command module and register it. The imports make objects that live until the
    process ends: the cyclic collector would walk them again and again while they are made, so it
    waits, and later collections leave them out (`gc.freeze`)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        for name in COMMAND_MODULES:
            importlib.import_module(f"{__name__}.{name}").register(app)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


_register_commands()


def main() -> None:
    # one name in usage lines however it was started (`python -m hybridprune` made click say
    # "python -m hybridprune.hybridprune"). No `gc.freeze` at exit: an object left in a cycle (a
    # buffered file) must still be finalized when the process ends.
    app(prog_name="hybridprune")
