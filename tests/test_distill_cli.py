"""`hybridprune distill` end to end on tiny checkpoints, and its errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hybridprune.cli import distill as distill_cli

from distill_helpers import tiny_nemotron_h

ASSETS = Path(__file__).resolve().parents[1] / "src" / "hybridprune" / "assets" / "tiny-nemotron-h"
VOCAB = 4096


def _app():
    app = typer.Typer()
    distill_cli.register(app)

    @app.callback()
    def _root():  # keep "distill" a subcommand, as in the real app
        pass

    return app


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    if not (ASSETS / "tokenizer.json").is_file():
        pytest.skip("the bundled tokenizer is not built")
    root = tmp_path_factory.mktemp("cli")
    for name, hidden, seed in (("teacher", 64, 0), ("student", 48, 1)):
        d = root / name
        tiny_nemotron_h(hidden=hidden, seed=seed, vocab=VOCAB).save_pretrained(d)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(ASSETS / f, d / f)
    words = "the king speaks of love and war while the fool laughs at night under a cold moon".split()
    with open(root / "corpus.jsonl", "w") as f:
        for i in range(400):
            text = " ".join(words[(i * 7 + j) % len(words)] for j in range(20 + i % 13)) + f" {i}."
            f.write(json.dumps({"text": text}) + "\n")
    return root


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "distill", "--teacher", str(root / "teacher"), "--student", str(root / "student"),
        "--data", str(root / "corpus.jsonl"), "--seq-len", "32", "--global-batch", "4", "--micro-batch", "2",
        "--lr", "1e-3", "--min-lr", "1e-4", "--warmup", "1", "--val-samples", "4", "--no-progress",
        "--out", str(out), *extra,
    ]


def test_cli_distills_stops_resumes_and_exports(dirs, tmp_path):
    runner = CliRunner()
    out = tmp_path / "student"
    common = ("--steps", "3", "--save-every", "1", "--keep-last", "2")
    res = runner.invoke(_app(), _args(dirs, out, *common, "--stop-at-step", "2"))
    assert res.exit_code == 0, res.output
    assert "--resume" in res.output and not (out / "config.json").exists()

    # the same command again: refused, the run exists
    res = runner.invoke(_app(), _args(dirs, out, *common))
    assert res.exit_code == 2 and "--resume" in res.output
    res = runner.invoke(_app(), _args(dirs, out, *common, "--resume", str(out)))
    assert res.exit_code == 0, res.output
    assert "resumed" in res.output
    for name in ("config.json", "model.safetensors", "tokenizer.json", "loss.png", "log.jsonl", "distill.json"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002", "step-00000003"]
    records = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert any("val_loss" in r for r in records)


@pytest.mark.parametrize(
    "extra,message",
    [
        ((), "exactly one of --steps and --tokens"),
        (("--steps", "2", "--tokens", "1e4"), "exactly one of --steps and --tokens"),
        (("--steps", "2", "--resume", "/nonexistent/run"), "does not exist"),
        (("--steps", "2", "--global-batch", "3"), "--global-batch (3) must be a multiple of --micro-batch (2)"),
    ],
)
def test_cli_bad_input(dirs, tmp_path, extra, message):
    res = CliRunner().invoke(_app(), _args(dirs, tmp_path / "o", *extra))
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())


def test_cli_missing_teacher_and_vocab_mismatch(dirs, tmp_path):
    args = _args(dirs, tmp_path / "o", "--steps", "1")
    args[args.index("--teacher") + 1] = str(tmp_path / "missing")
    res = CliRunner().invoke(_app(), args)
    assert res.exit_code == 2 and "does not exist" in " ".join(res.output.split())
    other = tmp_path / "teacher300"
    tiny_nemotron_h(hidden=64, vocab=VOCAB + 64).save_pretrained(other)
    args = _args(dirs, tmp_path / "o", "--steps", "1")
    args[args.index("--teacher") + 1] = str(other)
    res = CliRunner().invoke(_app(), args)
    assert res.exit_code == 2 and "vocabulary sizes differ" in " ".join(res.output.split())


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "hybridprune", "distill", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--teacher" in proc.stdout and "--resume" in proc.stdout


def test_warmup_longer_than_the_run_is_one_warning_line(dirs, tmp_path):
    """`--steps 2` with `--warmup 100`: one line says the LR only ramps up (to 2 % of --lr) and never
    decays; the run still trains. A warmup shorter than the run says nothing."""
    res = CliRunner().invoke(_app(), _args(dirs, tmp_path / "o", "--steps", "2", "--warmup", "100", "--val-samples", "0"))
    assert res.exit_code == 0, res.output
    lines = [x for x in res.output.splitlines() if "warning" in x]
    assert len(lines) == 1 and lines[0].startswith("warning: the warmup (100 steps) is not shorter than the run (2 steps)")
    assert "to 2% of the peak (2e-05)" in lines[0] and "never decays" in lines[0] and "--warmup (e.g. to 1)" in lines[0]
    res = CliRunner().invoke(_app(), _args(dirs, tmp_path / "p", "--steps", "2", "--val-samples", "0"))
    assert res.exit_code == 0 and "warning" not in res.output


def test_warmup_note_in_the_python_api():
    from hybridprune.distillation.schedule import warmup_note

    assert warmup_note(100, 101, 1e-4) is None and warmup_note(0, 3, 1e-4) is None
    assert "to 100% of the peak (0.0001)" in warmup_note(3, 3, 1e-4)
