"""A resumable output is written by one command at a time, and only through names hybridprune wrote.

- `claim` (every command that grows a directory: search, distill, tokenize, teacher-logits, run) refuses
  a name it is about to write that is already there and not listed in the directory's manifest: a
  file, folder or symbolic link of someone else's is never written through or over.
- search, distill, tokenize and teacher-logits hold their output's lock while they write: a second
  command on the same output is refused at once, naming the first one's PID; a killed one's lock is
  taken over by the rerun.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ckpt_helpers import SRC, invoke, refused, save_checkpoint, small_corpus
from trust_helpers import digests
from hybridprune.data import tokenizer_path
from hybridprune.output.atomic import MANIFEST, ManifestError, OutputError, claim, remove_owned
from hybridprune.output.lock import LOCK

DEAD_PID = 2**22 + 4321  # beyond the default pid_max: no live process has it
HOLD = """import sys, time
from hybridprune.output.lock import locked
with locked(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""



def _files(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("locks")
    save_checkpoint(root / "model")
    small_corpus(root / "corpus.jsonl")
    r = invoke("tokenize", "--data", root / "corpus.jsonl", "--tokenizer", tokenizer_path(), "--out", root / "tokens")
    assert r.exit_code == 0, r.output
    victim = root / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("my thesis\n")
    return root


# ---- claim -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("planted", ["file", "folder", "link"])
def test_claim_refuses_a_name_hybridprune_did_not_write(root, tmp_path, planted):
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps(["search.json"]))
    if planted == "file":
        (out / "best.yaml").write_text("my plan\n")
    elif planted == "folder":
        (out / "scores").mkdir()
    else:
        (out / "best.yaml").symlink_to(root / "victim" / "thesis.tex")
    before = digests(out)
    with pytest.raises(OutputError, match="which hybridprune did not write .* Move it away, or choose another"):
        claim(out, ["search.json", "best.yaml", "scores"])
    assert digests(out) == before


def test_claim_keeps_what_is_legitimately_there(tmp_path):
    """A resumed run's own listed names, names not there yet, and checkpoints the user named (adopt)
    are claimed; a listed link stays refused, and an adopted name is never a link."""
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps(["log.jsonl"]))
    (out / "log.jsonl").write_text("{}\n")
    (out / "checkpoints").mkdir()
    claim(out, ["log.jsonl", "loss.png", "checkpoints"], adopt=["checkpoints"])
    assert json.loads((out / MANIFEST).read_text()) == ["checkpoints", "log.jsonl", "loss.png"]
    assert remove_owned(out, keep=["checkpoints"]) == ["log.jsonl"]  # what is kept stays recorded
    assert json.loads((out / MANIFEST).read_text()) == ["checkpoints"]
    (out / "tensorboard").symlink_to(tmp_path)
    with pytest.raises(OutputError, match="tensorboard"):
        claim(out, ["tensorboard"], adopt=["tensorboard"])
    (out / MANIFEST).write_text(json.dumps(["checkpoints", "tensorboard"]))
    with pytest.raises(ManifestError, match="symbolic link"):
        claim(out, ["tensorboard"])


def test_search_resumed_in_a_directory_with_a_planted_link_writes_nothing_through_it(root, tmp_path):
    """A search directory from elsewhere (its settings listed as hybridprune's) with `best.yaml` a link
    to the user's file: refused when the search claims its names, the file and directory untouched."""
    out = tmp_path / "search"
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps(["search.json"]))
    (out / "search.json").write_text("{}\n")
    (out / "best.yaml").symlink_to(root / "victim" / "thesis.tex")
    before, victim = digests(out), digests(root / "victim")
    r = invoke("search", "--model", root / "model", "--data", root / "corpus.jsonl", "--out", out, "--params", "0.9x",
               "--calib-samples", "2", "--eval-samples", "2", "--eval-seq-len", "16", "--depth-samples", "0",
               "--max-candidates", "2", "--no-speed")
    refused(r, f"{out} already holds best.yaml, which hybridprune did not write", "Move it away")
    assert digests(out) == before and digests(root / "victim") == victim


def test_tokenize_resumed_with_a_planted_split_folder_isrefused(root, tmp_path):
    """An unfinished tokenization of the same plan, whose `train` is a link the run did not write."""
    from transformers import AutoTokenizer

    from hybridprune.data.shards import PROGRESS_FILE
    from hybridprune.data.tokenize import plan

    out = tmp_path / "tokens"
    out.mkdir()
    the_plan = plan(str(root / "corpus.jsonl"), AutoTokenizer.from_pretrained(tokenizer_path()))
    (out / MANIFEST).write_text(json.dumps([PROGRESS_FILE]))
    (out / PROGRESS_FILE).write_text(json.dumps({"plan": the_plan["id"], "position": [0, 0, 0], "streams": {},
                                                 "max_token_id": 0}))  # a well-formed record of no progress
    (out / "train").symlink_to(root / "victim", target_is_directory=True)
    before, victim = digests(out), digests(root / "victim")
    r = invoke("tokenize", "--data", root / "corpus.jsonl", "--tokenizer", tokenizer_path(), "--out", out)
    refused(r, f"{out} already holds train, which hybridprune did not write")
    assert digests(out) == before and digests(root / "victim") == victim


# ---- one writer per output -------------------------------------------------------------------------------------

def _commands(root: Path, out: Path) -> dict[str, list]:
    return {
        "tokenize": ["tokenize", "--data", root / "corpus.jsonl", "--tokenizer", tokenizer_path(), "--out", out],
        "search": ["search", "--model", root / "model", "--data", root / "corpus.jsonl", "--out", out,
                   "--params", "0.9x", "--calib-samples", "2", "--eval-seq-len", "16"],
        "distill": ["distill", "--teacher", root / "model", "--student", root / "model", "--data", root / "tokens",
                    "--steps", "1", "--seq-len", "16", "--global-batch", "2", "--micro-batch", "2",
                    "--val-samples", "0", "--no-progress", "--out", out],
        "teacher-logits": ["teacher-logits", "--teacher", root / "model", "--data", root / "tokens", "--seq-len", "16",
                           "--top-k", "4", "--num-samples", "4", "--device", "cpu", "--out", out],
    }


@pytest.mark.parametrize("command", ["tokenize", "search", "distill", "teacher-logits"])
def test_a_second_command_on_the_same_output_is_refused_naming_the_first(root, tmp_path, command):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(SRC)))
    try:
        assert holder.stdout.readline().strip() == "held"
        before = digests(out)
        r = invoke(*_commands(root, out)[command])
        refused(r, f"{out} is being written by another hybridprune command (PID {holder.pid})")
        assert digests(out) == before  # its lock, and nothing else
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_commands_lock_is_taken_over(root, tmp_path):
    """A tokenization killed right after taking its lock (or after finishing, before removing it)
    leaves the lock file: the same command run again finishes, to the bytes of an uninterrupted run."""
    want = _files(root / "tokens")
    for state in ("locked", "finished"):
        out = tmp_path / state
        if state == "finished":
            import shutil

            shutil.copytree(root / "tokens", out)
        else:
            out.mkdir()
        (out / LOCK).write_text(f"{DEAD_PID}\n")
        r = invoke(*_commands(root, out)["tokenize"])
        assert r.exit_code == 0, r.output
        assert _files(out) == want, state
