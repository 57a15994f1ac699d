"""The command line answers at once: `--help`, `--version` and every refusal that needs no model import
neither torch nor transformers (seconds each on a loaded machine). Each case runs the command line in a
fresh interpreter and reports which libraries it imported; nothing is timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version

import pytest
import typer

from hybridprune.cli import app

#: libraries a command imports only once it has work for them
HEAVY = ("torch", "transformers", "datasets", "accelerate", "matplotlib", "lm_eval", "safetensors.torch")

#: runs the command line in-process with the given arguments; prints the exit status and the heavy imports
RUN = f"""
import json, sys
sys.argv = ["hybridprune", *sys.argv[1:]]
from hybridprune.cli import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
sys.stdout.flush()
print("\\n@@" + json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def run_cli(*args, cwd) -> tuple[int, str, list[str]]:
    """(exit status, everything printed with whitespace folded, heavy modules imported)."""
    proc = subprocess.run([sys.executable, "-c", RUN, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=300)
    printed, _, report = proc.stdout.rpartition("\n@@")
    assert report, proc.stderr  # the interpreter died before reporting
    result = json.loads(report)
    text = " ".join((printed + " " + proc.stderr).replace("│", " ").split())
    return result["code"], text, result["heavy"]


def commands() -> list[str]:
    return sorted(typer.main.get_command(app).commands)


def test_help_lists_every_command_without_torch(tmp_path):
    code, text, heavy = run_cli("--help", cwd=tmp_path)
    assert code == 0 and "Usage: hybridprune" in text, text
    assert all(name in text for name in commands())
    assert heavy == []


def test_version_reads_the_installed_versions_without_importing_them(tmp_path):
    code, text, heavy = run_cli("--version", cwd=tmp_path)
    assert code == 0, text
    assert f"torch {version('torch')}" in text and f"transformers {version('transformers')}" in text
    assert heavy == []


@pytest.mark.parametrize("command", commands())
def test_every_command_help_without_torch(tmp_path, command):
    code, text, heavy = run_cli(command, "--help", cwd=tmp_path)
    assert code == 0 and f"Usage: hybridprune {command}" in text, text
    assert heavy == []


def test_an_unknown_option_without_torch(tmp_path):
    code, text, heavy = run_cli("prune", "--model", "tiny-nemotron-h", "--bogus", cwd=tmp_path)
    assert code == 2 and "No such option: --bogus" in text, text
    assert heavy == []


def test_a_missing_required_option_without_torch(tmp_path):
    code, text, heavy = run_cli("calibrate", "--data", "shakespeare", "--out", "out", cwd=tmp_path)
    assert code == 2 and "Missing option '--model'" in text, text
    assert heavy == []


@pytest.mark.parametrize("args", [
    ["calibrate", "--model", "missing", "--data", "shakespeare", "--out", "out"],
    ["prune", "--model", "missing", "--scores", "scores", "--plan", "hidden_size=32", "--out", "out"],
    ["search", "--model", "missing", "--data", "shakespeare", "--params", "0.5x", "--out", "out"],
    ["distill", "--teacher", "missing", "--student", "tiny-nemotron-h", "--data", "shakespeare", "--steps", "1",
     "--out", "out"],
    ["eval", "missing", "--data", "shakespeare"],
    ["tokenize", "--data", "shakespeare", "--tokenizer", "missing", "--out", "out"],
], ids=lambda a: a[0])
def test_a_missing_model_is_refused_without_torch(tmp_path, args):
    code, text, heavy = run_cli(*args, cwd=tmp_path)
    assert code == 2 and "checkpoint missing" in text and "does not exist" in text, text
    assert "Traceback" not in text and not (tmp_path / "out").exists()
    assert heavy == []


@pytest.mark.parametrize("args", [
    ["calibrate", "--model", "tiny-nemotron-h", "--data", "shakespeare", "--out", "out"],
    ["prune", "--model", "tiny-nemotron-h", "--scores", "scores", "--plan", "hidden_size=32", "--out", "out"],
    ["search", "--model", "tiny-nemotron-h", "--data", "shakespeare", "--params", "0.5x", "--out", "out"],
    ["distill", "--teacher", "tiny-nemotron-h", "--student", "tiny-nemotron-h", "--data", "shakespeare",
     "--steps", "1", "--out", "out"],
    ["eval", "tiny-nemotron-h", "--data", "shakespeare"],
    ["teacher-logits", "--teacher", "tiny-nemotron-h", "--data", "tokens", "--out", "out"],
], ids=lambda a: a[0])
@pytest.mark.parametrize("device,words", [
    ("gpu0", "--device 'gpu0' is not a device name"), ("cuda:x", "--device 'cuda:x' is not a device name"),
])
def test_a_misspelt_device_is_refused_without_torch(tmp_path, args, device, words):
    code, text, heavy = run_cli(*args, "--device", device, cwd=tmp_path)
    assert code == 2 and words in text and "cuda:N" in text and "--device cpu" in text, text
    assert heavy == []


@pytest.mark.parametrize("args", [
    ["calibrate", "--model", "tiny-nemotron-h", "--data", "shakespeare", "--out", "out"],
    ["prune", "--model", "tiny-nemotron-h", "--scores", "scores", "--plan", "hidden_size=32", "--out", "out"],
    ["eval", "tiny-nemotron-h", "--data", "shakespeare", "--out", "out"],
], ids=lambda a: a[0])
def test_an_existing_out_is_refused_without_torch(tmp_path, args):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_bytes(b"the user's file\n")
    code, text, heavy = run_cli(*args, cwd=tmp_path)
    assert code == 2 and "--out out already exists and is not empty (mine.txt)" in text and "--overwrite" in text, text
    assert (tmp_path / "out" / "mine.txt").read_bytes() == b"the user's file\n"
    assert heavy == []


@pytest.mark.parametrize("plan,words", [
    ("hidden_size=abc", "hidden_size must be an integer"),
    ("plan.yaml", "plan file plan.yaml is not valid YAML"),
])
def test_a_malformed_plan_is_refused_without_torch(tmp_path, plan, words):
    (tmp_path / "plan.yaml").write_text("hidden_size: [\n")
    code, text, heavy = run_cli("prune", "--model", "tiny-nemotron-h", "--scores", "scores", "--plan", plan,
                                "--out", "out", cwd=tmp_path)
    assert code == 2 and words in text and "Traceback" not in text, text
    assert not (tmp_path / "out").exists()
    assert heavy == []


@pytest.mark.parametrize("args,words", [
    (["distill", "--teacher", "t", "--student", "s", "--data", "shakespeare", "--steps", "1", "--out", "out",
      "--lr", "inf"], "--lr must be a positive number, got inf"),
    (["search", "--model", "m", "--data", "shakespeare", "--params", "0.5x", "--out", "out", "--band", "nan"],
     "--band must be a fraction in [0, 1], got nan"),
    (["eval", "m", "--data", "shakespeare", "--task-limit", "inf"], "--task-limit must be a positive number, got inf"),
    (["demo", "--out", "out", "--target-params", "2"], "--target-params must be a fraction strictly between 0 and 1"),
], ids=lambda a: a[0] if isinstance(a, list) else None)
def test_a_bad_number_is_refused_without_torch(tmp_path, args, words):
    code, text, heavy = run_cli(*args, cwd=tmp_path)
    assert code == 2 and words in text, text
    assert not (tmp_path / "out").exists()
    assert heavy == []


@pytest.mark.parametrize("args", [
    ["calibrate", "--model", "tiny-nemotron-h", "--data", "{tmp}/missing.jsonl", "--out", "out"],
    ["tokenize", "--data", "{tmp}/missing.jsonl", "--tokenizer", "tiny-nemotron-h", "--out", "out"],
    ["search", "--model", "tiny-nemotron-h", "--data", "./missing.txt", "--params", "0.5x", "--out", "out"],
    ["distill", "--teacher", "tiny-nemotron-h", "--student", "tiny-nemotron-h", "--data",
     "{tmp}/a.jsonl:0.5,{tmp}/b.jsonl:0.5", "--steps", "1", "--out", "out"],
    ["eval", "tiny-nemotron-h", "--data", "~/no-such-dir-of-hybridprune/x.parquet"],
], ids=["calibrate", "tokenize", "search", "distill-mixture", "eval"])
def test_missing_data_is_refused_without_torch(tmp_path, args):
    """A `--data` that is plainly a path and is not there: refused at once, naming it."""
    code, text, heavy = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args], cwd=tmp_path)
    assert code == 2 and "data file not found" in text and "Traceback" not in text, text
    assert heavy == [] and not (tmp_path / "out").exists()
