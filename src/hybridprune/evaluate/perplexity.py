"""`evaluate_loss`: token-weighted next-token cross-entropy and perplexity of a causal LM."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..importance.batches import iter_batches


class NonFiniteLoss(ValueError):
    """The model's loss is NaN or infinite (broken weights, or a dtype too narrow)."""


def _device_of(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, data, batch_size: int = 8) -> dict[str, float | int]:
    """Mean cross-entropy over every valid next-token position of `data`, weighted by tokens.

    Position `t` predicts token `t + 1`; it counts when both are real tokens (attention mask 1).
    `data`: a `TokenSamples`, a LongTensor `[N, T]`, or an iterable of batches (tensors or dicts with
    `input_ids` and optionally `attention_mask`). The model runs in eval mode without gradients and
    its previous mode is restored. Returns `{"loss", "perplexity", "tokens"}`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = _device_of(model)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    try:
        for ids, mask in iter_batches(data, batch_size=batch_size, device=device):
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            logits = logits[:, :-1].float()
            targets = ids[:, 1:]
            valid = (mask[:, :-1] > 0) & (mask[:, 1:] > 0)
            n = int(valid.sum())
            if n == 0:
                continue
            ce = F.cross_entropy(logits[valid], targets[valid], reduction="sum")
            total += ce.double().cpu()
            count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("no valid next-token positions in the evaluation data (sequences shorter than 2 tokens?)")
    loss = float(total / count)
    if not math.isfinite(loss):
        raise NonFiniteLoss("the evaluation loss is not finite; check the model's weights and dtype")
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": count}
