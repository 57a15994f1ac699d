"""Logit distillation losses: their definitions and the reference implementation on full logits.

Loss definitions (per position `i`, temperature `τ`, `p = softmax(z_teacher / τ)`,
`q = softmax(z_student / τ)`):

- forward KL: `τ² · Σ_v p_v (log p_v − log q_v)` (the paper's loss, default);
- reverse KL: `τ² · Σ_v q_v (log q_v − log p_v)`;
- cross-entropy: `−log softmax(z_student)[next token]` (no temperature).

The reported loss is `kd_weight · mean_KD + ce_weight · mean_CE`, means over the unmasked positions.
KD uses every position whose attention mask is 1; CE uses the positions whose next token is also
unmasked.

`kd_loss_from_logits` needs the full `[B, T, V]` logits; training uses `chunked_kd_loss`
(`chunked_loss.py`), which computes the same loss and gradients from the final hidden states without
ever materialising them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

KD_KINDS = ("forward", "reverse")

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Head:
    """A language-model head as a weight (`[V, H]`), an optional bias and a logit multiplier."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    scale: float = 1.0

    @property
    def vocab_size(self) -> int:
        return int(self.weight.shape[0])


@dataclass
class KDLossOutput:
    """`loss` is the differentiable objective; the sums and counts are detached, for logging."""

    loss: torch.Tensor
    kd_sum: torch.Tensor
    ce_sum: torch.Tensor
    kd_tokens: int
    ce_tokens: int


def check_loss_options(kind: str, temperature: float, kd_weight: float, ce_weight: float) -> None:
    if kind not in KD_KINDS:
        raise ValueError(f"kd loss must be one of {KD_KINDS}, got {kind!r}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    if kd_weight < 0 or ce_weight < 0 or kd_weight + ce_weight <= 0:
        raise ValueError(
            f"loss weights must be >= 0 and not both 0 (kd_weight={kd_weight}, ce_weight={ce_weight})"
        )


def next_token_targets(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """`[B, T]` targets for cross-entropy: the next token where it is unmasked, else `IGNORE_INDEX`."""
    targets = torch.full_like(input_ids, IGNORE_INDEX)
    targets[:, :-1] = input_ids[:, 1:]
    if attention_mask is not None:
        keep = attention_mask.bool()
        valid = torch.zeros_like(keep)
        valid[:, :-1] = keep[:, :-1] & keep[:, 1:]
        targets = targets.masked_fill(~valid, IGNORE_INDEX)
    return targets


def upcast(x: torch.Tensor) -> torch.Tensor:
    """At least fp32 (fp64 stays fp64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def token_losses(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    targets: torch.Tensor | None,
    *,
    kind: str = "forward",
    temperature: float = 1.0,
    with_ce: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per-position KD and CE losses (fp32) for logits `[N, V]`; targets `[N]` (IGNORE_INDEX = none)."""
    s = upcast(student_logits)
    kd = None
    if teacher_logits is not None:
        t = upcast(teacher_logits)
        if temperature != 1.0:
            s_t, t_t = s / temperature, t / temperature
        else:
            s_t, t_t = s, t
        log_q = F.log_softmax(s_t, dim=-1)
        log_p = F.log_softmax(t_t, dim=-1)
        if kind == "forward":
            p = log_p.exp()
            # Where p underflows to 0 the term is 0 (x log x -> 0), not 0 * (-inf).
            kd = torch.where(p > 0, p * (log_p - log_q), 0.0).sum(-1)
        else:
            q = log_q.exp()
            kd = torch.where(q > 0, q * (log_q - log_p), 0.0).sum(-1)
        if temperature != 1.0:
            kd = kd * (temperature * temperature)
    ce = None
    if with_ce:
        ce = F.cross_entropy(s, targets, ignore_index=IGNORE_INDEX, reduction="none")
    return kd, ce


def kd_loss_from_logits(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    input_ids: torch.Tensor | None = None,
    *,
    kind: str = "forward",
    temperature: float = 1.0,
    kd_weight: float = 1.0,
    ce_weight: float = 0.0,
) -> torch.Tensor:
    """The reference (unchunked) loss on full `[B, T, V]` logits. Memory grows with `B·T·V`."""
    check_loss_options(kind, temperature, kd_weight, ce_weight)
    B, T, V = student_logits.shape
    mask = torch.ones(B, T, dtype=torch.bool, device=student_logits.device)
    if attention_mask is not None:
        mask = attention_mask.bool()
    flat = mask.reshape(-1)
    with_ce = ce_weight > 0
    targets = None
    if with_ce:
        if input_ids is None:
            raise ValueError("cross-entropy mixing needs input_ids")
        targets = next_token_targets(input_ids, attention_mask).reshape(-1)[flat]
    kd, ce = token_losses(
        student_logits.reshape(-1, V)[flat],
        teacher_logits.reshape(-1, V)[flat],
        targets,
        kind=kind,
        temperature=temperature,
        with_ce=with_ce,
    )
    loss = kd_weight * kd.sum() / max(int(flat.sum()), 1)
    if with_ce:
        loss = loss + ce_weight * ce.sum() / max(int((targets != IGNORE_INDEX).sum()), 1)
    return loss
