"""Top-k teacher logits computed once and stored (`hybridprune teacher-logits`), or held in memory
(the search's K short distillations share one set).

A cache directory holds, for every training sample `i` (the samples `distill` draws from the same
token directory, `--seq-len`, `--seed` and `--num-samples`): `ids.bin` (int32 `[N, T, k]`),
`logp.bin` (float32 `[N, T, k]`, the teacher's log-probabilities of those ids) and `tail.bin`
(float32 `[N, T]`, the log of the mass of all other tokens), memory-mapped, and `manifest.json` with
the data's fingerprint, the token directory's and its tokenizer's, which a run checks before it loads
any model (`TeacherLogits.check_run`, `check`). Writing them (resumable) is `teacher_logits_store.py`.

A cache may come from someone else, so opening one checks it whole before it is trained on: the
manifest by shape (`MANIFEST_SHAPE`), the arrays by their fixed names inside the directory, never
through a link (`data.confined`), of exactly the recorded size, and their values (`check_values`, a
block of samples at a time, so a large mapped cache is never held in memory): ids inside the
vocabulary and distinct at each position, finite log-probabilities, and those probabilities with the
tail mass summing to one within `MASS_TOLERANCE`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from hybridprune.data.shards import TOKENIZER_SHAPE
from hybridprune.output.documents import DocumentError, NonNegative, OneOf, Optional, read_document

from .config import DistillError

FORMAT = "hybridprune-teacher-logits/1"
MANIFEST_FILE = "manifest.json"
PROGRESS_FILE = "progress.json"
BINS = {"ids": (np.int32, 3), "logp": (np.float32, 3), "tail": (np.float32, 2)}  # name: dtype, dims
#: what a cache's manifest (and the plan its progress record holds) must be; other keys are free
MANIFEST_SHAPE = {"format": OneOf(FORMAT), "num_samples": NonNegative(int), "seq_len": NonNegative(int),
                  "k": NonNegative(int), "data_fingerprint": str, "tokens_fingerprint?": Optional(str),
                  "tokenizer?": Optional(TOKENIZER_SHAPE), "batch_size?": NonNegative(int), "teacher_fingerprint?": Optional(str),
                  "vocab_size?": Optional(NonNegative(int)), "teacher?": str, "data?": str, "id?": str}
#: |Σ_k p + p_tail − 1| allowed at a position: the arrays are float32 of fp32 log-softmaxes, off by ~1e-6
MASS_TOLERANCE = 1e-2
#: ids (and log-probabilities) checked per block: about 16 MiB of each array at a time
CHECK_ELEMENTS = 1 << 22
_RECOMPUTE = "compute them again with `hybridprune teacher-logits` (with --overwrite in that directory)"
_checked: dict[tuple, tuple[int, tuple[int, int]]] = {}  # caches whose values passed, in this process


class TeacherLogits:
    """Top-k teacher logits of samples `0..N-1`; `lookup(indices)` gives `(ids, log p, log p_tail)`."""

    def __init__(self, ids, logp, tail, data_fingerprint: str, source: str = "memory"):
        self.ids, self.logp, self.tail = ids, logp, tail
        self.data_fingerprint = data_fingerprint
        self.k = int(ids.shape[-1])
        self.source = source
        self.max_id: int | None = None  # the largest id and (sample, position) where, once checked
        self.max_at: tuple[int, int] | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def lookup(self, indices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = np.asarray(list(indices), dtype=np.int64)
        out = []
        for a in (self.ids, self.logp, self.tail):
            if isinstance(a, np.ndarray):
                out.append(torch.from_numpy(np.array(a[idx])))
            else:
                out.append(a[torch.from_numpy(idx)])
        return tuple(out)

    def check(self, data_fingerprint: str, num_samples: int, seq_len: int | None = None) -> None:
        """The cache is of exactly these training windows; a difference names the setting that differs
        where the cache shows it (its length, its number of samples), else the data's fingerprint."""
        if self.data_fingerprint == data_fingerprint and len(self) == num_samples:
            return
        cached_len = int(self.ids.shape[1])
        if seq_len is not None and cached_len != seq_len:
            what = f"at --seq-len {cached_len}, not {seq_len}"
        elif len(self) != num_samples:
            what = f"for {len(self)} samples, not {num_samples} (--num-samples)"
        else:
            what = (f"for other training windows (fingerprint {self.data_fingerprint}, now {data_fingerprint}: "
                    "another --data, token directory or --seed)")
        raise DistillError(
            f"the teacher logits in {self.source} were computed {what}; compute them again with "
            "`hybridprune teacher-logits` and the same --data, --seq-len, --seed and --num-samples")

    def check_run(self, *, k: int | None, token_manifest: dict, tokenizer_identity: dict | None) -> None:
        """Before any model is loaded: the cache must be of this run's top-k, token directory and the
        student's tokenizer (caches written before these were recorded are checked on k only)."""
        m = getattr(self, "manifest", {})
        if k is not None and k != self.k:
            raise DistillError(f"--kd-topk {k}, but the teacher logits in {self.source} keep the top {self.k}; leave "
                               f"--kd-topk out, or compute them again with `hybridprune teacher-logits --top-k {k}`")
        have = m.get("tokenizer") or {}
        if have and tokenizer_identity:
            from hybridprune.data.identity import tokenizer_change

            change = tokenizer_change(have, tokenizer_identity, chat=bool(token_manifest.get("chat")))
            if change:
                raise DistillError(f"the teacher logits in {self.source} were computed on tokens written with {change}, "
                                   "not the student's tokenizer; compute them again on a token directory of the "
                                   "student's tokenizer")
        want = m.get("tokens_fingerprint")
        if want and token_manifest.get("fingerprint") != want:
            raise DistillError(f"the teacher logits in {self.source} were computed on another token directory "
                               f"({m.get('data')}, fingerprint {want}) than --data ({token_manifest.get('data')}, "
                               f"{token_manifest.get('fingerprint')}); compute them again with `hybridprune "
                               "teacher-logits` on this --data")

    def check_teacher(self, fingerprint: str | None, teacher) -> None:
        """Before any model is loaded: the cache must be of `teacher` (its checkpoint fingerprint), or the
        student would be distilled from another model's logits."""
        m = getattr(self, "manifest", {})
        have = m.get("teacher_fingerprint")
        if have and fingerprint and have != fingerprint:
            raise DistillError(f"the teacher logits in {self.source} were computed by another teacher "
                               f"({m.get('teacher')}, fingerprint {have}) than --teacher {teacher} (fingerprint "
                               f"{fingerprint}); compute them again with `hybridprune teacher-logits --teacher "
                               f"{teacher}`, or pass the --teacher they were computed with")

    @classmethod
    def open(cls, directory: str | Path) -> "TeacherLogits":
        """The cache in `directory`, checked: manifest, arrays and values (see the module docstring)."""
        d = Path(directory).expanduser()
        path = d / MANIFEST_FILE
        if not os.path.lexists(path):
            if os.path.lexists(d / PROGRESS_FILE):
                raise DistillError(f"{d} holds unfinished teacher logits; run the same `hybridprune teacher-logits` "
                                   "command again to finish them")
            raise DistillError(f"{d} holds no teacher logits (no manifest.json); write them with "
                               "`hybridprune teacher-logits`")
        try:
            m = read_document(path, MANIFEST_SHAPE, fix=_RECOMPUTE)
        except DocumentError as exc:
            raise DistillError(str(exc)) from None
        n, t, k = m["num_samples"], m["seq_len"], m["k"]
        if min(n, t, k) < 1:
            raise DistillError(f"{path}: num_samples, seq_len and k must be positive, got {n}, {t}, {k}; {_RECOMPUTE}")
        arrays = {name: map_array(d, name, (n, t, k)) for name in BINS}
        out = cls(arrays["ids"], arrays["logp"], arrays["tail"], m["data_fingerprint"], str(d))
        out.manifest = m
        out.check_values(m.get("vocab_size"))
        return out

    def check_values(self, vocab_size: int | None = None) -> None:
        """Refuse values no teacher gives, naming the first bad sample and position (see the module
        docstring); `vocab_size`, when known, bounds the ids. Records the largest id for `check_vocab`."""
        key = _identity(self.source, tuple(self.ids.shape)) if self.source != "memory" else None
        if key is not None and key in _checked:
            self.max_id, self.max_at = _checked[key]
        else:
            n, t, k = self.ids.shape
            step = max(1, CHECK_ELEMENTS // (t * k))
            best, at = -1, (0, 0)
            for s0 in range(0, n, step):
                ids, logp = np.asarray(self.ids[s0:s0 + step]), np.asarray(self.logp[s0:s0 + step])
                tail = np.asarray(self.tail[s0:s0 + step])
                _check_block(ids, logp, tail, s0, self.source)
                flat = int(ids.argmax())
                if int(ids.flat[flat]) > best:
                    best, at = int(ids.flat[flat]), (s0 + flat // (t * k), flat // k % t)
            self.max_id, self.max_at = best, at
            if key is not None:
                _checked[key] = (best, at)
        if vocab_size is not None:
            self.check_vocab(vocab_size)

    def check_vocab(self, vocab_size: int) -> None:
        """The cached ids must index the models' vocabulary (`vocab_size` rows of the head)."""
        recorded = getattr(self, "manifest", {}).get("vocab_size")
        if recorded is not None and recorded != vocab_size:
            raise DistillError(f"the teacher logits in {self.source} were computed by a head of {recorded} tokens, but "
                               f"the models' vocabulary has {vocab_size}; {_RECOMPUTE}")
        if self.max_id is not None and self.max_id >= vocab_size:
            i, p = self.max_at
            raise DistillError(f"the teacher logits in {self.source} are not valid at sample {i}, position {p}: token "
                               f"id {self.max_id} is outside the vocabulary of {vocab_size}; {_RECOMPUTE}")


def map_array(directory: Path, name: str, shape: tuple[int, int, int], mode: str = "r"):
    """The memory map of array `name` of a cache of `shape` `(n, t, k)`, opened inside `directory`
    without following a link ("r" or "r+"), refused unless it holds exactly that many values."""
    from hybridprune.data.confined import open_in

    dtype, dims = BINS[name]
    path = directory / f"{name}.bin"
    with open_in(directory, path.name, mode, what=f"the teacher logits' {path}", fix=_RECOMPUTE,
                 error=DistillError) as f:
        want = array_bytes(name, shape)
        size = os.fstat(f.fileno()).st_size
        if size != want:
            raise DistillError(f"the teacher logits' {path} holds {size} bytes, not the {want} its manifest's "
                               f"{shape[:dims]} gives; {_RECOMPUTE}")
        return np.memmap(f, dtype=dtype, mode=mode, shape=shape[:dims])


def array_bytes(name: str, shape: tuple[int, int, int]) -> int:
    """The size of array `name` of a cache of `shape` `(n, t, k)`."""
    dtype, dims = BINS[name]
    return int(np.prod(shape[:dims], dtype=object)) * np.dtype(dtype).itemsize


def _identity(directory: str, shape: tuple) -> tuple | None:
    """What identifies a cache's files on disk and their layout (so one checked in this process, as
    `distill` opens it twice, is not scanned again)."""
    try:
        stats = [os.stat(Path(directory) / f"{name}.bin", follow_symlinks=False) for name in BINS]
    except OSError:
        return None
    return (os.path.realpath(directory), shape, *((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for s in stats))


def _check_block(ids: np.ndarray, logp: np.ndarray, tail: np.ndarray, s0: int, source: str) -> None:
    """Refuse the first bad position of samples `s0..` (ids `[b, t, k]`, log p `[b, t, k]`, tail `[b, t]`)."""
    with np.errstate(over="ignore", invalid="ignore"):
        mass = np.exp(logp.astype(np.float64)).sum(-1) + np.exp(tail.astype(np.float64))
    ordered = np.sort(ids, axis=-1)
    checks = (
        ((ids < 0).any(-1), lambda ij: f"token id {int(ids[ij].min())} is negative"),
        ((ordered[..., 1:] == ordered[..., :-1]).any(-1),
         lambda ij: f"token id {_repeated(ordered[ij])} is given more than once among its top {ids.shape[-1]}"),
        (~np.isfinite(logp).all(-1), lambda ij: f"a log-probability is {_first_bad(logp[ij])}, not a finite number"),
        (np.isnan(tail) | (tail > 0), lambda ij: f"the tail's log-mass is {float(tail[ij])}, not a log-probability"),
        (~(np.abs(mass - 1) <= MASS_TOLERANCE),
         lambda ij: f"the top-k probabilities and the tail sum to {float(mass[ij]):.6g}, not 1"),
    )
    for bad, say in checks:
        if bad.any():
            i, p = np.argwhere(bad)[0]
            raise DistillError(f"the teacher logits in {source} are not valid at sample {s0 + int(i)}, position "
                               f"{int(p)}: {say((i, p))}; {_RECOMPUTE}")


def _repeated(row: np.ndarray) -> int:
    return int(row[1:][row[1:] == row[:-1]][0])


def _first_bad(row: np.ndarray) -> float:
    return float(row[~np.isfinite(row)][0])


@torch.no_grad()
def compute(teacher_hidden, head, data, k: int, *, batch_size: int = 4, device=None, sink=None, start: int = 0):
    """Top-k of every sample of `data` (a `TokenData`), a batch at a time. `teacher_hidden(ids, mask)`
    gives the final hidden states; `sink(start, ids, logp, tail)` receives each batch (default: kept
    in memory and returned as a `TeacherLogits`). `start` (a multiple of `batch_size`, with a sink)
    skips the samples a resumed write already holds: the batches are those of a run from 0."""
    from .topk import teacher_topk

    n, t = len(data), data.seq_len
    keep = sink is None
    if keep:
        k_eff = min(k, head.vocab_size)
        all_ids = torch.empty(n, t, k_eff, dtype=torch.int32)
        all_logp = torch.empty(n, t, k_eff, dtype=torch.float32)
        all_tail = torch.empty(n, t, dtype=torch.float32)
    for s0 in range(start, n, batch_size):
        rows = list(range(s0, min(n, s0 + batch_size)))
        ids, mask, _ = data.batch(rows)
        if device is not None:
            ids, mask = ids.to(device), mask.to(device)
        h = teacher_hidden(ids, None if bool(mask.all()) else mask)
        b = h.shape[0]
        top, logp, tail = teacher_topk(h.reshape(b * t, -1), head, k)
        top, logp, tail = top.view(b, t, -1).cpu(), logp.view(b, t, -1).float().cpu(), tail.view(b, t).float().cpu()
        if keep:
            all_ids[s0:s0 + b], all_logp[s0:s0 + b], all_tail[s0:s0 + b] = top, logp, tail
        else:
            sink(s0, top, logp, tail)
    if keep:
        return TeacherLogits(all_ids, all_logp, all_tail, data.fingerprint())
    return None
