"""`hybridprune search` end to end on a tiny checkpoint, then `prune --plan best.yaml` with its scores."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import build, tiny_nemotron_config
from hybridprune.cli import app
from hybridprune.data import tokenizer_path
from hybridprune.pruning.export import copy_tokenizer_files

runner = CliRunner()

FAST = ["--data", "shakespeare", "--eval-samples", "4", "--eval-seq-len", "32", "--calib-samples", "4",
        "--depth-samples", "2", "--batch-size", "4", "--divisors", "hidden=8,ffn=16,head_dim=2",
        "--speed-batch", "1"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("search-cli")
    build(tiny_nemotron_config(vocab_size=4096)).save_pretrained(root / "model")
    copy_tokenizer_files(tokenizer_path(), root / "model")
    return root


def test_search_then_prune_with_the_best_plan(checkpoint):
    out = checkpoint / "search"
    args = ["search", "--model", str(checkpoint / "model"), "--out", str(out), "--params", "0.9x",
            "--top-k", "2", "--kd-steps", "1", "--kd-batch", "2", "--max-candidates", "4",
            "--skip", "attention_heads", *FAST]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "winner" in result.output and "candidates to evaluate" in result.output
    decision = json.loads((out / "summary.json").read_text())["decision"]
    assert decision["tie_break"] == "cost" and decision["decided_by"] in ("loss", "tie: analytic cost")
    assert f"(chosen by {decision['decided_by']}" in " ".join(result.output.split())
    for name in ("best.yaml", "search.png", "candidates.jsonl", "summary.json", "scores/scores.json"):
        assert (out / name).is_file(), name
    assert f"--scores {out / 'scores'} --plan" in (out / "best.yaml").read_text()  # the apply line's real scores
    records = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert len(records) == 4 + 2
    assert all(r["values"]["num_attention_heads"] == 8 for r in records if r["stage"] == "zero_shot")

    again = runner.invoke(app, args)  # everything is done: nothing is recomputed
    assert again.exit_code == 0, again.output
    assert "resuming: 6 evaluations" in again.output and "using the scores" in again.output
    assert len((out / "candidates.jsonl").read_text().splitlines()) == 6

    pruned = checkpoint / "pruned"
    result = runner.invoke(app, ["prune", "--model", str(checkpoint / "model"), "--scores", str(out / "scores"),
                                 "--plan", str(out / "best.yaml"), "--out", str(pruned)])
    assert result.exit_code == 0, result.output
    info = json.loads((pruned / "hybridprune.json").read_text())
    best = json.loads((out / "summary.json").read_text())
    assert info["plan"] == best["plan"]


def test_impossible_budget_and_missing_budget_are_clear_errors(checkpoint):
    base = ["search", "--model", str(checkpoint / "model"), "--out", str(checkpoint / "nope"), *FAST]
    result = runner.invoke(app, [*base, "--params", "1000", "--skip", "depth"])
    assert result.exit_code == 2
    assert "smallest representable candidate is" in result.output and "1,000" in result.output
    assert not (checkpoint / "nope" / "scores").exists()  # refused before calibrating
    result = runner.invoke(app, base)
    assert result.exit_code == 2 and "--params" in result.output
    result = runner.invoke(app, [*base, "--params", "0.5x", "--skip", "width"])
    assert result.exit_code == 2 and "unknown search axis" in result.output
