"""Depth importance: how much the logits change when one block is skipped.

The paper's metric is the KL divergence between the full model's next-token distribution and the
distribution with block i removed (identity in its place), averaged over valid tokens. Block
Influence (1 - cos between a block's input and output) is computed for free during calibration.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..architectures import get_adapter
from .batches import count_batches, iter_batches, progress_bar, vocab_size_of
from .scores import CalibrationError


@contextmanager
def skip_block(block: torch.nn.Module):
    """Make a residual block return its input unchanged (the block removed)."""

    def hook(module, args, kwargs, out):
        x = args[0] if args else kwargs["hidden_states"]
        if isinstance(out, tuple):
            return (x.to(out[0].dtype),) + tuple(out[1:])
        return x.to(out.dtype)

    handle = block.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def depth_importance(
    model: torch.nn.Module,
    batches: Iterable,
    *,
    batch_size: int = 1,
    max_batches: int | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """KL(full ‖ block skipped) per block, averaged over valid tokens: a [num_blocks] tensor.

    Costs one forward pass per block per batch; pass a few hundred samples (the paper used 256).
    """
    adapter = get_adapter(model)
    blocks = adapter.blocks(model)
    device = next(model.parameters()).device
    kl_sum = torch.zeros(len(blocks), dtype=torch.float64, device=device)
    tokens = torch.zeros((), dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    total = count_batches(batches, batch_size, max_batches)
    try:
        with torch.no_grad(), progress_bar(progress) as bar:
            task = bar.add_task("depth importance (KLD)", total=total)
            for step, (ids, mask) in enumerate(iter_batches(
                    batches, batch_size=batch_size, device=device, vocab_size=vocab_size_of(model))):
                if max_batches is not None and step >= max_batches:
                    break
                m = mask.to(torch.float64)
                full = F.log_softmax(model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float(), -1)
                for block in blocks:
                    with skip_block(block.module):
                        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                    skipped = F.log_softmax(logits.float(), -1)
                    kl = (full.exp() * (full - skipped)).sum(-1)  # [B, T]
                    kl_sum[block.index] += (kl.double() * m).sum()
                tokens += m.sum()
                bar.advance(task)
    finally:
        model.train(was_training)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(kl_sum)
        dist.all_reduce(tokens)
    if tokens.item() == 0:
        raise CalibrationError("no samples for depth importance: the data yielded no valid token")
    result = (kl_sum / tokens).float().cpu()
    if not torch.isfinite(result).all():
        raise CalibrationError("depth importance is not finite; check the checkpoint's weights and dtype")
    return result
