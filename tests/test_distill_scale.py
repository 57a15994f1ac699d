"""Distillation at scale through the command line: token directories read by offset, text tokenized
once into the run directory (not again on --resume), calibrate reading a token directory, the plain
log lines a cluster log gets."""

from __future__ import annotations

import json

import pytest

from ckpt_helpers import invoke, no_traceback, save_checkpoint, small_corpus
from hybridprune.data import tokenizer_path
from hybridprune.data.shards import MANIFEST_FILE


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    save_checkpoint(root / "model")
    small_corpus(root / "corpus.jsonl")
    assert invoke("tokenize", "--data", root / "corpus.jsonl", "--tokenizer", tokenizer_path(),
                  "--out", root / "tokens").exit_code == 0
    return root


def _distill(root, out, data, *extra):
    return invoke("distill", "--teacher", root / "model", "--student", root / "model", "--data", data,
                  "--seq-len", "32", "--global-batch", "2", "--micro-batch", "2", "--val-samples", "2",
                  "--no-progress", "--out", out, *extra)


def _losses(out):
    return [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]


def test_distill_reads_a_token_directory_and_text_gives_the_same_run(root, tmp_path):
    a = _distill(root, tmp_path / "a", root / "tokens", "--steps", "3")
    assert a.exit_code == 0, a.output
    assert not (tmp_path / "a" / "tokens").exists()
    b = _distill(root, tmp_path / "b", root / "corpus.jsonl", "--steps", "3", "--num-proc", "2")
    assert b.exit_code == 0, b.output
    assert (tmp_path / "b" / "tokens" / MANIFEST_FILE).is_file()
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    # tokenized in two processes inside distill: the shards `tokenize` wrote in one, byte for byte
    shards = sorted(p.relative_to(root / "tokens") for p in (root / "tokens").rglob("*.tok"))
    assert shards and all((root / "tokens" / f).read_bytes() == (tmp_path / "b" / "tokens" / f).read_bytes()
                          for f in shards)


def test_resume_reuses_the_run_tokens_and_continues_exactly(root, tmp_path):
    whole = _distill(root, tmp_path / "whole", root / "corpus.jsonl", "--steps", "4")
    assert whole.exit_code == 0, whole.output
    out = tmp_path / "run"
    first = _distill(root, out, root / "corpus.jsonl", "--steps", "4", "--stop-at-step", "2")
    assert first.exit_code == 0, first.output
    shard = next((out / "tokens" / "train").iterdir())
    stamp = shard.stat().st_mtime_ns
    second = _distill(root, out, root / "corpus.jsonl", "--steps", "4", "--resume", out)
    assert second.exit_code == 0, second.output
    assert "reusing" in second.output and shard.stat().st_mtime_ns == stamp
    assert _losses(out) == _losses(tmp_path / "whole")


def test_calibrate_reads_a_token_directory(root, tmp_path):
    r = invoke("calibrate", "--model", root / "model", "--data", root / "tokens", "--samples", "4", "--seq-len", "32",
               "--depth-samples", "0", "--out", tmp_path / "scores")
    assert r.exit_code == 0, r.output
    r = invoke("calibrate", "--model", root / "model", "--data", root / "tokens", "--samples", "4", "--seq-len",
               "100000", "--depth-samples", "0", "--out", tmp_path / "s2")
    assert r.exit_code == 2 and no_traceback(r) and "fewer than one sample" in r.output
    assert not (tmp_path / "s2").exists()


def test_chat_flag_on_a_token_directory_is_refused(root, tmp_path):
    r = _distill(root, tmp_path / "c", root / "tokens", "--steps", "1", "--chat")
    assert r.exit_code == 2 and no_traceback(r) and "already tokenized" in r.output and "drop --chat" in " ".join(r.output.split())
    assert not (tmp_path / "c").exists()


def test_log_file_gets_one_plain_line_per_logged_step(root, tmp_path):
    out = tmp_path / "log"
    r = invoke("distill", "--teacher", root / "model", "--student", root / "model", "--data", root / "tokens",
               "--seq-len", "32", "--global-batch", "2", "--micro-batch", "2", "--val-samples", "2",
               "--steps", "3", "--out", out)  # CliRunner's output is not a terminal: no bar, plain lines
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("step ")]
    assert [ln.split()[1] for ln in lines if "tok/s" in ln] == ["1/3", "2/3", "3/3"]
    assert all(k in lines[0] for k in ("tokens 64", "loss ", "tok/s ", "lr ", "eta "))
    assert any("val_loss" in ln for ln in lines)
    assert "━" not in r.output  # no progress bar characters
    assert len(_losses(out)) == 3


def test_report_to_needs_the_package_and_writes_through_it(root, tmp_path, monkeypatch):
    import sys
    import types

    r = _distill(root, tmp_path / "x", root / "tokens", "--steps", "1", "--report-to", "wandb")
    assert r.exit_code == 2 and no_traceback(r) and "pip install wandb" in r.output and not (tmp_path / "x").exists()
    r = _distill(root, tmp_path / "x", root / "tokens", "--steps", "1", "--report-to", "mlflow")
    assert r.exit_code == 2 and "not one of tensorboard, wandb" in r.output

    logged, runs = [], []

    class Run:
        def log(self, rec, step):
            logged.append((step, rec))

        def finish(self):
            runs.append("finished")

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: runs.append(kw) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    out = tmp_path / "w"
    r = _distill(root, out, root / "tokens", "--steps", "2", "--report-to", "wandb")
    assert r.exit_code == 0, r.output
    assert runs[0]["project"] == "hybridprune" and runs[-1] == "finished"
    assert [s for s, rec in logged if "loss" in rec] == [1, 2] and any("val_loss" in rec for _, rec in logged)


def test_the_first_step_reads_only_its_windows(tmp_path, monkeypatch):
    """What `distill` does with the data before its first step (the windows, their fingerprint, the
    epoch's order, step 1's batch) maps only the shards those windows lie in: the time to the first
    step does not grow with the corpus (docs/benchmarks.md)."""
    import numpy as np
    from transformers import AutoTokenizer

    from hybridprune.cli.distill import _train_data
    from hybridprune.data import tokenize as tk
    from hybridprune.distillation.data import GlobalBatches, as_token_data

    corpus = small_corpus(tmp_path / "corpus.jsonl")
    m = tk.tokenize_to(tmp_path / "tokens", str(corpus), AutoTokenizer.from_pretrained(tokenizer_path()),
                       shard_tokens=64)
    n_shards = len(m["splits"]["train"]["0"]["shards"])
    opened = []
    real = np.memmap

    def counting(path, *a, **kw):
        opened.append(str(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(np, "memmap", counting)
    data = as_token_data(_train_data(tmp_path / "tokens", 32, 0, None))
    data.fingerprint()
    batches = GlobalBatches(len(data), 4, seed=0)
    for mb in batches.micro_batches(0, 0, 1, 2):
        data.batch(mb)
    assert n_shards > 100 and 0 < len(set(opened)) <= 2 * (5 + 4)  # 5 fingerprint windows, 4 samples
