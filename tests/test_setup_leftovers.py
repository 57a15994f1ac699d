"""Every resumable writer killed in its setup (while recording its output names, before its first
progress record) leaves only its own entries and a dead process's temporary: the same command run again
takes the directory over (exit 0, no temporary left) instead of refusing it as "not empty". Checked for
distill's, search's and the recipe runner's run directories (tokenize's and teacher-logits' have kill
tests of their own)."""

from __future__ import annotations

import json

import pytest

from ckpt_helpers import invoke, save_checkpoint, small_corpus
from hybridprune.output.atomic import MANIFEST, TMP_TAG

DEAD_PID = 2**22 + 12345  # beyond the default pid_max: no live process has it


def _killed_in_setup(out, owned=()):
    """What a kill leaves: the output manifest being written (`owned` empty), or written and a progress
    record's temporary (of a dead process) next to it."""
    out.mkdir(parents=True)
    if not owned:
        (out / f"{MANIFEST}.tmp-{DEAD_PID}").write_text("[")
        return
    (out / MANIFEST).write_text(json.dumps(sorted(owned)))
    (out / f".progress.json{TMP_TAG}{DEAD_PID}").write_text("{")


def _no_temporaries(out):
    return not [p.name for p in out.iterdir() if TMP_TAG in p.name or ".tmp-" in p.name]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("leftovers")
    save_checkpoint(root / "teacher")
    save_checkpoint(root / "student", seed=1)
    small_corpus(root / "corpus.jsonl")
    return root


@pytest.mark.parametrize("owned", [(), ("tokens", "checkpoints", "log.jsonl")])
def test_distill_takes_over_what_a_kill_in_setup_left(models, tmp_path, owned):
    out = tmp_path / "run"
    _killed_in_setup(out, owned)
    r = invoke("distill", "--teacher", models / "teacher", "--student", models / "student", "--data",
               models / "corpus.jsonl", "--seq-len", "32", "--global-batch", "2", "--micro-batch", "2",
               "--val-samples", "0", "--num-samples", "8", "--steps", "1", "--no-progress", "--out", out)
    assert r.exit_code == 0, r.output
    assert (out / "config.json").is_file() and _no_temporaries(out)


@pytest.mark.parametrize("owned", [(), ("settings.json", "scores")])
def test_search_takes_over_what_a_kill_in_setup_left(models, tmp_path, owned):
    out = tmp_path / "search"
    _killed_in_setup(out, owned)
    r = invoke("search", "--model", models / "teacher", "--out", out, "--params", "0.9x", "--top-k", "1",
               "--kd-steps", "1", "--kd-batch", "2", "--max-candidates", "2", "--skip", "attention_heads", "--data", "shakespeare",
               "--eval-samples", "2", "--eval-seq-len", "32", "--calib-samples", "2", "--depth-samples", "2",
               "--batch-size", "2", "--divisors", "hidden=8,ffn=16,head_dim=2", "--no-speed")
    assert r.exit_code == 0, r.output
    assert (out / "best.yaml").is_file() and _no_temporaries(out)


def test_run_takes_over_what_a_kill_in_setup_left(tmp_path):
    out = tmp_path / "out"
    _killed_in_setup(out)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: shipped:tiny-nemotron-h\ndtype: float32\n"
                      "calibrate: {samples: 4, seq_len: 32, batch_size: 4}\n"
                      "prune: {plan: 'ffn_hidden_size=512'}\n")
    r = invoke("run", recipe, "--out", out)
    assert r.exit_code == 0, r.output
    assert (out / "recipe.yaml").is_file() and _no_temporaries(out)
