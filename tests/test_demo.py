"""A shortened demo on the shipped teacher: every stage runs and the report files appear."""

from __future__ import annotations

import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from hybridprune.cli import app
from hybridprune.pipeline import DemoSettings, run_demo


def test_short_demo_writes_the_report(tmp_path):
    settings = DemoSettings(out=str(tmp_path / "demo"), seq_len=32, calib_samples=8, depth_samples=2,
                            val_samples=8, search_top_k=1, search_max_candidates=3, search_kd_steps=1,
                            kd_steps=2, batch=4)
    results = run_demo(settings, console=Console(quiet=True))
    out = tmp_path / "demo"
    for name in ("report.md", "results.json", "layer_importance.png", "search.png", "loss.png",
                 "student/config.json", "student/model.safetensors", "student/tokenizer.json",
                 "student/hybridprune.json", "scores/scores.safetensors", "search/candidates.jsonl"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved["pruned"]["non_embedding_params"] <= 0.5 * saved["teacher"]["non_embedding_params"]
    assert results["distilled"]["params"] == results["pruned"]["params"]
    assert "| distilled |" in (out / "report.md").read_text()
    assert not list(tmp_path.glob(".demo.tmp-*"))


def test_demo_refuses_an_existing_output_and_bad_targets(tmp_path):
    runner = CliRunner()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "taken")])
    assert result.exit_code == 2 and "already exists" in result.output
    result = runner.invoke(app, ["demo", "--target-params", "1.5", "--out", str(tmp_path / "new")])
    assert result.exit_code == 2 and "between 0 and 1" in result.output
    assert not (tmp_path / "new").exists()
