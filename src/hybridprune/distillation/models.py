"""How the loop reaches into a Hugging Face causal LM: its base model, final hidden states and LM head
(the chunked loss applies the head itself, so it needs them separately), a check that head(hidden)
reproduces the model's own logits, and the student wrapped with the KD loss as its forward."""

from __future__ import annotations

import torch
from torch import nn

from .chunked_loss import chunked_kd_loss
from .config import DistillConfig, DistillError
from .loss import Head


def base_model_of(model: nn.Module) -> nn.Module:
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        raise DistillError(
            f"{type(model).__name__} is not a causal LM with a separate base model and head "
            "(expected a Hugging Face *ForCausalLM)"
        )
    return base


def logit_scale(model: nn.Module) -> float:
    """The factor the model's forward applies to the head's output, as its family's adapter states it
    (`Adapter.logit_scale`); 1 for a model no adapter knows, which `check_head` then holds to none."""
    from ..architectures import get_adapter

    try:
        adapter = get_adapter(model)
    except ValueError:
        return 1.0
    return adapter.logit_scale(model.config)


def head_of(model: nn.Module) -> Head:
    emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if emb is None or not hasattr(emb, "weight"):
        raise DistillError(f"{type(model).__name__} has no output embedding (LM head) to distil through")
    return Head(weight=emb.weight, bias=getattr(emb, "bias", None), scale=logit_scale(model))


def final_hidden(model: nn.Module, input_ids, attention_mask) -> torch.Tensor:
    out = base_model_of(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


@torch.no_grad()
def check_head(model: nn.Module, vocab_size: int, name: str, device) -> None:
    """The chunked loss rebuilds the logits as head(final hidden state) · scale: check that this is what
    the model's own forward computes, on a few tokens."""
    was_training = model.training
    model.eval()
    try:
        ids = torch.arange(12, device=device).remainder(vocab_size).unsqueeze(0)
        ref = model(input_ids=ids, use_cache=False).logits.float()
        head = head_of(model)
        h = final_hidden(model, ids, None)
        z = h.to(head.weight.dtype) @ head.weight.t()
        if head.bias is not None:
            z = z + head.bias
        z = z.float() * head.scale
    finally:
        model.train(was_training)
    tol = 1e-3 * max(1.0, float(ref.abs().max()))
    if ref.shape != z.shape or float((ref - z).abs().max()) > tol:
        raise DistillError(
            f"cannot reproduce the {name}'s logits from its final hidden states and LM head "
            f"({type(model).__name__}); this architecture is not supported by the chunked KD loss"
        )


class StudentKD(nn.Module):
    """The student with the chunked KD loss as its forward, so that DDP/FSDP see one module call."""

    def __init__(self, student: nn.Module, cfg: DistillConfig, compute_dtype: torch.dtype):
        super().__init__()
        self.student = student
        self.cfg = cfg
        self.compute_dtype = compute_dtype

    def forward(self, input_ids, attention_mask, teacher_hidden, teacher_weight, teacher_bias, teacher_scale: float,
                *, kd_normalizer: float, ce_normalizer: float, loss_mask=None, topk=None):
        h = final_hidden(self.student, input_ids, attention_mask)
        cfg = self.cfg
        if topk is not None:  # the teacher as its top-k logits and tail mass (topk.py)
            from .topk import topk_kd_loss

            return topk_kd_loss(h, head_of(self.student), topk, attention_mask if loss_mask is None else loss_mask,
                                input_ids, kd_weight=cfg.kd_weight, ce_weight=cfg.ce_weight,
                                chunk_size=cfg.chunk_size, kd_normalizer=kd_normalizer, ce_normalizer=ce_normalizer,
                                compute_dtype=self.compute_dtype)
        out = chunked_kd_loss(
            h,
            head_of(self.student),
            teacher_hidden,
            Head(teacher_weight, teacher_bias, teacher_scale),
            attention_mask if loss_mask is None else loss_mask,
            input_ids,
            kind=cfg.kd_loss,
            temperature=cfg.temperature,
            kd_weight=cfg.kd_weight,
            ce_weight=cfg.ce_weight,
            chunk_size=cfg.chunk_size,
            kd_normalizer=kd_normalizer,
            ce_normalizer=ce_normalizer,
            compute_dtype=self.compute_dtype,
        )
        return out.loss, out.kd_sum, out.ce_sum
