"""`kill -9` at random points (seeded, a bounded number of trials) of prune and of distill's final
export: the output is absent or complete, a resumed distill leaves no temporary inside the student,
and the next run removes the temporaries the killed ones left next to the output."""

from __future__ import annotations

import random
import shutil
import signal

import pytest

from ckpt_helpers import PLAN, invoke, run_cli, siblings, small_corpus
from hybridprune.output import atomic as fsutil

pytestmark = pytest.mark.slow
TRIALS = 3


def _data(root):
    return small_corpus(root / "corpus.jsonl")


@pytest.fixture
def source(calibrated_checkpoint):
    """The session's calibrated checkpoint (conftest.py): read only."""
    return calibrated_checkpoint


def _complete(out):
    names = {p.name for p in out.iterdir()}
    return {"config.json", "model.safetensors", fsutil.MANIFEST, "tokenizer.json"} <= names


def test_kill_9_during_prune_leaves_no_output_or_a_complete_one(source, tmp_path):
    rng = random.Random(12)
    out = tmp_path / "pruned"
    args = ["prune", "--model", source / "model", "--scores", source / "scores", "--plan", PLAN, "--out", out]
    killed = 0
    for _ in range(TRIALS):
        proc = run_cli(args, audit_kill_at=rng.randint(1, 12), kill_under=str(tmp_path / ".pruned"))
        killed += proc.returncode == -signal.SIGKILL
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-2000:]
        if out.exists():
            assert _complete(out), sorted(p.name for p in out.iterdir())
            shutil.rmtree(out)
    assert killed  # the trials did hit the write
    result = invoke(*args)  # a clean run (in process: no kill to survive) completes and leaves nothing beside
    assert result.exit_code == 0, result.output
    assert _complete(out) and siblings(out) == []


def test_kill_9_during_distill_export_then_resume(source, tmp_path):
    from transformers import AutoModelForCausalLM

    rng = random.Random(7)
    for trial in range(TRIALS - 1):
        out = tmp_path / f"run{trial}"
        args = ["distill", "--teacher", source / "model", "--student", source / "model", "--data",
                _data(tmp_path),
                "--steps", "2", "--seq-len", "32", "--global-batch", "2", "--micro-batch", "2", "--val-samples",
                "0", "--no-progress", "--out", out]
        staging = str(tmp_path / f".{out.name}{fsutil.TMP_TAG}")
        proc = run_cli(args, audit_kill_at=rng.randint(1, 10), kill_under=staging)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        assert not (out / "config.json").exists()  # config.json goes last: no half export looks complete
        resumed = invoke(*args, "--resume", out)  # in process: only the killed run needs a process of its own
        assert resumed.exit_code == 0, resumed.output
        assert not [p.name for p in out.iterdir() if "tmp" in p.name]
        assert siblings(out) == []
        assert AutoModelForCausalLM.from_pretrained(out).config.hidden_size == 48
