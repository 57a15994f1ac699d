"""A finished output that was tampered with (a link planted at a name the command writes) is never
reused, and `--overwrite` really starts afresh: the link is removed as a link, its target untouched.
Through the command line: exit status, message, and the user's files byte-identical after."""

from __future__ import annotations

import json
import shutil

import pytest

from ckpt_helpers import invoke, refused, save_checkpoint, small_corpus
from hybridprune.data import tokenizer_path
from hybridprune.data.shards import MANIFEST_FILE
from hybridprune.output.atomic import MANIFEST
from trust_helpers import digests


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A finished token directory of the small corpus, and teacher logits computed on it."""
    root = tmp_path_factory.mktemp("reuse")
    small_corpus(root / "corpus.jsonl")
    r = _tokenize(root, root / "tokens")
    assert r.exit_code == 0, r.output
    save_checkpoint(root / "teacher")
    save_checkpoint(root / "student", seed=1)
    r = invoke(*_logits_args(root, root / "logits"))
    assert r.exit_code == 0, r.output
    return root


def _tokenize(root, out, *extra):
    return invoke("tokenize", "--data", root / "corpus.jsonl", "--tokenizer", tokenizer_path(), "--out", out, *extra)


def _logits_args(root, out):
    return ["teacher-logits", "--teacher", root / "teacher", "--data", root / "tokens", "--seq-len", "32",
            "--top-k", "16", "--num-samples", "40", "--batch-size", "4", "--device", "cpu", "--out", out]


def _text(r) -> str:
    return " ".join(r.output.replace("│", " ").split())


def _user_folder(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    (user / "0").mkdir()
    (user / "0" / "s0-00000.tok").write_bytes(b"\x01\x00" * 500)
    return user


def _shards(d):
    return {k: v for k, v in digests(d).items() if k.endswith((".tok", ".mask"))}


# ---- 1. tokenize: a tampered finished directory -----------------------------------------------------------

@pytest.mark.parametrize("listed", [True, False])
def test_tokenize_refuses_to_reuse_a_planted_split_link_and_overwrite_removes_only_the_link(root, tmp_path, listed):
    t1 = tmp_path / "t1"
    shutil.copytree(root / "tokens", t1, symlinks=True)
    user = _user_folder(tmp_path)
    shutil.rmtree(t1 / "train")
    (t1 / "train").symlink_to(user, target_is_directory=True)
    if not listed:  # the manifest edited too: the link is still at a name tokenize writes
        names = json.loads((t1 / MANIFEST).read_text())
        (t1 / MANIFEST).write_text(json.dumps([n for n in names if n != "train"]))
    before = digests(user)

    r = _tokenize(root, t1)
    refused(r, str(t1), "cannot be reused", "symbolic link", "pass --overwrite to start the tokenization afresh")
    assert "reusing" not in _text(r)
    assert (t1 / "train").is_symlink() and digests(user) == before

    r = _tokenize(root, t1, "--overwrite")
    assert r.exit_code == 0, r.output
    assert "reusing" not in _text(r)
    assert not (t1 / "train").is_symlink() and (t1 / "train").is_dir()
    assert digests(user) == before  # the link went, its target untouched
    assert _shards(t1) == _shards(root / "tokens")
    r = _tokenize(root, t1)  # now intact: reused
    assert r.exit_code == 0 and "reusing them" in _text(r), r.output


def test_tokenize_refuses_to_reuse_a_shard_replaced_by_a_link(root, tmp_path):
    t1 = tmp_path / "t1"
    shutil.copytree(root / "tokens", t1, symlinks=True)
    victim = tmp_path / "victim.bin"
    victim.write_bytes(bytes(range(256)) * 64)
    shard = sorted((t1 / "train").rglob("*.tok"))[0]
    shard.unlink()
    shard.symlink_to(victim)
    before = victim.read_bytes()
    r = _tokenize(root, t1)
    refused(r, "cannot be reused", "symbolic link", "--overwrite")
    r = _tokenize(root, t1, "--overwrite")
    assert r.exit_code == 0, r.output
    assert victim.read_bytes() == before and _shards(t1) == _shards(root / "tokens")


def test_tokenize_overwrite_rewrites_an_intact_finished_directory(root, tmp_path):
    t1 = tmp_path / "t1"
    shutil.copytree(root / "tokens", t1, symlinks=True)
    (t1 / MANIFEST_FILE).touch()
    stamp = (t1 / MANIFEST_FILE).stat().st_mtime_ns
    shard = sorted((t1 / "train").rglob("*.tok"))[0]
    shard.write_bytes(b"")  # not reused: rewritten, so this shard is whole again
    r = _tokenize(root, t1, "--overwrite")
    assert r.exit_code == 0 and "reusing" not in _text(r), r.output
    assert (t1 / MANIFEST_FILE).stat().st_mtime_ns != stamp
    assert _shards(t1) == _shards(root / "tokens")


# ---- 2. teacher-logits: a tampered cache ------------------------------------------------------------------

def test_a_planted_logits_link_is_refused_by_distill_and_removed_as_a_link_by_overwrite(root, tmp_path):
    tl2 = tmp_path / "tl2"
    shutil.copytree(root / "logits", tl2, symlinks=True)
    victim = tmp_path / "users-file.bin"
    victim.write_bytes((tl2 / "logp.bin").read_bytes())  # the right size: only the link gives it away
    (tl2 / "logp.bin").unlink()
    (tl2 / "logp.bin").symlink_to(victim)
    before = victim.read_bytes()

    r = invoke("distill", "--teacher", root / "teacher", "--student", root / "student", "--data", root / "tokens",
               "--seq-len", "32", "--global-batch", "4", "--micro-batch", "2", "--val-samples", "0",
               "--num-samples", "40", "--steps", "1", "--no-progress", "--teacher-logits", tl2,
               "--out", tmp_path / "run")
    refused(r, "symbolic link", "--overwrite in that directory")
    assert victim.read_bytes() == before

    r = invoke(*_logits_args(root, tl2), "--overwrite")  # the advice given: it works
    assert r.exit_code == 0, r.output
    assert not (tl2 / "logp.bin").is_symlink()
    assert (tl2 / "logp.bin").read_bytes() == (root / "logits" / "logp.bin").read_bytes()
    assert victim.read_bytes() == before


def test_without_overwrite_a_listed_link_is_still_refused(root, tmp_path):
    tl2 = tmp_path / "tl2"
    shutil.copytree(root / "logits", tl2, symlinks=True)
    victim = tmp_path / "users-file.bin"
    victim.write_bytes(b"mine")
    (tl2 / "logp.bin").unlink()
    (tl2 / "logp.bin").symlink_to(victim)
    r = invoke(*_logits_args(root, tl2))
    assert r.exit_code == 2, r.output
    assert victim.read_bytes() == b"mine" and (tl2 / "logp.bin").is_symlink()


# ---- 3. run: a link in a stage directory is named as a link -----------------------------------------------

R1 = """model: shipped:tiny-nemotron-h
dtype: float32
calibrate: {samples: 4, seq_len: 32, batch_size: 4, depth_samples: 0}
prune: {plan: "ffn_hidden_size=512,mamba_num_heads=12"}
"""


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_link_in_a_stage_directory_is_named_as_a_link(tmp_path, overwrite):
    (tmp_path / "r1.yaml").write_text(R1)
    out = tmp_path / "out"
    r = invoke("run", tmp_path / "r1.yaml", "--out", out)
    assert r.exit_code == 0, r.output
    user = tmp_path / "user"
    shutil.copytree(out / "02-prune" / "model", user)
    shutil.rmtree(out / "02-prune" / "model")
    (out / "02-prune" / "model").symlink_to(user, target_is_directory=True)
    (tmp_path / "r2.yaml").write_text(R1.replace("mamba_num_heads=12", "mamba_num_heads=8"))  # 02-prune reruns
    before = digests(user)
    r = invoke("run", tmp_path / "r2.yaml", "--out", out, *(["--overwrite"] if overwrite else []))
    refused(r, str(out / "02-prune"), "model as a symbolic link, which hybridprune never writes",
            "delete that link (its target is not touched)")
    assert "does not write" not in _text(r)
    assert digests(user) == before and (out / "02-prune" / "model").is_symlink()
