"""Top-k teacher logits computed once and stored (`hybridprune teacher-logits`), or held in memory
(the search's K short distillations share one set).

A cache directory holds, for every training sample `i` (the samples `distill` draws from the same
token directory, `--seq-len`, `--seed` and `--num-samples`): `ids.bin` (int32 `[N, T, k]`),
`logp.bin` (float32 `[N, T, k]`, the teacher's log-probabilities of those ids) and `tail.bin`
(float32 `[N, T]`, the log of the mass of all other tokens), memory-mapped, and `manifest.json` with
the data's fingerprint, the token directory's and its tokenizer's, which a run checks before it loads
any model (`TeacherLogits.check_run`, `check`). Writing them (resumable) is `teacher_logits_store.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .config import DistillError

FORMAT = "hybridprune-teacher-logits/1"
MANIFEST_FILE = "manifest.json"
PROGRESS_FILE = "progress.json"
BINS = {"ids": (np.int32, 3), "logp": (np.float32, 3), "tail": (np.float32, 2)}  # name: dtype, dims


class TeacherLogits:
    """Top-k teacher logits of samples `0..N-1`; `lookup(indices)` gives `(ids, log p, log p_tail)`."""

    def __init__(self, ids, logp, tail, data_fingerprint: str, source: str = "memory"):
        self.ids, self.logp, self.tail = ids, logp, tail
        self.data_fingerprint = data_fingerprint
        self.k = int(ids.shape[-1])
        self.source = source

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

    def check(self, data_fingerprint: str, num_samples: int) -> None:
        if self.data_fingerprint != data_fingerprint or len(self) != num_samples:
            raise DistillError(
                f"the teacher logits in {self.source} were computed for other training data "
                f"({len(self)} samples, fingerprint {self.data_fingerprint}; now {num_samples}, {data_fingerprint}); "
                "compute them again with `hybridprune teacher-logits` and the same --data, --seq-len, --seed and "
                "--num-samples")

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

    @classmethod
    def open(cls, directory: str | Path) -> "TeacherLogits":
        d = Path(directory).expanduser()
        try:
            m = json.loads((d / "manifest.json").read_text())
        except (OSError, ValueError):
            if (d / PROGRESS_FILE).is_file():
                raise DistillError(f"{d} holds unfinished teacher logits; run the same `hybridprune teacher-logits` "
                                   "command again to finish them") from None
            raise DistillError(f"{d} holds no teacher logits (no readable manifest.json); write them with "
                               "`hybridprune teacher-logits`") from None
        if m.get("format") != FORMAT:
            raise DistillError(f"{d}/manifest.json is not a {FORMAT} manifest")
        n, t, k = m["num_samples"], m["seq_len"], m["k"]
        try:
            ids = np.memmap(d / "ids.bin", dtype=np.int32, mode="r", shape=(n, t, k))
            logp = np.memmap(d / "logp.bin", dtype=np.float32, mode="r", shape=(n, t, k))
            tail = np.memmap(d / "tail.bin", dtype=np.float32, mode="r", shape=(n, t))
        except (OSError, ValueError) as exc:
            raise DistillError(f"the teacher logits in {d} are damaged ({exc}); compute them again") from None
        out = cls(ids, logp, tail, m["data_fingerprint"], str(d))
        out.manifest = m
        return out


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
