"""What a MoE block's pruned sizes must satisfy, shared by plan validation, the search space and the
adapters' representability checks.

- Routing: experts stay in their routing group (`n_group`) and every group keeps the same number, as
  Mamba heads do in their B/C groups; a token must still find `num_experts_per_tok` experts in the
  `topk_group` groups it may use.
- Layout: transformers runs routed experts with grouped matrix multiplies, whose rows must stay
  16-byte aligned.
"""

from __future__ import annotations

from .errors import Unrepresentable
from .dims import MOE, Dims


def valid_expert_counts(dims: Dims) -> list[int]:
    """Expert counts (per MoE block, up to the current one) that routing can use: multiples of the
    routing groups, leaving every token its `num_experts_per_tok` experts."""
    g, k = dims.moe_n_group, dims.moe_top_k or 1
    return [v for v in range(g, dims.num_moe_experts + 1, g) if dims.moe_topk_group * v // g >= k]


#: transformers runs routed experts with grouped matrix multiplies (`torch._grouped_mm`, on CPU and
#: GPU), which need 16-byte aligned rows: widths the experts read or write must be multiples of 8
#: (bf16) elements.
EXPERT_ALIGNMENT = 8


def expert_widths(dims: Dims) -> dict[str, int]:
    """The widths that lay out the rows of the 3-D expert tensors: the expert FFN, and the hidden size
    unless the experts work in a latent space."""
    widths = {"moe_ffn_hidden_size": dims.moe_ffn_hidden_size}
    if dims.moe_latent_size is None:
        widths["hidden_size"] = dims.hidden_size
    return widths


def check_expert_alignment(dims: Dims, original: Dims | None = None) -> None:
    """Raise Unrepresentable, listing valid values, for expert widths the grouped matmuls cannot run."""
    if not dims.has_kind(MOE):
        return
    for name, value in expert_widths(dims).items():
        if value % EXPERT_ALIGNMENT:
            top = getattr(original or dims, name)
            valid = list(range(EXPERT_ALIGNMENT, top + 1, EXPERT_ALIGNMENT))
            shown = valid if len(valid) <= 8 else [*valid[:3], "...", *valid[-3:]]
            raise Unrepresentable(
                f"{name}={value} is not a multiple of {EXPERT_ALIGNMENT}: transformers runs MoE experts with "
                f"grouped matrix multiplies that need 16-byte aligned rows, so the pruned model would not run. "
                f"Valid values: multiples of {EXPERT_ALIGNMENT} ({', '.join(map(str, shown))})")


class UnroutableConfig(ValueError):
    """A source config whose MoE router cannot route a token (refused before the model is built)."""


#: the routing sizes, in Dims names, and what each must be
_ROUTING_FIELDS = ("num_moe_experts", "moe_top_k", "moe_n_group", "moe_topk_group")


def check_routing(dims: Dims, names: dict[str, str], *, group_top: int = 1) -> None:
    """Raise UnroutableConfig, naming the config fields (`names`: Dims field -> config field), their
    values and the rule, when the router these sizes describe cannot give every token its experts.

    `group_top`: how many experts of a group the router reads to score the group (Nemotron-H: 2)."""
    if not dims.has_kind(MOE):
        return

    def show(*fields: str) -> str:
        return ", ".join(f"{names.get(f, f)}={getattr(dims, f)}" for f in fields)

    for field in _ROUTING_FIELDS:
        value = getattr(dims, field)
        if field == "moe_top_k" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UnroutableConfig(f"{show(field)}: the router needs a whole number >= 1")
    e, g, kg, k = dims.num_moe_experts, dims.moe_n_group, dims.moe_topk_group, dims.moe_top_k or 1
    if e % g:
        raise UnroutableConfig(f"{show('num_moe_experts', 'moe_n_group')}: the router splits the experts into "
                               f"{names.get('moe_n_group')} groups of equal size, so the experts must be a multiple "
                               "of the groups")
    if kg > g:
        raise UnroutableConfig(f"{show('moe_topk_group', 'moe_n_group')}: a token cannot use more routing groups "
                               "than there are")
    if e // g < group_top:
        raise UnroutableConfig(f"{show('num_moe_experts', 'moe_n_group')}: the router scores a group by its best "
                               f"{group_top} experts, so every group needs at least {group_top}")
    if k > e:
        raise UnroutableConfig(f"{show('moe_top_k', 'num_moe_experts')}: a token cannot use more experts than "
                               "there are")
    if k > kg * (e // g):
        raise UnroutableConfig(f"{show('moe_top_k', 'moe_topk_group', 'num_moe_experts', 'moe_n_group')}: a token "
                               f"picks its experts in {kg} group(s) of {e // g}, fewer than the {k} it needs "
                               f"({names.get('moe_top_k')} <= {names.get('moe_topk_group')} x experts per group)")


def check_deepseek_moe(dims: Dims, original: Dims | None, family: str) -> None:
    """Raise Unrepresentable, listing valid values, for sizes a DeepSeek-V3 MoE block cannot hold: a shared
    expert `moe_intermediate_size x n_shared_experts` wide (its width a multiple of the experts'), and a
    router that scores each routing group by its best two experts."""
    if not dims.has_kind(MOE):
        return
    f, fs = dims.moe_ffn_hidden_size, dims.moe_shared_expert_intermediate_size
    if fs % f:
        top = (original or dims).moe_shared_expert_intermediate_size
        raise Unrepresentable(
            f"moe_shared_expert_intermediate_size={fs} is not a multiple of moe_ffn_hidden_size={f}: {family} "
            f"builds its shared expert moe_intermediate_size x n_shared_experts wide. Valid values: "
            f"{list(range(f, top + 1, f)) or 'none'}")
    if dims.num_moe_experts // dims.moe_n_group < 2:
        valid = list(range(2 * dims.moe_n_group, (original or dims).num_moe_experts + 1, dims.moe_n_group))
        raise Unrepresentable(
            f"num_moe_experts={dims.num_moe_experts} leaves fewer than 2 experts in each of the "
            f"{dims.moe_n_group} routing groups; the router scores a group by its best two experts. "
            f"Valid values: {valid}")
