"""How many samples `hybridprune teacher-logits` runs through the teacher at once when `--batch-size` is
left out: 16,384 tokens' worth, except that an unfinished cache continues with its own batch size (the
batches decide the bytes), so the same command finishes a cache begun with another default."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from ckpt_helpers import invoke, save_checkpoint, small_corpus
from hybridprune.cli.teacher_logits import BATCH_TOKENS, default_batch_size
from hybridprune.data import tokenize as tk
from hybridprune.data import tokenizer_path


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("logits-batching")
    save_checkpoint(root / "teacher")
    tk.tokenize_to(root / "tokens", str(small_corpus(root / "corpus.jsonl")),
                   AutoTokenizer.from_pretrained(tokenizer_path()))
    return root


def _args(root, out, *extra):
    return ["teacher-logits", "--teacher", root / "teacher", "--data", root / "tokens", "--seq-len", "32",
            "--top-k", "16", "--num-samples", "40", "--device", "cpu", "--out", out, *extra]


def _digests(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


def test_default_batch_is_a_token_budget():
    assert BATCH_TOKENS == 16_384
    assert default_batch_size(4096) == 4 and default_batch_size(64) == 256 and default_batch_size(100_000) == 1
    assert default_batch_size(64, {"plan": {"batch_size": 4}}) == 4
    for bad in (0, -1, True, "4", None, 2.0):  # a record that names no batch size: the budget
        assert default_batch_size(64, {"plan": {"batch_size": bad}}) == 256


def test_without_batch_size_the_command_batches_by_tokens(root, tmp_path):
    r = invoke(*_args(root, tmp_path / "logits"))
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "logits" / "manifest.json").read_text())["batch_size"] == BATCH_TOKENS // 32


def test_an_unfinished_cache_continues_with_its_own_batch_size(root, tmp_path):
    """Begun with 4 samples a batch (the old default), finished by the command without --batch-size:
    the bytes of an uninterrupted run of 4 a batch."""
    whole = tmp_path / "whole"
    assert invoke(*_args(root, whole, "--batch-size", "4")).exit_code == 0
    want = _digests(whole)
    out = tmp_path / "unfinished"
    shutil.copytree(whole, out)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").unlink()  # as a kill leaves it: the arrays and a progress record
    (out / "progress.json").write_text(json.dumps({"plan": manifest, "done": 8}))
    for name in ("ids.bin", "logp.bin", "tail.bin"):  # the samples after the record not yet written
        data = bytearray((out / name).read_bytes())
        data[len(data) // 2:] = bytes(len(data) - len(data) // 2)
        (out / name).write_bytes(bytes(data))
    r = invoke(*_args(root, out))
    assert r.exit_code == 0, r.output
    assert "continuing" in r.output and not (out / "progress.json").exists()
    assert _digests(out) == want
