"""Group-aware selection: from Scores and a Plan to the kept indices of every axis and layer.

Rules (Minitron-SSM, Eqs. 19–24):
- Mamba head channels: one ranking per layer, the L2 over heads of the channel scores.
- Mamba heads: the L2 over the kept channels, ranked inside their B/C group; every group keeps the
  same number of heads and no head leaves its group.
- Attention query heads: the L2 over head channels, ranked inside their KV group; KV heads stay.
- FFN neurons and hidden channels: ranked globally (per layer for FFN).
- Routed experts: per MoE layer, ranked inside their routing group (`n_group`) with the same number
  kept in every group, like Mamba heads; by output norm (Minitron), router-weighted output norm
  (REAP) or routing frequency. Expert neurons: one ranking per layer shared by every expert (the
  config has one expert width); the shared expert's neurons like a dense FFN.
- Gated DeltaNet (per layer): whole key-head groups by the L2 of their value heads' scores; value
  channels by one ranking shared by every value head of the kept groups; value heads by the L2 over
  the kept channels, ranked inside their key-head group, every group keeping the same number (as
  Mamba heads in their B/C groups); key channels (the delta rule's state dimension) by one ranking
  shared by q and k of every kept key head.
- Depth: drop the blocks whose removal changes the logits least, or an explicit list.
Kept indices are numpy int64 arrays, ascending inside each group, so slicing preserves the layout.
Every ranking is in float64 (scores may be numpy arrays or torch tensors) and its tie order is fixed:
the higher score first, and of equal scores the lower index first (a stable sort of the negated scores).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..architectures import ATTENTION, GDN, MAMBA, MLP, MOE, Dims
from ..architectures.base import unit_kinds
from ..importance.scores import (
    EXPERT_IMPORTANCE,
    GDN_IMPORTANCE,
    Scores,
    ScoresError,
    as_float64,
)
from .plan import Plan, PlanError

Index = np.ndarray  # int64, one dimension


@dataclass
class Selection:
    """Kept indices (numpy int64 arrays), in the original model's numbering. Absent entries mean "keep all"."""

    kept_blocks: list[int]
    hidden: Index | None = None
    mamba_heads: dict[int, Index] = field(default_factory=dict)
    mamba_channels: dict[int, Index] = field(default_factory=dict)
    ffn: dict[int, Index] = field(default_factory=dict)
    attention_heads: dict[int, Index] = field(default_factory=dict)
    moe_experts: dict[int, Index] = field(default_factory=dict)
    moe_ffn: dict[int, Index] = field(default_factory=dict)
    moe_shared_ffn: dict[int, Index] = field(default_factory=dict)
    #: Gated DeltaNet: kept key heads (whole groups), value heads (original numbering), key and value channels
    gdn_key_heads: dict[int, Index] = field(default_factory=dict)
    gdn_value_heads: dict[int, Index] = field(default_factory=dict)
    gdn_key_channels: dict[int, Index] = field(default_factory=dict)
    gdn_value_channels: dict[int, Index] = field(default_factory=dict)


def ranking(scores) -> Index:
    """Indices from the highest score to the lowest; of equal scores the lower index first."""
    return np.argsort(-as_float64(scores).reshape(-1), kind="stable")


def top_k_sorted(scores, k: int) -> Index:
    """Indices of the k largest scores, ascending. Ties break towards the lower index (`ranking`)."""
    return np.sort(ranking(scores)[:k]).astype(np.int64, copy=False)


def top_k_per_group(scores, groups: int, k_per_group: int) -> Index:
    """Keep the k best units of each contiguous group; indices stay inside their group."""
    s = as_float64(scores).reshape(-1)
    n = s.size
    if n % groups:
        raise PlanError(f"{n} units cannot be split into {groups} equal groups")
    size = n // groups
    kept = [g * size + top_k_sorted(s[g * size:(g + 1) * size], k_per_group) for g in range(groups)]
    return np.concatenate(kept).astype(np.int64, copy=False)


def _l2(x: np.ndarray, axis: int) -> np.ndarray:
    return np.sqrt(np.square(x).sum(axis=axis))


def select_mamba(s, n_groups: int, heads: int, head_dim: int) -> tuple[Index, Index]:
    """Kept (heads, channels) of one Mamba layer from its [heads, head_dim] score matrix."""
    s = as_float64(s)
    channels = top_k_sorted(_l2(s, 0), head_dim)  # L2 over heads: one shared channel ranking
    head_scores = _l2(s[:, channels], 1)  # L2 over the kept channels
    return top_k_per_group(head_scores, n_groups, heads // n_groups), channels


def select_attention(s, kv_heads: int, heads: int) -> Index:
    """Kept query heads of one attention layer from its [q_heads, head_dim] score matrix."""
    return top_k_per_group(_l2(as_float64(s), 1), kv_heads, heads // kv_heads)


def select_gdn(values, keys, key_heads: int, value_heads: int, key_dim: int,
               value_dim: int) -> tuple[Index, Index, Index, Index]:
    """Kept (key heads, value heads, key channels, value channels) of one GDN layer from its
    [Hv, dv] value-head and [Hk, dk] key-head score matrices."""
    v, k = as_float64(values), as_float64(keys)
    hk, per = k.shape[0], v.shape[0] // k.shape[0]
    groups = top_k_sorted(_l2(v.reshape(hk, -1), 1), key_heads)
    members = (groups[:, None] * per + np.arange(per)[None, :]).reshape(-1)
    channels = top_k_sorted(_l2(v[members], 0), value_dim)
    head_scores = _l2(v[members][:, channels], 1)
    heads = members[top_k_per_group(head_scores, key_heads, value_heads // key_heads)]
    key_channels = top_k_sorted(_l2(k[groups], 0), key_dim)
    return groups, heads, key_channels, channels


def check_gdn_importance(name: str) -> str:
    if name not in GDN_IMPORTANCE:
        raise PlanError(f"unknown GDN importance {name!r}; choose one of {', '.join(GDN_IMPORTANCE)}")
    return GDN_IMPORTANCE[name]


def blocks_to_keep(plan: Plan, dims: Dims, scores: Scores, required_kinds: tuple[str, ...] = ()) -> list[int]:
    """Kept block indices. Depth ranking drops the least important blocks, but always keeps the
    most important block of each kind in `required_kinds` (the architecture needs one) and every
    layer of a type in `dims.fixed_layer_types` (depth cannot remove it)."""
    if plan.drop_layers is not None:
        return [i for i in range(dims.num_layers) if i not in set(plan.drop_layers)]
    if plan.num_layers is None or plan.num_layers == dims.num_layers:
        return list(range(dims.num_layers))
    depth = scores.depth_kld if scores.depth_kld is not None else scores.depth_bi
    if depth is None:
        raise PlanError(
            "num_layers needs depth scores; calibrate with depth importance or give drop_layers"
        )
    depth = as_float64(depth).reshape(-1)
    if depth.size != dims.num_layers:
        raise ScoresError(f"depth scores cover {depth.size} blocks, the model has {dims.num_layers}")
    order = ranking(depth).tolist()
    pinned = [i for i in order if dims.block_kinds[i] in dims.fixed_layer_types]
    for kind in required_kinds:
        of_kind = [i for i in order if kind in unit_kinds(dims.block_kinds[i])]
        if of_kind and of_kind[0] not in pinned:
            pinned.append(of_kind[0])
    if len(pinned) > plan.num_layers:
        raise PlanError(
            f"num_layers={plan.num_layers} is too few: {len(pinned)} layers must stay ({_why_pinned(required_kinds, dims)}). "
            f"Valid values: {len(pinned)}..{dims.num_layers}"
        )
    rest = [i for i in order if i not in pinned][: plan.num_layers - len(pinned)]
    return sorted(pinned + rest)


def _why_pinned(required_kinds, dims: Dims) -> str:
    """Which layers depth pruning must keep, in words: one of each required unit kind, every fixed layer."""
    parts = []
    if required_kinds:
        parts.append(f"one layer of each of {', '.join(required_kinds)}")
    if dims.fixed_layer_types:
        parts.append(f"every layer of type {', '.join(dims.fixed_layer_types)}")
    return " and ".join(parts) or "at least one layer"


def _scores_for(table: dict, i: int, what: str):
    if i not in table:
        raise ScoresError(f"the scores have no {what} entry for block {i}; were they computed on this model?")
    return table[i]


def check_expert_importance(name: str) -> str:
    if name not in EXPERT_IMPORTANCE:
        raise PlanError(f"unknown expert importance {name!r}; choose one of {', '.join(EXPERT_IMPORTANCE)}")
    return EXPERT_IMPORTANCE[name]


def select(scores: Scores, plan: Plan, dims: Dims, required_kinds: tuple[str, ...] = (),
           owners: dict[tuple[str, int], int] | None = None, expert_importance: str = "output_norm",
           gdn_importance: str = "out_proj") -> Selection:
    """The kept indices for `plan` on a model with `dims`, using `scores`.

    `required_kinds`: unit kinds of which depth pruning keeps at least one (from the adapter).
    `owners`: units shared between layers, (kind, layer) -> owner layer (`Adapter.unit_owners`);
    every layer of a shared unit gets the owner's selection, made from the owner's scores.
    `expert_importance`: how routed experts are ranked, "output_norm" (Minitron: mean L2 norm of the
    expert's output over the tokens routed to it), "router_weighted" (REAP: that norm weighted by the
    gate value) or "frequency" (the share of routed tokens).
    `gdn_importance`: which activation ranks Gated DeltaNet value heads and channels, "out_proj" (the
    output projection's input, after the gated norm) or "value" (the value branch of the input projection)."""
    expert_table = check_expert_importance(expert_importance)
    gdn_table = check_gdn_importance(gdn_importance)
    plan.validate(dims)
    owners = owners or {}
    kept = blocks_to_keep(plan, dims, scores, required_kinds)
    sel = Selection(kept_blocks=kept)
    if plan.hidden_size is not None and plan.hidden_size != dims.hidden_size:
        if scores.hidden is None or as_float64(scores.hidden).size != dims.hidden_size:
            raise ScoresError("the scores' hidden-channel entry does not match this model's hidden size")
        sel.hidden = top_k_sorted(scores.hidden, plan.hidden_size)
    for i in kept:
        for kind in unit_kinds(dims.block_kinds[i]):
            owner = owners.get((kind, i), i)
            if kind == MAMBA and (plan.mamba_num_heads, plan.mamba_head_dim) != (None, None):
                s = _scores_for(scores.mamba, owner, "Mamba")
                if tuple(s.shape) != (dims.mamba_num_heads, dims.mamba_head_dim):
                    raise ScoresError(f"Mamba scores of block {owner} have shape {tuple(s.shape)}, the model "
                                      f"{(dims.mamba_num_heads, dims.mamba_head_dim)}")
                sel.mamba_heads[i], sel.mamba_channels[i] = select_mamba(
                    s, dims.mamba_n_groups, plan.mamba_num_heads or dims.mamba_num_heads,
                    plan.mamba_head_dim or dims.mamba_head_dim,
                )
            elif kind == MLP and plan.ffn_hidden_size is not None:
                s = _scores_for(scores.ffn, owner, "FFN")
                sel.ffn[i] = top_k_sorted(s, plan.ffn_hidden_size)
            elif kind == ATTENTION and plan.num_attention_heads is not None:
                s = _scores_for(scores.attention, owner, "attention")
                sel.attention_heads[i] = select_attention(s, dims.num_key_value_heads, plan.num_attention_heads)
            elif kind == MOE:
                _select_moe(sel, scores, plan, dims, i, owner, expert_table)
            elif kind == GDN:
                _select_gdn(sel, scores, plan, dims, i, owner, gdn_table)
    return sel


def _select_moe(sel: Selection, scores: Scores, plan: Plan, dims: Dims, i: int, owner: int, expert_table: str) -> None:
    if plan.num_moe_experts is not None:
        s = _scores_for(getattr(scores, expert_table), owner, "expert")
        sel.moe_experts[i] = top_k_per_group(s, dims.moe_n_group, plan.num_moe_experts // dims.moe_n_group)
    if plan.moe_ffn_hidden_size is not None:
        sel.moe_ffn[i] = top_k_sorted(_scores_for(scores.moe_ffn, owner, "expert FFN"), plan.moe_ffn_hidden_size)
    if plan.moe_shared_expert_intermediate_size is not None:
        s = _scores_for(scores.moe_shared_ffn, owner, "shared expert")
        sel.moe_shared_ffn[i] = top_k_sorted(s, plan.moe_shared_expert_intermediate_size)


_GDN_FIELDS = ("linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim")


def _select_gdn(sel: Selection, scores: Scores, plan: Plan, dims: Dims, i: int, owner: int, table: str) -> None:
    if all(getattr(plan, f) is None for f in _GDN_FIELDS):
        return
    target = plan.target_dims(dims, [])
    values = _scores_for(getattr(scores, table), owner, "GDN value-head")
    keys = _scores_for(scores.gdn_key, owner, "GDN key-head")
    (sel.gdn_key_heads[i], sel.gdn_value_heads[i], sel.gdn_key_channels[i],
     sel.gdn_value_channels[i]) = select_gdn(values, keys, *(getattr(target, f) for f in _GDN_FIELDS))
