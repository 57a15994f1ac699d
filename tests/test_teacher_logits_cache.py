"""The teacher-logits cache: `hybridprune teacher-logits` killed (SIGKILL) between batches resumes to the
bytes of an uninterrupted run; `distill --teacher-logits` refuses a cache of other data, another token
directory or tokenizer, or another k before it loads any model."""

from __future__ import annotations

import hashlib
import json
import random
import signal

import pytest

from ckpt_helpers import invoke, no_traceback, run_cli, save_checkpoint, small_corpus
from hybridprune.data import tokenizer_path
from hybridprune.data import tokenize as tk

@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("logits-cache")
    save_checkpoint(root / "teacher")
    save_checkpoint(root / "student", seed=1)
    save_checkpoint(root / "teacher-other", seed=2)
    corpus = small_corpus(root / "corpus.jsonl")
    tok = AutoTokenizer.from_pretrained(tokenizer_path())
    tk.tokenize_to(root / "tokens", str(corpus), tok)
    other = root / "other.jsonl"
    other.write_text("".join(json.dumps({"text": f"a quite different line number {i} of text"}) + "\n"
                             for i in range(300)))
    tk.tokenize_to(root / "other-tokens", str(other), tok)
    save_checkpoint(root / "student-other-tokenizer", seed=1)
    tok.add_tokens(["<extra>"])  # another tokenizer definition
    tok.save_pretrained(root / "student-other-tokenizer")
    r = invoke(*_logits_args(root, root / "logits"))
    assert r.exit_code == 0, r.output
    return root


def _logits_args(root, out, data=None):
    return ["teacher-logits", "--teacher", root / "teacher", "--data", data or root / "tokens", "--seq-len", "32",
            "--top-k", "16", "--num-samples", "40", "--batch-size", "4", "--device", "cpu", "--out", out]


def _digests(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_teacher_logits_killed_between_batches_resume_to_the_same_bytes(root, tmp_path):
    want = _digests(root / "logits")
    assert {"ids.bin", "logp.bin", "tail.bin", "manifest.json"} <= set(want) and "progress.json" not in want
    rng = random.Random(5)
    for trial, at in enumerate((3, rng.randint(6, 22))):  # before the first record, and between batches
        out = tmp_path / f"run{trial}"
        proc = run_cli(_logits_args(root, out), audit_kill_at=at, kill_under=str(out))
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        assert not (out / "manifest.json").exists()
        r = invoke("distill", "--teacher", root / "teacher", "--student", root / "student", "--data", root / "tokens",
                   "--teacher-logits", out, "--seq-len", "32", "--num-samples", "40", "--steps", "1",
                   "--out", tmp_path / "early")
        assert r.exit_code == 2 and no_traceback(r) and not (tmp_path / "early").exists()
        assert "unfinished teacher logits" in r.output or "no teacher logits" in r.output
        resumed = invoke(*_logits_args(root, out))  # in process: only the killed run needs a process of its own
        assert resumed.exit_code == 0, resumed.output[-2000:]
        assert _digests(out) == want


def test_unfinished_cache_of_other_settings_is_refused_untouched(root, tmp_path):
    out = tmp_path / "logits"
    r = invoke(*_logits_args(root, out))
    assert r.exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").unlink()  # as a kill leaves it: the arrays and a progress record
    (out / "progress.json").write_text(json.dumps({"plan": manifest, "done": 8}))
    before = _digests(out)
    r = invoke(*_logits_args(root, out, root / "other-tokens"))
    assert r.exit_code == 2 and no_traceback(r)
    assert "unfinished teacher logits of other settings" in r.output and "token directory" in r.output
    assert _digests(out) == before
    r = invoke(*_logits_args(root, out))  # the same command finishes it
    assert r.exit_code == 0, r.output
    assert "continuing" in r.output and not (out / "progress.json").exists()


def _distill(root, out, *extra):
    return invoke("distill", "--teacher", root / "teacher", "--student", root / "student", "--seq-len", "32",
                  "--global-batch", "4", "--micro-batch", "2", "--val-samples", "0", "--num-samples", "40",
                  "--steps", "1", "--no-progress", "--teacher-logits", root / "logits", "--out", out, *extra)


@pytest.mark.parametrize("extra, message", [
    (("--data", "tokens", "--kd-topk", "8"), "--kd-topk 8, but the teacher logits"),
    (("--data", "tokens", "--seed", "5"), "computed for other training windows"),
    (("--data", "tokens", "--seq-len", "16"), "computed at --seq-len 32, not 16"),  # the setting is named
    (("--data", "other-tokens"), "computed on another token directory"),
    (("--data", "tokens", "--student", "student-other-tokenizer"), "computed on tokens written with another tokenizer"),
    (("--data", "tokens", "--teacher", "teacher-other"), "computed by another teacher"),
])
def test_distill_refuses_a_mismatched_cache_before_loading_any_model(root, tmp_path, monkeypatch, extra, message):
    from hybridprune.stages import distill as distill_stage

    def no_model(*a, **kw):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(distill_stage, "_load_models", no_model)
    args = [root / x if x.endswith(("tokens", "tokenizer", "-other")) else x for x in extra]
    r = _distill(root, tmp_path / "run", *args)
    assert r.exit_code == 2 and no_traceback(r), r.output
    assert message in r.output and not (tmp_path / "run").exists()


def test_distill_names_both_teachers_and_the_fix(root, tmp_path):
    """A cache of another teacher: refused with exit 2 before anything is written, naming the cache's
    teacher and --teacher and the two ways out; the cache itself untouched."""
    before = _digests(root / "logits")
    r = _distill(root, tmp_path / "run", "--data", root / "tokens", "--teacher", root / "teacher-other")
    assert r.exit_code == 2 and no_traceback(r), r.output
    text = " ".join(r.output.split())
    assert f"({root / 'teacher'}, fingerprint" in text and f"--teacher {root / 'teacher-other'} (fingerprint" in text
    assert "hybridprune teacher-logits --teacher" in text and "pass the --teacher they were computed with" in text
    assert not (tmp_path / "run").exists() and _digests(root / "logits") == before
    r = _distill(root, tmp_path / "ok", "--data", root / "tokens")  # the right teacher: accepted
    assert r.exit_code == 0, r.output


def test_a_user_directory_is_refused_untouched(root, tmp_path):
    """As every command: a non-empty --out of the user's is refused, with --overwrite too (exit 2)."""
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.tex").write_text("x")
    for extra, message in (((), "already exists and is not empty (a.tex, sub)"),
                           (("--overwrite",), "holds files hybridprune did not write (a.tex, sub)")):
        r = invoke(*_logits_args(root, d), *extra)
        assert r.exit_code == 2 and no_traceback(r) and message in r.output
        assert sorted(p.name for p in d.iterdir()) == ["a.tex", "sub"] and (d / "a.tex").read_text() == "x"
    r = invoke(*_logits_args(root, tmp_path / "again"))
    assert r.exit_code == 0
    r = invoke(*_logits_args(root, tmp_path / "again"), "--overwrite")  # its own earlier output: replaced
    assert r.exit_code == 0 and _digests(tmp_path / "again") == _digests(root / "logits")


def test_a_shipped_teacher_name_is_fingerprinted_like_its_directory():
    """`--teacher tiny-qwen3-5` must be checked against the cache as its directory is (the name once gave
    no fingerprint, and the check was skipped: a cache of another teacher was used silently)."""
    from hybridprune.cli.distill import checkpoint_identity
    from hybridprune.data.assets import teacher_path

    for name in ("tiny-nemotron-h", "tiny-qwen3-5"):
        by_name = checkpoint_identity(name)
        assert by_name is not None and by_name == checkpoint_identity(teacher_path(name))
    assert checkpoint_identity("tiny-nemotron-h") != checkpoint_identity("tiny-qwen3-5")
