"""`evaluate_loss`: token-weighted next-token cross-entropy, perplexity and bits per byte of a causal LM.

Bits per byte (BPB) makes models with different tokenizers comparable: it divides the total
information (in bits) of the predicted tokens by the number of UTF-8 bytes of text those tokens
stand for, so a tokenizer that packs more text into a token is not rewarded for it:

    bpb = sum(cross-entropy in nats) / (ln 2 * bytes)

The bytes of one window are counted from the tokenizer's own decoding of the evaluated tokens:
`len(decode(w).encode()) - len(decode(w[:1]).encode())` where `w` is the window's run of real tokens.
Position 0 is never predicted, so its text is subtracted; decoding the run as a whole (not token by
token) keeps multi-byte characters split across tokens and a tokenizer's leading-space rules right.
Special tokens (e.g. the EOS between documents) decode to no bytes but their loss still counts, as
in lm-eval's `bits_per_byte` over documents joined by separators.
"""

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


def predicted_bytes(tokenizer, ids: torch.Tensor, mask: torch.Tensor) -> int:
    """UTF-8 bytes of text predicted in one window: the decoding of its real tokens minus the first."""
    real = ids[mask > 0].tolist()
    if len(real) < 2:
        return 0
    whole = tokenizer.decode(real, skip_special_tokens=True)
    first = tokenizer.decode(real[:1], skip_special_tokens=True)
    return max(0, len(whole.encode("utf-8")) - len(first.encode("utf-8")))


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, data, batch_size: int = 8, *, tokenizer=None,
                  num_bytes: int | None = None) -> dict[str, float | int]:
    """Mean cross-entropy over every valid next-token position of `data`, weighted by tokens.

    Position `t` predicts token `t + 1`; it counts when both are real tokens (attention mask 1).
    `data`: a `TokenSamples`, a LongTensor `[N, T]`, or an iterable of batches (tensors or dicts with
    `input_ids` and optionally `attention_mask`). The model runs in eval mode without gradients and
    its previous mode is restored. Returns `{"loss", "perplexity", "tokens"}`, plus `"bytes"` and
    `"bits_per_byte"` when a `tokenizer` (anything with `decode(ids, skip_special_tokens=...)`) is
    given; the windows must then have padding only on the right. `num_bytes` (the UTF-8 bytes of the
    text `data` predicts, as `SharedText` counts them) gives bits per byte without decoding.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = _device_of(model)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    n_bytes = 0
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
            if tokenizer is not None and num_bytes is None:
                n_bytes += sum(predicted_bytes(tokenizer, i, m) for i, m in zip(ids.cpu(), mask.cpu()))
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("no valid next-token positions in the evaluation data (sequences shorter than 2 tokens?)")
    loss = float(total / count)
    if not math.isfinite(loss):
        raise NonFiniteLoss("the evaluation loss is not finite; check the model's weights and dtype")
    result: dict[str, float | int] = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": count}
    if num_bytes is not None:
        n_bytes = int(num_bytes)
    if tokenizer is not None or num_bytes is not None:
        if n_bytes <= 0:
            raise ValueError("the evaluated tokens decode to no text, so bits per byte is undefined")
        result["bytes"] = n_bytes
        result["bits_per_byte"] = float(total) / (math.log(2) * n_bytes)
    return result
