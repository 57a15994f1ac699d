"""Top-k teacher logits: the teacher's distribution kept as its `k` most likely tokens plus the mass
of all the others (the tail), so that it is stored in `k` (id, log-prob) pairs and one number per
position instead of `V` logits, and the KL stays a proper divergence.

With `K` the teacher's top-k ids at a position, `p` the teacher's and `q` the student's softmax
(temperature 1), the loss is the forward KL between the two distributions over `K ∪ {tail}`:

    KL_k = Σ_{j∈K} p_j (log p_j − log q_j) + p_tail (log p_tail − log q_tail),
    p_tail = 1 − Σ_{j∈K} p_j,   q_tail = 1 − Σ_{j∈K} q_j.

It is >= 0, 0 only when the student matches the teacher on K and on the tail's mass, and equals the
full KL when k = V. Its gradient in the student's logits is `q − t`, with `t_j = p_j` on K and
`t_j = q_j · p_tail / q_tail` off K (the tail mass spread as the student spreads it).

As in `chunked_loss.py`, the head is applied a chunk of positions at a time and the gradients of the
student's hidden states and head are folded in at once, so no `[positions, V]` buffer outlives a chunk.
"""

from __future__ import annotations

import contextlib

import torch

from .chunked_loss import _chunks, _head_logits, auto_chunk_size
from .loss import Head, upcast


def _log_tail(z: torch.Tensor, idx: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """log of the softmax mass off `idx`, computed without cancellation."""
    rest = z.scatter(1, idx, float("-inf"))
    return torch.logsumexp(rest, dim=-1) - lse


@torch.no_grad()
def teacher_topk(hidden: torch.Tensor, head: Head, k: int, *, chunk: int | None = None,
                 dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(ids int32 [n, k], log p fp32 [n, k], log p_tail fp32 [n])` of hidden states `[n, H]`."""
    n = hidden.shape[0]
    k = min(int(k), head.vocab_size)
    dtype = dtype or head.weight.dtype
    chunk = chunk or auto_chunk_size(head.vocab_size, hidden.device)
    w = head.weight.detach().to(dtype)
    b = None if head.bias is None else head.bias.detach().to(dtype)
    acc = torch.promote_types(dtype, torch.float32)
    ids = torch.empty(n, k, dtype=torch.int32, device=hidden.device)
    logp = torch.empty(n, k, dtype=acc, device=hidden.device)
    tail = torch.empty(n, dtype=acc, device=hidden.device)
    for s0, s1 in _chunks(n, chunk):
        z = _head_logits(hidden[s0:s1].to(dtype), w, b, head.scale)
        lse = torch.logsumexp(z, dim=-1)
        vals, top = torch.topk(z, k, dim=-1)
        ids[s0:s1] = top.to(torch.int32)
        logp[s0:s1] = vals - lse.unsqueeze(1)
        tail[s0:s1] = _log_tail(z, top, lse) if k < head.vocab_size else float("-inf")
    return ids, logp, tail


def _chunk(hc, w, b, scale, idx, logp, ltail, tgt, *, coefs: tuple[float, float], need_grad: bool):
    kd_coef, ce_coef = coefs
    z = _head_logits(hc, w, b, scale)
    logp, ltail = logp.to(z.dtype), ltail.to(z.dtype)
    lse = torch.logsumexp(z, dim=-1)
    log_q = z - lse.unsqueeze(1)
    idx = idx.long()
    lq_k = log_q.gather(1, idx)
    lq_tail = _log_tail(z, idx, lse)
    p_k, p_tail = logp.exp(), ltail.exp()
    floor = torch.finfo(z.dtype).min
    kl = (p_k * (logp - lq_k)).sum(-1)
    kl = kl + torch.where(p_tail > 0, p_tail * (ltail - lq_tail.clamp(min=floor)), 0.0)
    kd_sum = kl.sum()
    ce_sum = z.new_zeros(())
    if tgt is not None:
        valid = tgt != -100
        safe = tgt.clamp_min(0).unsqueeze(1)
        ce_sum = ((lse - z.gather(1, safe).squeeze(1)) * valid.float()).sum()
    g = None
    if need_grad:
        q = log_q.exp()
        # off K: q_j − q_j·p_tail/q_tail, in log space (log q_j <= log q_tail there)
        safe_tail = torch.where(torch.isfinite(lq_tail), lq_tail, torch.zeros_like(lq_tail))
        g = q - (log_q - safe_tail.unsqueeze(1) + ltail.unsqueeze(1)).exp()
        g.scatter_(1, idx, q.gather(1, idx) - p_k)
        g.mul_(kd_coef)
        if tgt is not None:
            g.add_(q * (ce_coef * valid.float()).unsqueeze(1))
            g.scatter_add_(1, safe, (-ce_coef * valid.float()).unsqueeze(1))
        if scale != 1.0:
            g.mul_(scale)
    return kd_sum, ce_sum, g


class _TopKLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, idx, logp, ltail, targets, scale, kd_coef, ce_coef, chunk, dtype):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        w = weight.detach().to(dtype)
        b = None if bias is None else bias.detach().to(dtype)
        grad_h = torch.empty_like(h) if need_h else None
        acc = torch.promote_types(dtype, torch.float32)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b else None
        kd_total = torch.zeros((), dtype=acc, device=h.device)
        ce_total = torch.zeros_like(kd_total)
        for s0, s1 in _chunks(h.shape[0], chunk):
            hc = h[s0:s1].detach().to(dtype)
            tgt = targets[s0:s1] if targets is not None else None
            kd, ce, g = _chunk(hc, w, b, scale, idx[s0:s1], logp[s0:s1], ltail[s0:s1], tgt, coefs=(kd_coef, ce_coef),
                               need_grad=need_h or need_w or need_b)
            kd_total += kd
            ce_total += ce
            if g is not None:
                gc = g.to(dtype)
                if need_h:
                    grad_h[s0:s1] = (gc @ w).to(h.dtype)
                if need_w:
                    grad_w += (gc.t() @ hc).to(acc)
                if need_b:
                    grad_b += gc.sum(0).to(acc)
        ctx.save_for_backward(grad_h, None if grad_w is None else grad_w.to(weight.dtype),
                              None if grad_b is None else grad_b.to(bias.dtype))
        ctx.mark_non_differentiable(kd_total, ce_total)
        return kd_coef * kd_total + ce_coef * ce_total, kd_total, ce_total

    @staticmethod
    def backward(ctx, g_loss, _g_kd, _g_ce):
        grads = [None if g is None else g * g_loss.to(g.dtype) for g in ctx.saved_tensors]
        return (*grads, None, None, None, None, None, None, None, None, None)


def topk_kd_loss(student_hidden: torch.Tensor, student_head: Head, teacher: tuple, attention_mask=None,
                 input_ids=None, *, kd_weight: float = 1.0, ce_weight: float = 0.0, chunk_size: int | None = None,
                 kd_normalizer: float | None = None, ce_normalizer: float | None = None,
                 compute_dtype: torch.dtype | None = None):
    """`(loss, kd_sum, ce_sum)` from student hidden states `[B, T, H]` and the teacher's top-k
    `(ids [B, T, k], log p [B, T, k], log p_tail [B, T])`; positions where `attention_mask` is 0 are left
    out (the same conventions as `chunked_kd_loss`)."""
    from .loss import next_token_targets

    B, T, H = student_hidden.shape
    keep = None if attention_mask is None else attention_mask.reshape(-1).bool()

    def select(x, width=None):
        x = x.reshape(B * T, *(() if width is None else (width,)))
        return x if keep is None else x[keep]

    k = teacher[0].shape[-1]
    h = select(student_hidden, H)
    idx, logp, ltail = select(teacher[0], k), upcast(select(teacher[1], k)), upcast(select(teacher[2]))
    idx, logp, ltail = idx.to(h.device), logp.to(h.device), ltail.to(h.device)
    n_kd = h.shape[0]
    targets = None
    n_ce = 0
    if ce_weight > 0:
        targets = select(next_token_targets(input_ids, attention_mask))
        n_ce = int((targets != -100).sum())
    kd_coef = kd_weight / float(kd_normalizer if kd_normalizer is not None else max(n_kd, 1))
    ce_coef = ce_weight / float(ce_normalizer if ce_normalizer is not None else max(n_ce, 1)) if ce_weight > 0 else 0.0
    dtype = compute_dtype or student_head.weight.dtype
    chunk = chunk_size or auto_chunk_size(student_head.vocab_size, h.device)
    ctx = (torch.autocast(device_type=h.device.type, enabled=False) if torch.is_autocast_enabled(h.device.type)
           else contextlib.nullcontext())
    with ctx:
        if torch.is_grad_enabled():
            return _TopKLoss.apply(h, student_head.weight, student_head.bias, idx, logp, ltail, targets,
                                   float(student_head.scale), kd_coef, ce_coef, int(chunk), dtype)
        with torch.no_grad():
            w = student_head.weight.detach().to(dtype)
            b = None if student_head.bias is None else student_head.bias.detach().to(dtype)
            kd_t = torch.zeros((), dtype=torch.promote_types(dtype, torch.float32), device=h.device)
            ce_t = torch.zeros_like(kd_t)
            for s0, s1 in _chunks(n_kd, chunk):
                kd, ce, _ = _chunk(h[s0:s1].to(dtype), w, b, float(student_head.scale), idx[s0:s1], logp[s0:s1],
                                   ltail[s0:s1], None if targets is None else targets[s0:s1], coefs=(kd_coef, ce_coef),
                                   need_grad=False)
                kd_t += kd
                ce_t += ce
            return kd_coef * kd_t + ce_coef * ce_t, kd_t, ce_t
