"""`hybridprune report RUN_DIR`: report.md and a self-contained report.html from a run's artefacts."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import CliError, console, fail_cleanly


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)


@fail_cleanly
def report_command(
    run_dir: Path = typer.Argument(..., help="A directory a run wrote: demo, eval --out, calibrate, search or distill output."),
    title: str = typer.Option(None, "--title", help="Page title (default: from the directory name)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace report.md/report.html/report_figures even if hybridprune did not write them."),
) -> None:
    """Plots and tables of everything the run directory holds, in one page."""
    from ..report import ReportError, build_run_report

    try:
        md, html = build_run_report(run_dir, title=title, overwrite=overwrite)
    except ReportError as exc:
        raise CliError(str(exc)) from None
    console.print(f"report: [bold]{html}[/] (self-contained) and [bold]{md}[/]")
