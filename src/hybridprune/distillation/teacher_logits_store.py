"""Writing a teacher-logits cache (`hybridprune teacher-logits`) so that a killed run resumes.

The three arrays of `teacher_logits.py` are laid out at their final size in the output directory and
filled a batch at a time. Every few batches they are flushed and `progress.json` records how many
samples are done and what is being computed (the plan: data, token directory, tokenizer, k, batch
size, teacher). The same command run again continues after the last recorded batch with the batches
an uninterrupted run computes, so the files end byte-identical to it. `manifest.json`, the only file
readers trust, is written last; `progress.json` is then removed.

A resumed write takes from `progress.json` only its plan and count (checked by shape); the arrays'
names are the cache's own (`BINS`), opened inside the directory without following a link
(`teacher_logits.map_array`): a link planted under one of them is refused, never written through.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np

from hybridprune.data.confined import open_in
from hybridprune.data.tokenize import atomic_json
from hybridprune.output.documents import DocumentError, NonNegative, read_document

from .config import DistillError
from .teacher_logits import BINS, FORMAT, MANIFEST_FILE, MANIFEST_SHAPE, PROGRESS_FILE, array_bytes, compute, map_array

#: the files a cache directory holds, for the output manifest (`output.atomic.claim`)
FILES = (MANIFEST_FILE, PROGRESS_FILE, *(f"{name}.bin" for name in BINS))
#: plan keys that may differ between two runs computing the same bytes (the teacher decides `vocab_size`)
_INCIDENTAL = ("id", "teacher", "data", "num_samples_asked", "vocab_size")
#: `progress.json`: the plan being computed and how many samples are done
PROGRESS_SHAPE = {"plan": MANIFEST_SHAPE, "done": NonNegative(int)}
_RESTART = "pass --overwrite to start afresh (it replaces only what hybridprune wrote)"


def plan(windows, token_manifest: dict, k: int, /, *, batch_size: int, teacher_fingerprint: str | None = None,
         **meta) -> dict:
    """What a cache of `windows` (a `TokenData` of a token directory's windows) is; `id` hashes the parts
    that decide its bytes."""
    p = {"format": FORMAT, "num_samples": len(windows), "seq_len": windows.seq_len, "k": int(k),
         "data_fingerprint": windows.fingerprint(), "tokens_fingerprint": token_manifest.get("fingerprint"),
         "tokenizer": token_manifest.get("tokenizer"), "batch_size": int(batch_size),
         "teacher_fingerprint": teacher_fingerprint, **meta}
    p["id"] = _plan_id(p)
    return p


def _plan_id(p: dict) -> str:
    kept = {key: v for key, v in p.items() if key not in _INCIDENTAL}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_progress(directory: str | Path) -> dict | None:
    """The plan and sample count of an unfinished cache in `directory` (None if there is none), checked
    by shape; a DistillError says what is wrong."""
    path = Path(directory) / PROGRESS_FILE
    if not os.path.lexists(path):
        return None
    try:
        return read_document(path, PROGRESS_SHAPE, fix=_RESTART)
    except DocumentError as exc:
        raise DistillError(str(exc)) from None


def has_progress(directory: str | Path) -> bool:
    """`directory` holds a progress record (an unfinished cache, kept when a command fails)."""
    return os.path.lexists(Path(directory) / PROGRESS_FILE)


def unfinished(directory: str | Path) -> bool:
    """`directory` holds what a cache write killed before it finished leaves (`output.leftovers`)."""
    from hybridprune.output.leftovers import unfinished as leftover

    return leftover(directory, FILES, done=MANIFEST_FILE)


def remove_temporaries(directory: str | Path) -> None:
    """The temporaries a killed write left in `directory` (their process is gone)."""
    from hybridprune.output.leftovers import remove_dead_temporaries

    remove_dead_temporaries(directory)


def same_work(a: dict, b: dict, *, ignore: tuple[str, ...] = ()) -> list[str]:
    """The plan fields in which `a` and `b` differ (teacher path, `--num-samples` as asked and the id
    aside), skipping `ignore`."""
    skip = set(_INCIDENTAL) | set(ignore)
    return sorted(key for key in set(a) | set(b) if key not in skip and a.get(key) != b.get(key))


#: resume records (flush + fsync) a run writes at most, evenly spaced in batches: a kill loses at most
#: ~1/RECORDS of the work, and the records' cost stays bounded however many batches there are. Counted in
#: batches, not seconds, so where a run records (and where a kill can land) is the same on every machine.
RECORDS = 256


def write(directory: Path, teacher_hidden, head, data, the_plan: dict, *, device=None, say=None) -> dict:
    """Compute the cache of `data` into `directory`, continuing its `progress.json` when it holds this
    plan; returns the manifest."""
    n, t, k = the_plan["num_samples"], the_plan["seq_len"], the_plan["k"]
    batch = the_plan["batch_size"]
    progress = read_progress(directory)
    done = int(progress["done"]) if progress and progress["plan"].get("id") == the_plan["id"] else 0
    if done > n or (done % batch and done != n):  # not a count this plan's batches reach: start afresh
        done = 0
    progress_path = directory / PROGRESS_FILE
    maps = _open(directory, (n, t, k)) if done else None
    if maps is None:  # a fresh start (also when an array is missing or of another size): recorded first
        done = 0
        atomic_json(progress_path, {"plan": the_plan, "done": 0})
        maps = _create(directory, (n, t, k))
    if done and say:
        say(f"continuing the unfinished teacher logits in {directory} at sample {done:,} of {n:,}")

    every = max(1, -(-n // batch) // RECORDS)  # batches between two records

    def sink(s0, ids, logp, tail):
        b = ids.shape[0]
        maps["ids"][s0:s0 + b] = ids.numpy()
        maps["logp"][s0:s0 + b] = logp.numpy()
        maps["tail"][s0:s0 + b] = tail.numpy()
        if ((s0 + b) // batch) % every:
            return  # not a record's turn: a kill now recomputes these batches, with the same bytes
        for m in maps.values():
            m.flush()
        atomic_json(progress_path, {"plan": the_plan, "done": s0 + b})

    compute(teacher_hidden, head, data, k, batch_size=batch, device=device, sink=sink, start=done)
    for m in maps.values():
        m.flush()
    manifest = dict(the_plan)
    atomic_json(directory / MANIFEST_FILE, manifest)
    progress_path.unlink(missing_ok=True)
    return manifest


def _open(directory: Path, shape: tuple[int, int, int]) -> dict | None:
    """The arrays of an unfinished cache, to continue them (None when one is missing or of another size);
    an array that is a link, not a regular file or has another name is refused."""
    maps = {}
    for name in BINS:
        try:
            info = os.stat(directory / f"{name}.bin", follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISREG(info.st_mode) and info.st_size != array_bytes(name, shape):
            return None
        maps[name] = map_array(directory, name, shape, "r+")
    return maps


def _create(directory: Path, shape: tuple[int, int, int]) -> dict:
    """New zeroed arrays of `shape` (an entry of an array's name is replaced, a link never followed)."""
    maps = {}
    for name, (dtype, dims) in BINS.items():
        with open_in(directory, f"{name}.bin", "new", what=f"the teacher logits' {directory / name}.bin",
                     fix=_RESTART, error=DistillError) as f:
            maps[name] = np.memmap(f, dtype=dtype, mode="w+", shape=shape[:dims])
    return maps
