"""Plots and reports: `build_run_report(run_dir)` writes report.md and a self-contained report.html."""

from __future__ import annotations

from .run import ReportError, build_run_report

__all__ = ["ReportError", "build_run_report"]
