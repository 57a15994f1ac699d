"""The teacher's top-k logits of search's short-KD data (`--kd-topk`), computed once per process and
reused by every candidate, keyed by everything that decides them: the teacher's weights, every token of
the data (so its seed, seq-len, sample count, token directory and tokenizer) and k."""

from __future__ import annotations

from ..checkpoint.fingerprint import model_fingerprint

_TOPK_ONCE: dict = {}


def shared_topk(teacher, data, cfg):
    """The teacher's top-k logits of the short-KD data, computed on the first candidate and reused by the
    other K − 1 (the teacher and the data are the same for all of them)."""
    import torch

    from ..distillation import teacher_logits as tl
    from ..distillation.data import as_token_data
    from ..distillation.models import final_hidden, head_of
    from ..distillation.teacher_side import input_device

    td = as_token_data(data)
    # the teacher by its weights, not id(): a freed teacher's id can be reused by another model
    key = (model_fingerprint(teacher), _content_digest(td), int(cfg.kd_topk))
    if key not in _TOPK_ONCE:
        _TOPK_ONCE.clear()  # one search at a time: keep only the current teacher's
        dev = input_device(teacher)

        @torch.no_grad()
        def hidden(ids, mask):
            return final_hidden(teacher, ids.to(dev), None if mask is None else mask.to(dev))

        _TOPK_ONCE[key] = tl.compute(hidden, head_of(teacher), td, int(cfg.kd_topk),
                                     batch_size=max(1, cfg.micro_batch))
    return _TOPK_ONCE[key]


def _content_digest(td) -> str:
    """Every token of the short-KD data (small, held in memory), not `TokenData.fingerprint`'s few samples:
    another seed, seq-len, sample count, token directory or tokenizer never reuses logits."""
    import hashlib

    h = hashlib.sha256(f"{len(td)}x{td.seq_len}".encode())
    for s0 in range(0, len(td), 64):
        for t in td.batch(range(s0, min(s0 + 64, len(td)))):
            h.update(b"-" if t is None else t.to("cpu", copy=False).contiguous().numpy().tobytes())
    return h.hexdigest()
