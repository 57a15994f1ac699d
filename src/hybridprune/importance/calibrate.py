"""One calibration pass with forward hooks, accumulating per-channel statistics (never activations).

Per sample, each activation is reduced to mean(|a|) over its valid (attention-masked) tokens; the
squares of those means are summed over samples, and the square root is taken at the end: the
"mean over the sequence, L2 over the batch" aggregation of Minitron. Sums are all-reduced under
torch.distributed, so N processes on N shards give the scores of one process on all the data.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist

from ..architectures import ATTENTION, MAMBA, MLP, get_adapter
from .batches import count_batches, iter_batches, progress_bar, vocab_size_of
from .depth import depth_importance
from .scores import CalibrationError, Scores, model_fingerprint

#: the Scores group each unit kind is scored into
SCORE_GROUP = {MAMBA: "mamba", MLP: "ffn", ATTENTION: "attention"}


def _masked_mean_abs(a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T, C] activations -> [B, C] mean of |a| over valid tokens (float32).

    One batched mat-vec (mask @ |a|) rather than a masked copy: calibration overhead matters."""
    m = mask.to(a.dtype)
    total = torch.bmm(m.unsqueeze(1), a.detach().abs()).squeeze(1).float()
    return total / mask.sum(dim=1, keepdim=True).clamp(min=1).float()


def _first_tensor(x):
    return x[0] if isinstance(x, (tuple, list)) else x


class _Accumulator:
    """Holds the running sums for every hooked site; hooks read the current batch's mask."""

    def __init__(self) -> None:
        self.sumsq: dict[str, torch.Tensor] = {}
        self.bi_sum: dict[int, torch.Tensor] = {}
        self.mask: torch.Tensor | None = None
        self.where = ""

    def add(self, key: str, activation: torch.Tensor) -> None:
        a = _masked_mean_abs(activation, self.mask)
        if not torch.isfinite(a).all():
            raise CalibrationError(
                f"non-finite activations at {key} ({self.where}). Check the checkpoint's weights and "
                "try a wider dtype (--dtype float32)."
            )
        sq = a.double().pow(2).sum(dim=0)
        self.sumsq[key] = self.sumsq[key] + sq if key in self.sumsq else sq

    def add_bi(self, index: int, x_in: torch.Tensor, x_out: torch.Tensor) -> None:
        cos = torch.nn.functional.cosine_similarity(x_in.detach(), x_out.detach(), dim=-1).float()
        m = self.mask.to(torch.float32)
        per_sample = ((1.0 - cos) * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        s = per_sample.double().sum()
        self.bi_sum[index] = self.bi_sum[index] + s if index in self.bi_sum else s


def _install_hooks(adapter, model, acc: _Accumulator, dims) -> list:
    """Hook every layer's norms over the hidden size, its units (as their layouts say) and the layer
    itself (Block Influence). A unit shared between layers is scored into its owner's entry, so one
    selection serves every call site."""
    handles = []
    inner = (dims.mamba_num_heads or 0) * (dims.mamba_head_dim or 0)
    owners = adapter.unit_owners(dims)
    for block in adapter.blocks(model):
        i = block.index
        for j, norm in enumerate(block.norms):  # each norm is its own site; sites are summed below
            handles.append(norm.register_forward_hook(
                lambda m, args, out, key=f"hidden.{i}_{j}": acc.add(key, _first_tensor(out))
            ))
        handles.append(block.module.register_forward_hook(
            lambda m, args, kwargs, out, i=i: acc.add_bi(
                i, args[0] if args else kwargs["hidden_states"], _first_tensor(out)
            ),
            with_kwargs=True,
        ))
        for unit in block.units:
            key = f"{SCORE_GROUP[unit.kind]}.{owners.get((unit.kind, i), i)}"
            if unit.hook_on == "mamba_x":
                # x occupies rows [inner, 2*inner) of the in_proj output ([z | x | B | C | dt]).
                handles.append(unit.module.register_forward_hook(
                    lambda m, args, out, key=key: acc.add(key, out[..., inner:2 * inner])
                ))
            else:
                handles.append(unit.module.register_forward_pre_hook(
                    lambda m, args, key=key: acc.add(key, args[0])
                ))
    return handles


def _all_reduce(tensors: list[torch.Tensor]) -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def calibrate(
    model: torch.nn.Module,
    batches: Iterable,
    *,
    batch_size: int = 1,
    max_batches: int | None = None,
    progress: bool = True,
    seq_len: int | None = None,
    depth_samples: int = 0,
) -> Scores:
    """Score every prunable unit of `model` on `batches` in one hooked forward pass per batch.

    `batches`: an iterable of LongTensor [B, T] or dicts with input_ids/attention_mask, a LongTensor
    [N, T], or a TokenSamples. Returns `Scores` with Mamba, FFN, attention, hidden and Block-Influence
    depth scores. `depth_samples > 0` also computes the KL-divergence depth scores
    (`hybridprune.depth_importance`) on the first that many samples (per process), kept from the same
    pass so that any iterable, even a one-shot generator, works.
    """
    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    device = next(model.parameters()).device
    acc = _Accumulator()
    counts = torch.zeros(2, dtype=torch.float64, device=device)  # samples, tokens
    was_training = model.training
    model.eval()
    handles = _install_hooks(adapter, model, acc, dims)
    total = count_batches(batches, batch_size, max_batches)
    depth_batches, depth_kept = [], 0
    try:
        with torch.no_grad(), progress_bar(progress) as bar:
            task = bar.add_task("calibrating", total=total)
            for step, (ids, mask) in enumerate(iter_batches(
                    batches, batch_size=batch_size, device=device, vocab_size=vocab_size_of(model))):
                if max_batches is not None and step >= max_batches:
                    break
                acc.mask, acc.where = mask, f"batch {step}"
                model(input_ids=ids, attention_mask=mask, use_cache=False)
                counts[0] += int((mask.sum(dim=1) > 0).sum())
                counts[1] += int(mask.sum())
                if depth_kept < depth_samples:
                    take = min(depth_samples - depth_kept, ids.shape[0])
                    depth_batches.append({"input_ids": ids[:take], "attention_mask": mask[:take]})
                    depth_kept += take
                bar.advance(task)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    keys = sorted(acc.sumsq)
    bi_keys = sorted(acc.bi_sum)
    _all_reduce([counts] + [acc.sumsq[k] for k in keys] + [acc.bi_sum[k] for k in bi_keys])
    if counts[0] == 0:
        raise CalibrationError("no calibration samples: the data yielded no batch with a valid token")

    scores = Scores()
    hidden = None
    for key in keys:
        group, index = key.split(".")
        value = acc.sumsq[key].sqrt().float().cpu()
        if group == "hidden":
            hidden = value if hidden is None else hidden + value
        elif group == "mamba":
            scores.mamba[int(index)] = value.view(dims.mamba_num_heads, dims.mamba_head_dim)
        elif group == "attention":
            scores.attention[int(index)] = value.view(dims.num_attention_heads, dims.attention_head_dim)
        else:
            scores.ffn[int(index)] = value
    scores.hidden = hidden
    if depth_batches:
        scores.depth_kld = depth_importance(model, depth_batches, progress=progress)
    scores.depth_bi = torch.stack([acc.bi_sum[i] for i in bi_keys]).float().cpu() / counts[0].item()
    scores.meta = {
        "model_type": model.config.model_type,
        "fingerprint": model_fingerprint(model),
        "num_samples": int(counts[0].item()),
        "num_tokens": int(counts[1].item()),
        "seq_len": seq_len,
        "dims": dims.as_dict(),
        "aggregation": "mean(|a|) over valid tokens, L2 over samples",
        "depth_samples": depth_kept,
    }
    return scores
