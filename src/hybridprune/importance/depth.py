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


def _like(out, x: torch.Tensor):
    """`x` in the form of the block output `out` (a tensor, or a tuple led by the hidden states)."""
    if isinstance(out, tuple):
        return (x.to(out[0].dtype),) + tuple(out[1:])
    return x.to(out.dtype)


def _block_input(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


@contextmanager
def skip_block(block: torch.nn.Module):
    """Make a residual block return its input unchanged (the block removed)."""
    handle = block.register_forward_hook(lambda module, args, kwargs, out: _like(out, _block_input(args, kwargs)),
                                         with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _clone(out):
    """A fresh copy of a block's output (a tensor or a tuple holding tensors), so that no later step can
    change the kept one in place."""
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, tuple):
        return type(out)(_clone(o) for o in out) if type(out) is tuple else out
    return out


@contextmanager
def record_outputs(modules):
    """Within: `(outputs, order)`: each module's outputs appended to its list, as called, and the index of
    each module called, in call order."""
    outputs, order = [[] for _ in modules], []

    def keep(k, out):
        outputs[k].append(_clone(out))
        order.append(k)

    handles = [m.register_forward_hook(lambda mod, args, out, k=k: keep(k, out)) for k, m in enumerate(modules)]
    try:
        yield outputs, order
    finally:
        for h in handles:
            h.remove()


@contextmanager
def replaced_forwards(modules, forwards):
    """Within: each module's forward is the function given (its own not run); restored after."""
    before = [m.__dict__.get("forward") for m in modules]  # a dispatch hook (accelerate) may own forward
    for m, fn in zip(modules, forwards):
        m.forward = fn
    try:
        yield
    finally:
        for m, old in zip(modules, before):
            if old is None:
                del m.forward
            else:
                m.forward = old


def _replayed(out):
    return lambda *args, **kwargs: _clone(out)


def _skipped(out):
    return lambda *args, **kwargs: _like(out, _block_input(args, kwargs))


def depth_importance(
    model: torch.nn.Module,
    batches: Iterable,
    *,
    batch_size: int = 1,
    max_batches: int | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """KL(full ‖ block skipped) per block, averaged over valid tokens: a [num_blocks] tensor.

    Costs one forward pass per block per batch; pass a few hundred samples (the paper used 256). The
    blocks before the skipped one are not run again: the full pass records each block's output and the
    skipped pass replays them (about half the layers' work; the memory is one block output per block,
    num_blocks x batch x seq_len x hidden). A model whose blocks do not run exactly once per pass, in
    the order of the adapter's list, is run in full each time instead: the same result, the plain cost.
    """
    adapter = get_adapter(model)
    blocks = adapter.blocks(model)
    modules = [b.module for b in blocks]
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

                def forward():
                    return model(input_ids=ids, attention_mask=mask, use_cache=False).logits

                with record_outputs(modules) as (recorded, order):
                    full = F.log_softmax(forward().float(), -1)
                p_full = full.exp()
                # replay only where each block ran once, in the order of the list
                kept = [r[0] for r in recorded] if order == list(range(len(modules))) else []
                for k, block in enumerate(blocks):
                    if kept:  # the blocks before k replay their outputs, block k returns its input
                        skip = replaced_forwards(modules[:k + 1], [*map(_replayed, kept[:k]), _skipped(kept[k])])
                    else:
                        skip = skip_block(block.module)
                    with skip:
                        logits = forward()
                    skipped = F.log_softmax(logits.float(), -1)
                    kl = (p_full * (full - skipped)).sum(-1)  # [B, T]
                    kl_sum[block.index] += (kl.double() * m).sum()
                del recorded, kept, p_full
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
