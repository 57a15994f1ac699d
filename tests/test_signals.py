"""SIGINT and SIGTERM: distill stops after the current step with a resumable checkpoint and exits 130 /
143; a signal that arrives while a checkpoint is written is never swallowed; other commands stop with
the same exit codes and leave nothing half-written."""

from __future__ import annotations

import os
import signal

import pytest

from ckpt_helpers import PLAN, invoke, no_traceback, save_checkpoint, siblings, small_corpus
from hybridprune.distillation import checkpoint as ckpt_mod
from hybridprune.distillation.trainer import Distiller


def _data(root):
    return small_corpus(root / "corpus.jsonl")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("signals") / "model")


def _distill(model, out, *extra, progress="--no-progress"):
    data = _data(model.parent)
    return invoke("distill", "--teacher", model, "--student", model, "--data", data, "--steps", "4",
                  "--seq-len", "32", "--global-batch", "2", "--micro-batch", "2", "--val-samples", "0",
                  progress, "--out", out, *extra)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_distill_stops_with_a_checkpoint(model, tmp_path, monkeypatch, signum, code):
    original = Distiller.train_step

    def step_then_signal(self):
        rec = original(self)
        if self.step == 2:
            os.kill(os.getpid(), signum)
        return rec

    monkeypatch.setattr(Distiller, "train_step", step_then_signal)
    out = tmp_path / "run"
    result = _distill(model, out)
    assert result.exit_code == code, result.output
    assert no_traceback(result)
    text = " ".join(result.output.split())
    assert f"interrupted by {signal.Signals(signum).name} at step 2/4" in text and f"--resume {out}" in text
    assert [s for s, _ in ckpt_mod.list_checkpoints(out / "checkpoints")] == [2]
    assert not (out / "config.json").exists()

    monkeypatch.setattr(Distiller, "train_step", original)
    resumed = _distill(model, out, "--resume", out)
    assert resumed.exit_code == 0, resumed.output
    assert (out / "config.json").is_file() and not siblings(out)


@pytest.mark.parametrize("progress", ["--progress", "--no-progress"])
def test_ctrl_c_during_a_checkpoint_write_is_not_swallowed(model, tmp_path, monkeypatch, progress):
    original = ckpt_mod.write_checkpoint
    calls = []

    def write_with_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # lands while the first checkpoint is being written
        return original(*args, **kwargs)

    monkeypatch.setattr(ckpt_mod, "write_checkpoint", write_with_interrupt)
    out = tmp_path / "run"
    result = _distill(model, out, "--save-every", "1", progress=progress)
    assert result.exit_code == 130, result.output
    assert "interrupted by SIGINT at step 2/4" in " ".join(result.output.split())
    found = ckpt_mod.list_checkpoints(out / "checkpoints")
    assert [step for step, _ in found] == [1, 2]
    assert [ckpt_mod.validate_checkpoint(path)["step"] for _, path in found] == [1, 2]
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp-")]


def test_a_second_signal_stops_at_once(model, tmp_path, monkeypatch):
    original = Distiller.train_step

    def twice(self):
        rec = original(self)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        return rec

    monkeypatch.setattr(Distiller, "train_step", twice)
    result = _distill(model, tmp_path / "run")
    assert result.exit_code == 143 and "stopped at once" in result.output and no_traceback(result)


@pytest.mark.parametrize("in_memory", [False, True])
def test_sigterm_during_prune_leaves_nothing(model, tmp_path, monkeypatch, in_memory):
    from transformers import PreTrainedModel

    from hybridprune.checkpoint.files import ShardWriter

    scores = tmp_path / "scores"
    assert invoke("calibrate", "--model", model, "--data", _data(model.parent), "--samples", "4", "--seq-len", "32",
                  "--depth-samples", "0", "--out", scores).exit_code == 0
    original = PreTrainedModel.save_pretrained

    def save_then_term(self, path, *args, **kwargs):
        original(self, path, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    close = ShardWriter.close

    def close_then_term(self):  # the streaming prune writes its shards itself
        close(self)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_then_term)
    monkeypatch.setattr(ShardWriter, "close", close_then_term)
    out = tmp_path / "pruned"
    result = invoke("prune", "--model", model, "--scores", scores, "--plan", PLAN, "--out", out,
                    *(["--in-memory"] if in_memory else []))
    assert result.exit_code == 143 and no_traceback(result), result.output
    assert "interrupted by SIGTERM" in result.output
    assert not out.exists() and not siblings(out)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored after the command
