"""Teacher-logit caches from others are hostile: `teacher-logits` resuming an unfinished cache never
writes through a planted link nor takes file names from its record; `distill --teacher-logits` reads
only the cache's own arrays, checks the manifest's shape, and refuses values no teacher gives (ids
outside the vocabulary or repeated, log-probabilities that are not finite or not a distribution),
naming the sample and position, before any model is loaded."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from ckpt_helpers import invoke, no_traceback, save_checkpoint, small_corpus
from hybridprune.data import tokenizer_path
from hybridprune.data import tokenize as tk
from hybridprune.distillation import teacher_logits as tl
from trust_helpers import digests, touches

SHAPE = (40, 32, 16)  # samples, positions, k


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("trust-logits")
    save_checkpoint(root / "teacher")
    save_checkpoint(root / "student", seed=1)
    tk.tokenize_to(root / "tokens", str(small_corpus(root / "corpus.jsonl")),
                   AutoTokenizer.from_pretrained(tokenizer_path()))
    r = invoke(*_logits_args(root, root / "logits"))
    assert r.exit_code == 0, r.output
    return root


def _logits_args(root, out):
    return ["teacher-logits", "--teacher", root / "teacher", "--data", root / "tokens", "--seq-len", "32",
            "--top-k", "16", "--num-samples", "40", "--batch-size", "4", "--device", "cpu", "--out", out]


def _distill(root, cache, out):
    return invoke("distill", "--teacher", root / "teacher", "--student", root / "student", "--data", root / "tokens",
                  "--seq-len", "32", "--global-batch", "4", "--micro-batch", "2", "--val-samples", "0",
                  "--num-samples", "40", "--steps", "1", "--no-progress", "--teacher-logits", cache, "--out", out)


def _text(r) -> str:
    return " ".join(r.output.split())


def _copy(root, tmp_path, name="cache"):
    out = tmp_path / name
    shutil.copytree(root / "logits", out, symlinks=True)
    return out


def _unfinished(cache, done: int = 8, **extra) -> dict:
    """`cache` as a kill leaves it: arrays and a progress record of `done` samples, no manifest."""
    manifest = json.loads((cache / tl.MANIFEST_FILE).read_text())
    (cache / tl.MANIFEST_FILE).unlink()
    progress = {"plan": manifest, "done": done, **extra}
    (cache / tl.PROGRESS_FILE).write_text(json.dumps(progress))
    return progress


@pytest.mark.parametrize("case, message", [
    ("array link", "lists 'ids.bin', which is a symbolic link there"),
    ("link at a fresh start", "lists 'ids.bin', which is a symbolic link there"),
    ("hard link", "logp.bin has 1 other name(s) (a hard link)"),
    ("progress link", "progress.json: is a symbolic link, and hybridprune never writes one"),
    ("names in the record", None),  # the record's names are not read: resumed to the clean bytes
])
def test_teacher_logits_resume_stays_inside_its_directory(root, tmp_path, case, message):
    """Links and `..` names planted in an unfinished cache: the rerun of the same command writes,
    reads and deletes nothing outside it; refused with exit 2 in words (a link among the files the
    output manifest lists is refused before the cache is opened), or finished to the bytes of an
    uninterrupted run."""
    want = digests(root / "logits")
    cache = _copy(root, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.bin"
    progress = _unfinished(cache, done=0 if case == "link at a fresh start" else 8)
    if case in ("array link", "link at a fresh start"):
        shutil.copy(cache / "ids.bin", victim)  # the right size: only the link gives it away
        (cache / "ids.bin").unlink()
        (cache / "ids.bin").symlink_to(victim)
    elif case == "hard link":
        shutil.copy(cache / "logp.bin", victim)
        (cache / "logp.bin").unlink()
        os.link(victim, cache / "logp.bin")
    elif case == "progress link":
        victim.write_text(json.dumps(progress))
        (cache / tl.PROGRESS_FILE).unlink()
        (cache / tl.PROGRESS_FILE).symlink_to(victim)
    else:
        victim.write_bytes(b"\0" * 64)
        progress.update(files={"ids": "../outside/victim.bin", "logp": str(victim)})
        (cache / tl.PROGRESS_FILE).write_text(json.dumps(progress))
    before = digests(outside)
    with touches(outside) as hits:
        r = invoke(*_logits_args(root, cache))
    assert no_traceback(r), r.output
    assert digests(outside) == before and not hits, hits
    if message is None:
        assert r.exit_code == 0, r.output
        assert {k: v for k, v in digests(cache).items() if k.endswith(".bin")} == \
            {k: v for k, v in want.items() if k.endswith(".bin")}
    else:
        assert r.exit_code == 2 and message in _text(r), r.output
        assert not (cache / tl.MANIFEST_FILE).exists()


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_cache_arrays_are_never_opened_through_a_link(root, tmp_path, mode):
    """Below the output manifest's own check: an array that is a link, or (for writing) has another
    name, is refused by the code that maps it, reader and resumed writer alike."""
    cache = _copy(root, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(cache / "ids.bin", outside / "ids.bin")
    (cache / "ids.bin").symlink_to(outside / "ids.bin")
    before = digests(outside)
    with touches(outside) as hits, pytest.raises(tl.DistillError, match="ids.bin is a symbolic link"):
        tl.map_array(cache, "ids", SHAPE, mode)
    (cache / "ids.bin").unlink()
    os.link(outside / "ids.bin", cache / "ids.bin")
    if mode == "r+":
        with pytest.raises(tl.DistillError, match="other name"):
            tl.map_array(cache, "ids", SHAPE, mode)
    assert not hits and digests(outside) == before


@pytest.mark.parametrize("case", ["array link", "manifest link", "split arrays"])
def test_cache_readers_stay_inside_the_directory(root, tmp_path, monkeypatch, case):
    """A cache whose array or manifest is a link out of it (to valid-looking bytes), or an array
    that is a directory: refused (exit 2) before any model is loaded, and the files outside never
    opened."""
    from hybridprune.stages import distill as distill_stage

    monkeypatch.setattr(distill_stage, "_load_models", lambda *a, **k: pytest.fail("a model was loaded"))
    cache = _copy(root, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    if case == "array link":
        shutil.move(cache / "tail.bin", outside / "tail.bin")
        (cache / "tail.bin").symlink_to(outside / "tail.bin")
        message = "tail.bin is a symbolic link"
    elif case == "manifest link":
        shutil.move(cache / tl.MANIFEST_FILE, outside / tl.MANIFEST_FILE)
        (cache / tl.MANIFEST_FILE).symlink_to(outside / tl.MANIFEST_FILE)
        message = "manifest.json: is a symbolic link"
    else:
        shutil.move(cache / "ids.bin", outside / "ids.bin")
        (cache / "ids.bin").mkdir()
        message = "ids.bin is not a regular file"
    before = digests(outside)
    with touches(outside) as hits:
        r = _distill(root, cache, tmp_path / "run")
    assert r.exit_code == 2 and no_traceback(r) and message in _text(r), r.output
    assert not hits and digests(outside) == before and not (tmp_path / "run").exists()


def _poke(name, where, value):
    def edit(arrays):
        arrays[name][where] = value
    return edit


def _repeat(arrays):
    arrays["ids"][3, 5, :] = arrays["ids"][3, 5, 0]


def _uniform_zero(arrays):
    arrays["logp"][3, 5, :] = 0.0


@pytest.mark.parametrize("edit, message", [
    (_poke("ids", (3, 5, 0), 5000), "token id 5000 is outside the vocabulary of 4096"),
    (_poke("ids", (3, 5, 2), -1), "token id -1 is negative"),
    (_repeat, "is given more than once among its top 16"),
    (_poke("logp", (3, 5, 1), np.nan), "a log-probability is nan, not a finite number"),
    (_poke("logp", (3, 5, 1), -np.inf), "a log-probability is -inf, not a finite number"),
    (_uniform_zero, "the top-k probabilities and the tail sum to 16"),
    (_poke("logp", (3, 5, 0), -0.01), "the top-k probabilities and the tail sum to 1.9"),
    (_poke("tail", (3, 5), np.nan), "the tail's log-mass is nan"),
    (_poke("tail", (3, 5), 1.0), "the tail's log-mass is 1.0, not a log-probability"),
])
@pytest.mark.parametrize("block", [tl.CHECK_ELEMENTS, 32 * 16])  # one block, and one sample per block
def test_cache_values_are_checked_when_it_is_opened(root, tmp_path, monkeypatch, edit, message, block):
    """Values no teacher gives are refused (exit 2) when the cache is opened, before any model is
    loaded, naming the sample and position and the command that recomputes them."""
    from hybridprune.stages import distill as distill_stage

    monkeypatch.setattr(distill_stage, "_load_models", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.setattr(tl, "CHECK_ELEMENTS", block)
    cache = _copy(root, tmp_path)
    arrays = {name: np.memmap(cache / f"{name}.bin", dtype=dtype, mode="r+", shape=SHAPE[:dims])
              for name, (dtype, dims) in tl.BINS.items()}
    edit(arrays)
    for a in arrays.values():
        a.flush()
    before = digests(cache)
    r = _distill(root, cache, tmp_path / "run")
    assert r.exit_code == 2 and no_traceback(r), r.output
    text = _text(r)
    assert "are not valid at sample 3, position 5: " in text and message in text, r.output
    assert "compute them again with `hybridprune teacher-logits`" in text
    assert digests(cache) == before and not (tmp_path / "run").exists()


def test_an_id_past_the_models_vocabulary_is_refused_in_a_cache_without_one(root, tmp_path):
    """A cache that records no vocabulary (written before it was recorded): its largest id is checked
    against the models' head as soon as they are loaded, before any step."""
    cache = _copy(root, tmp_path)
    m = json.loads((cache / tl.MANIFEST_FILE).read_text())
    assert m.pop("vocab_size") == 4096
    (cache / tl.MANIFEST_FILE).write_text(json.dumps(m))
    ids = np.memmap(cache / "ids.bin", dtype=np.int32, mode="r+", shape=SHAPE)
    ids[7, 2, 3] = 9999
    ids.flush()
    r = _distill(root, cache, tmp_path / "run")
    assert r.exit_code == 2 and no_traceback(r), r.output
    assert "not valid at sample 7, position 2: token id 9999 is outside the vocabulary of 4096" in _text(r)
    assert not list((tmp_path / "run").glob("checkpoint*")) if (tmp_path / "run").exists() else True


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(k="16"), "k: expected a non-negative integer, got \"16\""),
    (lambda m: m.update(num_samples=0), "num_samples, seq_len and k must be positive"),
    (lambda m: m.update(format="other/1"), "format: expected one of"),
    (lambda m: m.update(tokenizer=3), "tokenizer: expected an object, got 3"),
    (lambda m: m.update(data_fingerprint=None), "data_fingerprint: expected a string"),
    (lambda m: m.update(seq_len=64), "ids.bin holds 81920 bytes, not the 163840"),
])
def test_cache_manifest_of_the_wrong_shape_is_refused_in_words(root, tmp_path, edit, message):
    cache = _copy(root, tmp_path)
    m = json.loads((cache / tl.MANIFEST_FILE).read_text())
    edit(m)
    (cache / tl.MANIFEST_FILE).write_text(json.dumps(m))
    r = _distill(root, cache, tmp_path / "run")
    assert r.exit_code == 2 and no_traceback(r), r.output
    assert message in _text(r) and "hybridprune teacher-logits" in _text(r)


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.update(done="8"), "done: expected a non-negative integer"),
    (lambda p: p.update(plan=[]), "plan: expected an object"),
    (lambda p: p["plan"].update(k=None), "plan.k: expected a non-negative integer"),
])
def test_teacher_logits_progress_of_the_wrong_shape_is_refused_in_words(root, tmp_path, edit, message):
    cache = _copy(root, tmp_path)
    progress = _unfinished(cache)
    edit(progress)
    (cache / tl.PROGRESS_FILE).write_text(json.dumps(progress))
    before = digests(cache)
    r = invoke(*_logits_args(root, cache))
    assert r.exit_code == 2 and no_traceback(r), r.output
    assert message in _text(r) and "pass --overwrite to start afresh" in _text(r)
    assert digests(cache) == before
    if "done" in message:  # --overwrite starts afresh (once: each run computes the whole cache)
        r = invoke(*_logits_args(root, cache), "--overwrite")
        assert r.exit_code == 0, r.output
