"""`hybridprune eval --speed --tasks --out` and `hybridprune report` on a tiny run made with the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import build, tiny_nemotron_config
from hybridprune.cli import app
from hybridprune.data import tokenizer_path
from hybridprune.pruning.export import copy_tokenizer_files
from hybridprune.report import ReportError, build_run_report

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """calibrate → prune → eval (loss, bits per byte, tasks, speed) of a tiny random Nemotron-H."""
    root = tmp_path_factory.mktemp("run")
    model = build(tiny_nemotron_config(vocab_size=4096, pad_token_id=1, bos_token_id=0, eos_token_id=0))
    model.save_pretrained(root / "model")
    copy_tokenizer_files(tokenizer_path(), root / "model")
    steps = [
        ["calibrate", "--model", str(root / "model"), "--data", "shakespeare", "--samples", "4", "--seq-len", "32",
         "--batch-size", "2", "--depth-samples", "2", "--out", str(root / "scores")],
        ["prune", "--model", str(root / "model"), "--scores", str(root / "scores"),
         "--plan", "hidden_size=32,mamba_num_heads=6,num_layers=4", "--out", str(root / "pruned")],
    ]
    for args in steps:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    tasks = []
    try:
        import lm_eval  # noqa: F401

        tasks = ["--tasks", "next_line_choice,corpus_bpb", "--task-limit", "3"]
    except ImportError:
        pass
    result = runner.invoke(app, [
        "eval", str(root / "model"), str(root / "pruned"), "--data", "shakespeare", "--samples", "2",
        "--seq-len", "32", "--batch-size", "2", "--speed", "--batch-sizes", "1,2", "--context", "8,16",
        "--new-tokens", "2", "--repeats", "1", "--warmup", "0", *tasks, "--out", str(root / "eval"),
    ])
    assert result.exit_code == 0, result.output
    return root


def test_eval_writes_one_json_with_loss_tasks_and_speed(run_dir):
    evaluation = json.loads((run_dir / "eval" / "eval.json").read_text())
    first, second = evaluation["models"]
    for m in (first, second):
        assert m["loss"] > 0 and m["bits_per_byte"] > 0 and m["bytes"] == first["bytes"]
    assert second["parameters"] < first["parameters"]
    assert len(evaluation["speed"]["cells"]) == 2 * 2 * 2
    assert evaluation["speed"]["settings"]["new_tokens"] == 2
    assert all(c["decode_tokens_per_s"] > 0 for c in evaluation["speed"]["cells"])
    if "tasks" in first:
        assert set(first["tasks"]) == {"next_line_choice", "corpus_bpb"}
    md = (run_dir / "eval" / "eval.md").read_text()
    assert "Generation speed" in md and "decode tok/s" in md and "(1.00x)" in md


def test_report_command_builds_markdown_and_self_contained_html(run_dir):
    result = runner.invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    html = (run_dir / "report.html").read_text()
    md = (run_dir / "report.md").read_text()
    assert html.count("<img ") == 3 and html.count('src="data:image/png;base64,') == html.count("<img ")
    assert all(h in md for h in ("Before and after", "Generation speed", "Importance per unit", "Speed against quality"))
    for line in md.splitlines():
        if line.startswith("!["):
            assert (run_dir / line.split("](")[1].rstrip(")")).is_file()
    result = runner.invoke(app, ["report", str(run_dir)])  # our own files: replaced without --overwrite
    assert result.exit_code == 0, result.output


def test_report_refuses_foreign_files_and_empty_directories(tmp_path, run_dir):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "nothing to report" in result.output
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not a directory" in result.output
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "eval.json").write_text((run_dir / "eval" / "eval.json").read_text())
    (foreign / "report.md").write_text("my notes\n")
    with pytest.raises(ReportError, match="not written by hybridprune"):
        build_run_report(foreign)
    assert (foreign / "report.md").read_text() == "my notes\n"
    assert not (foreign / "report.html").exists()


def test_eval_refusals(run_dir, tmp_path):
    model = str(run_dir / "model")
    result = runner.invoke(app, ["eval", model])
    assert result.exit_code == 2 and "nothing to measure" in result.output
    result = runner.invoke(app, ["eval", model, "--speed", "--batch-sizes", "1,x"])
    assert result.exit_code == 2 and "--batch-sizes" in result.output
    result = runner.invoke(app, ["eval", model, "--speed", "--context", "0"])
    assert result.exit_code == 2 and "--context" in result.output
    result = runner.invoke(app, ["eval", model, "--speed", "--out", str(run_dir / "eval")])
    assert result.exit_code == 2 and "already exists" in result.output


def test_eval_without_lm_eval_names_the_extra(run_dir, monkeypatch):
    from hybridprune.evaluate import harness

    def missing():
        raise harness.MissingExtra("downstream tasks need lm-evaluation-harness, which is not installed: "
                                   "pip install 'hybridprune[eval]' (or pip install lm-eval)")

    monkeypatch.setattr(harness, "require_lm_eval", missing)
    result = runner.invoke(app, ["eval", str(run_dir / "model"), "--tasks", "corpus_bpb"])
    assert result.exit_code == 2 and "hybridprune[eval]" in " ".join(result.output.split())
