"""The KD loss computed in chunks of positions from the final hidden states (see `loss.py` for the
loss definitions).

The language-model head is applied here, a chunk of positions at a time, rather than inside the
models: the `[B, T, V]` logits of teacher and student never exist in full. At V = 131072 one fp32
sequence of 4096 positions is 2 GiB of logits per model, before softmax and gradients.

`chunked_kd_loss` runs one custom autograd function. Its forward walks over chunks of positions; for
each chunk it computes both models' logits, the per-position losses, and (when gradients are needed)
the gradient of the loss with respect to the student's chunk logits, which it immediately folds into
the gradients of the student's hidden states and head weight. Nothing of size `V` outlives a chunk
except the head-weight gradient, which has the shape of the head weight anyway. Backward then only
scales the stored gradients by the incoming gradient. The result equals the loss and gradients of
`kd_loss_from_logits` on the full logits, up to floating-point summation order.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .loss import IGNORE_INDEX, Head, KDLossOutput, check_loss_options, next_token_targets, upcast

# Default chunk size: as many positions as keep one fp32 `[chunk, V]` buffer within this budget (the
# loss keeps about three such buffers alive). On a GPU, larger chunks keep the head matmuls efficient
# and amortise the per-chunk update of the `[V, H]` weight gradient; on a CPU, memory is the concern.
DEFAULT_CHUNK_BYTES = {"cuda": 512 * 2**20}
DEFAULT_CHUNK_BYTES_OTHER = 64 * 2**20


def auto_chunk_size(vocab_size: int, device: torch.device | str = "cpu", budget_bytes: int | None = None) -> int:
    """Positions per chunk so that one fp32 `[chunk, V]` buffer fits the budget (at least 1)."""
    if budget_bytes is None:
        budget_bytes = DEFAULT_CHUNK_BYTES.get(torch.device(device).type, DEFAULT_CHUNK_BYTES_OTHER)
    return max(1, budget_bytes // (4 * vocab_size))


def _head_logits(h: torch.Tensor, weight: torch.Tensor, bias, scale: float) -> torch.Tensor:
    z = h @ weight.t()
    if bias is not None:
        z = z + bias
    z = upcast(z)
    if scale != 1.0:
        z = z * scale
    return z


@dataclass(frozen=True)
class _Opts:
    kind: str
    temperature: float
    kd_coef: float
    ce_coef: float
    with_kd: bool
    with_ce: bool
    chunk: int
    dtype: torch.dtype
    s_scale: float
    t_scale: float


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product `[n, V] · [n, V] -> [n]` without an `[n, V]` temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _chunk(hc, w, b, thc, tw, tb, tgt, opts: _Opts, *, need_grad: bool):
    """Loss sums of one chunk and, if `need_grad`, d(objective)/d(student logits) for it.

    The gradients are the closed forms of the losses (the tests pin them to autograd on the full
    logits); computing them in place keeps about three `[n, V]` fp32 buffers alive at a time, where
    autograd through the same expressions would keep about eight.
      forward KL  τ²·Σ p (log p − log q):  dz_s = τ (q − p)
      reverse KL  τ²·Σ q (log q − log p):  dz_s = τ q (a − Σ q a),  a = log q − log p
      CE          lse(z_s) − z_s[y]:        dz_s = softmax(z_s) − onehot(y)
    """
    tau = opts.temperature
    zs = _head_logits(hc, w, b, opts.s_scale)
    kd_sum = ce_sum = zs.new_zeros(())
    g = None
    if opts.with_ce:
        valid = tgt != IGNORE_INDEX
        safe = tgt.clamp_min(0).unsqueeze(1)
        lse = torch.logsumexp(zs, dim=-1)
        ce_sum = ((lse - zs.gather(1, safe).squeeze(1)) * valid.to(lse.dtype)).sum()
        if need_grad:
            g = zs.sub(lse.unsqueeze(1)).exp_()
            g.scatter_add_(1, safe, torch.full_like(lse, -1.0).unsqueeze(1))
            g.mul_(valid.to(g.dtype).unsqueeze(1) * opts.ce_coef)
        del lse
    if opts.with_kd:
        log_q = torch.log_softmax(zs / tau if tau != 1.0 else zs, dim=-1)
        del zs
        zt = _head_logits(thc, tw, tb, opts.t_scale)
        log_p = torch.log_softmax(zt / tau if tau != 1.0 else zt, dim=-1)
        del zt
        if opts.kind == "forward":
            p = log_p.exp()
            # 0 · log 0 = 0: a finite floor for log p makes those terms 0 · finite (log q <= 0, no overflow)
            d = log_p.clamp_(min=torch.finfo(log_p.dtype).min).sub_(log_q)  # log p − log q, in place
            kl = _rowdot(p, d)
            del d
            if need_grad:
                gk = log_q.exp_().sub_(p).mul_(tau * opts.kd_coef)
            del p
        else:
            log_q.clamp_(min=torch.finfo(log_q.dtype).min)  # q = 0 terms become 0 · finite
            a = log_p.neg_().add_(log_q)  # log q − log p, in the log_p buffer
            q = log_q.exp_()
            kl = _rowdot(q, a)
            if need_grad:
                gk = a.sub_(kl.unsqueeze(1)).mul_(q).mul_(tau * opts.kd_coef)
            del q
        kd_sum = kl.sum() * (tau * tau)
        if need_grad:
            g = gk if g is None else g.add_(gk)
    return kd_sum, ce_sum, g


class _ChunkedHeadLoss(torch.autograd.Function):
    """loss = kd_coef · Σ KD + ce_coef · Σ CE over positions; gradients computed chunk by chunk."""

    @staticmethod
    def forward(ctx, h, weight, bias, t_h, t_weight, t_bias, targets, opts: _Opts):
        n = h.shape[0]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        w = weight.detach().to(opts.dtype)
        b = None if bias is None else bias.detach().to(opts.dtype)
        tw = t_weight.detach().to(opts.dtype) if opts.with_kd else None
        tb = None if (t_bias is None or not opts.with_kd) else t_bias.detach().to(opts.dtype)
        grad_h = torch.empty_like(h) if need_h else None
        acc = torch.promote_types(weight.dtype, torch.float32)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b else None
        kd_total = torch.zeros((), dtype=torch.promote_types(opts.dtype, torch.float32), device=h.device)
        ce_total = torch.zeros_like(kd_total)
        for s0, s1 in _chunks(n, opts.chunk):
            hc = h[s0:s1].detach().to(opts.dtype)
            thc = t_h[s0:s1].to(opts.dtype) if opts.with_kd else None
            tgt = targets[s0:s1] if opts.with_ce else None
            kd_sum, ce_sum, gz = _chunk(hc, w, b, thc, tw, tb, tgt, opts, need_grad=True)
            kd_total += kd_sum
            ce_total += ce_sum
            if opts.s_scale != 1.0:
                gz.mul_(opts.s_scale)
            gzc = gz if gz.dtype == opts.dtype else gz.to(opts.dtype)
            del gz
            if need_h:
                grad_h[s0:s1] = (gzc @ w).to(h.dtype)
            if need_w:
                if gzc.dtype == grad_w.dtype:
                    grad_w.addmm_(gzc.t(), hc)
                else:
                    grad_w += gzc.t() @ hc
            if need_b:
                grad_b += gzc.sum(0)
            del gzc
        loss = opts.kd_coef * kd_total + opts.ce_coef * ce_total
        ctx.save_for_backward(
            grad_h if need_h else None,
            grad_w.to(weight.dtype) if need_w else None,
            grad_b.to(bias.dtype) if need_b else None,
        )
        ctx.mark_non_differentiable(kd_total, ce_total)
        return loss, kd_total, ce_total

    @staticmethod
    def backward(ctx, g_loss, _g_kd, _g_ce):
        grad_h, grad_w, grad_b = ctx.saved_tensors

        def scaled(g):
            if g is None:
                return None
            # The loss is almost always the root of the graph (g_loss == 1): keep the buffers as is.
            if g_loss.numel() == 1 and float(g_loss) == 1.0:
                return g
            return g * g_loss.to(g.dtype)

        return scaled(grad_h), scaled(grad_w), scaled(grad_b), None, None, None, None, None


def _plain_sums(h, head: Head, t_h, t_head: Head | None, targets, opts: _Opts):
    """The same sums without gradients (validation)."""
    kd_total = torch.zeros((), dtype=torch.promote_types(opts.dtype, torch.float32), device=h.device)
    ce_total = torch.zeros_like(kd_total)
    w = head.weight.detach().to(opts.dtype)
    b = None if head.bias is None else head.bias.detach().to(opts.dtype)
    tw = tb = None
    if opts.with_kd:
        tw = t_head.weight.detach().to(opts.dtype)
        tb = None if t_head.bias is None else t_head.bias.detach().to(opts.dtype)
    with torch.no_grad():
        for s0, s1 in _chunks(h.shape[0], opts.chunk):
            kd, ce, _ = _chunk(
                h[s0:s1].to(opts.dtype), w, b, t_h[s0:s1].to(opts.dtype) if opts.with_kd else None, tw, tb,
                targets[s0:s1] if opts.with_ce else None, opts, need_grad=False,
            )
            kd_total += kd
            ce_total += ce
    return opts.kd_coef * kd_total + opts.ce_coef * ce_total, kd_total, ce_total


def chunked_kd_loss(
    student_hidden: torch.Tensor,
    student_head: Head,
    teacher_hidden: torch.Tensor | None,
    teacher_head: Head | None,
    attention_mask: torch.Tensor | None = None,
    input_ids: torch.Tensor | None = None,
    *,
    kind: str = "forward",
    temperature: float = 1.0,
    kd_weight: float = 1.0,
    ce_weight: float = 0.0,
    chunk_size: int | None = None,
    kd_normalizer: float | None = None,
    ce_normalizer: float | None = None,
    compute_dtype: torch.dtype | None = None,
) -> KDLossOutput:
    """KD (+ optional CE) loss from final hidden states `[B, T, H]`, never materialising `[B, T, V]`.

    `kd_normalizer`/`ce_normalizer` are the position counts the sums are divided by (default: the
    positions of this batch). A training loop that accumulates gradients over micro-batches, or
    processes, passes the counts of the whole global batch so that the gradients add up exactly.
    `compute_dtype` is the dtype of the head matmuls (default: the student head weight's); the
    softmax and the loss are always fp32.
    """
    check_loss_options(kind, temperature, kd_weight, ce_weight)
    with_kd = kd_weight > 0
    with_ce = ce_weight > 0
    if with_kd and (teacher_hidden is None or teacher_head is None):
        raise ValueError("the KD term needs the teacher's hidden states and head")
    if with_kd and teacher_head.vocab_size != student_head.vocab_size:
        raise ValueError(
            f"teacher and student vocabularies differ ({teacher_head.vocab_size} vs "
            f"{student_head.vocab_size}); logit distillation needs the same vocabulary"
        )
    if with_ce and input_ids is None:
        raise ValueError("cross-entropy mixing needs input_ids")
    B, T, H = student_hidden.shape
    if attention_mask is None:
        keep = None
        n_kd = B * T
    else:
        keep = attention_mask.reshape(-1).bool()
        n_kd = int(keep.sum())

    def select(x):
        x = x.reshape(B * T, x.shape[-1])
        return x if keep is None else x[keep]

    h = select(student_hidden)
    t_h = select(teacher_hidden) if with_kd else None
    targets = None
    n_ce = 0
    if with_ce:
        targets = next_token_targets(input_ids, attention_mask).reshape(-1)
        if keep is not None:
            targets = targets[keep]
        n_ce = int((targets != IGNORE_INDEX).sum())
    kd_norm = float(kd_normalizer if kd_normalizer is not None else max(n_kd, 1))
    ce_norm = float(ce_normalizer if ce_normalizer is not None else max(n_ce, 1))
    dtype = compute_dtype or student_head.weight.dtype
    chunk = chunk_size or auto_chunk_size(student_head.vocab_size, h.device)
    opts = _Opts(
        kind=kind,
        temperature=float(temperature),
        kd_coef=(kd_weight / kd_norm) if with_kd else 0.0,
        ce_coef=(ce_weight / ce_norm) if with_ce else 0.0,
        with_kd=with_kd,
        with_ce=with_ce,
        chunk=int(chunk),
        dtype=dtype,
        s_scale=float(student_head.scale),
        t_scale=float(teacher_head.scale) if with_kd else 1.0,
    )
    # Autocast would recast the head matmuls behind our back; the dtype is explicit here.
    no_autocast = (
        torch.autocast(device_type=h.device.type, enabled=False)
        if torch.is_autocast_enabled(h.device.type)
        else contextlib.nullcontext()
    )
    with no_autocast:
        needs_grad = torch.is_grad_enabled() and (
            h.requires_grad
            or student_head.weight.requires_grad
            or (student_head.bias is not None and student_head.bias.requires_grad)
        )
        if needs_grad:
            loss, kd_sum, ce_sum = _ChunkedHeadLoss.apply(
                h,
                student_head.weight,
                student_head.bias,
                t_h,
                teacher_head.weight if with_kd else None,
                teacher_head.bias if with_kd else None,
                targets,
                opts,
            )
        else:
            loss, kd_sum, ce_sum = _plain_sums(h, student_head, t_h, teacher_head, targets, opts)
    return KDLossOutput(loss=loss, kd_sum=kd_sum, ce_sum=ce_sum, kd_tokens=n_kd, ce_tokens=n_ce)
