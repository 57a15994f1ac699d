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

from ..architectures import ATTENTION, GDN, MAMBA, MLP, MOE, get_adapter
from .batches import count_batches, iter_batches, progress_bar, vocab_size_of
from .depth import depth_importance
from .scores import CalibrationError, Scores, model_fingerprint

#: the Scores group each unit kind is scored into
SCORE_GROUP = {MAMBA: "mamba", MLP: "ffn", ATTENTION: "attention", MOE: "moe", GDN: "gdn"}


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
        #: per MoE block: [3, E] routed (token, slot) pairs, sum of output norms, sum of gate x norm
        self.expert_sums: dict[str, torch.Tensor] = {}
        self.mask: torch.Tensor | None = None
        self.where = ""

    def add(self, key: str, activation: torch.Tensor) -> None:
        if activation.dim() == 2:  # a module fed flattened tokens [B*T, C] (Qwen's MoE shared expert)
            activation = activation.view(*self.mask.shape, -1)
        a = _masked_mean_abs(activation, self.mask)
        if not torch.isfinite(a).all():
            raise CalibrationError(
                f"non-finite activations at {key} ({self.where}). Check the checkpoint's weights and "
                "try a wider dtype (--dtype float32)."
            )
        sq = a.double().pow(2).sum(dim=0)
        self.sumsq[key] = self.sumsq[key] + sq if key in self.sumsq else sq

    def add_experts(self, owner: int, site, num_experts: int, args: tuple, kwargs: dict) -> None:
        """Score the routed experts of one MoE block from the experts module's inputs
        (hidden_states [N, D], top_k_index [N, k], top_k_weights [N, k]; N = batch x tokens).

        Each expert is run again on the valid tokens routed to it (`UnitLayout.expert_forward`), which
        gives its down-projection input and its output without depending on how transformers
        dispatches the experts. Costs one more pass of the routed experts per batch."""
        names = ("hidden_states", "top_k_index", "top_k_weights")
        x, index, weights = (args[j] if len(args) > j else kwargs[n] for j, n in enumerate(names))
        key = f"{SCORE_GROUP[MOE]}.{owner}"
        batch, seq = self.mask.shape
        valid = self.mask.reshape(-1).bool()
        sample = torch.arange(batch, device=x.device).repeat_interleave(seq)
        stats = torch.zeros(3, num_experts, dtype=torch.float64, device=x.device)
        neuron_sum = count = None
        with torch.no_grad():
            routed = index.clone()
            routed[~valid] = -1
            for e in torch.unique(routed[routed >= 0]).tolist():
                tokens, slot = torch.where(routed == e)
                a, out = site.layout.expert_forward(site.module, e, x[tokens])
                norms = out.float().norm(dim=-1)
                if not (torch.isfinite(norms).all() and torch.isfinite(a).all()):
                    raise CalibrationError(
                        f"non-finite activations at expert {e} of {key} ({self.where}). Check the checkpoint's "
                        "weights and try a wider dtype (--dtype float32).")
                stats[0, e] += tokens.numel()
                stats[1, e] += norms.double().sum()
                stats[2, e] += (weights[tokens, slot].double() * norms.double()).sum()
                if neuron_sum is None:
                    neuron_sum = torch.zeros(batch, a.shape[-1], dtype=torch.float64, device=x.device)
                    count = torch.zeros(batch, dtype=torch.float64, device=x.device)
                neuron_sum.index_add_(0, sample[tokens], a.abs().double())
                count.index_add_(0, sample[tokens], torch.ones_like(tokens, dtype=torch.float64))
        self.expert_sums[key] = self.expert_sums[key] + stats if key in self.expert_sums else stats
        if neuron_sum is not None:  # mean |a| over each sample's routed pairs, squared, summed over samples
            sq = (neuron_sum / count.clamp(min=1)[:, None]).pow(2).sum(dim=0)
            ffn_key = f"moe_ffn.{owner}"
            self.sumsq[ffn_key] = self.sumsq[ffn_key] + sq if ffn_key in self.sumsq else sq

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
            owner = owners.get((unit.kind, i), i)
            key = f"{unit.group or SCORE_GROUP[unit.kind]}.{owner}"
            if unit.hook_on == "moe_experts":
                handles.append(unit.module.register_forward_hook(
                    lambda m, args, kwargs, out, owner=owner, unit=unit: acc.add_experts(
                        owner, unit, dims.num_moe_experts, args, kwargs),
                    with_kwargs=True,
                ))
            elif unit.layout is not None and unit.hook_on in unit.layout.outputs:
                # a slice of the module's output (a GDN projection's value, query or key rows)
                handles.append(unit.module.register_forward_hook(
                    lambda m, args, out, key=key, pick=unit.layout.outputs[unit.hook_on]: acc.add(key, pick(out, dims))
                ))
            elif unit.hook_on == "mamba_x":
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
    [N, T], or a TokenSamples. Returns `Scores` with Mamba, FFN, attention, MoE (experts, expert
    neurons, shared expert), hidden and Block-Influence depth scores. `depth_samples > 0` also computes the KL-divergence depth scores
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
    depth_batches, depth_kept, longest = [], 0, 0
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
                longest = max(longest, ids.shape[1])
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
    expert_keys = sorted(acc.expert_sums)
    _all_reduce([counts] + [acc.sumsq[k] for k in keys] + [acc.bi_sum[k] for k in bi_keys]
                + [acc.expert_sums[k] for k in expert_keys])
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
        elif group in ("gdn", "gdn_value"):
            getattr(scores, group)[int(index)] = value.view(dims.linear_num_value_heads, dims.linear_value_head_dim)
        elif group == "gdn_key":  # q and k sites summed into one entry: the L2 of both statistics
            scores.gdn_key[int(index)] = value.view(dims.linear_num_key_heads, dims.linear_key_head_dim)
        else:  # ffn, moe_ffn, moe_shared_ffn: one score per neuron
            getattr(scores, group)[int(index)] = value
    for key in expert_keys:
        i = int(key.split(".")[1])
        routed, norm_sum, weighted_sum = acc.expert_sums[key].cpu()
        scores.moe_experts[i] = (norm_sum / routed.clamp(min=1)).float()
        scores.moe_router_weighted[i] = (weighted_sum / routed.clamp(min=1)).float()
        scores.moe_frequency[i] = (routed / routed.sum().clamp(min=1)).float()
        if i not in scores.moe_ffn:  # no valid token reached any expert
            width = dims.moe_ffn_hidden_size
            scores.moe_ffn[i] = torch.zeros(width)
    scores.hidden = hidden
    if depth_batches:
        scores.depth_kld = depth_importance(model, depth_batches, progress=progress)
    scores.depth_bi = torch.stack([acc.bi_sum[i] for i in bi_keys]).float().cpu() / counts[0].item()
    scores.meta = {
        "model_type": model.config.model_type,
        "fingerprint": model_fingerprint(model),
        "num_samples": int(counts[0].item()),
        "num_tokens": int(counts[1].item()),
        "seq_len": seq_len if seq_len is not None else longest,  # the windows' length unless the caller says
        "dims": dims.as_dict(),
        "aggregation": "mean(|a|) over valid tokens, L2 over samples",
        "depth_samples": depth_kept,
    }
    return scores
