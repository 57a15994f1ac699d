"""What a MoE block's pruned sizes must satisfy, shared by plan validation, the search space and the
adapters' representability checks.

- Routing: experts stay in their routing group (`n_group`) and every group keeps the same number, as
  Mamba heads do in their B/C groups; a token must still find `num_experts_per_tok` experts in the
  `topk_group` groups it may use.
- Layout: transformers runs routed experts with grouped matrix multiplies, whose rows must stay
  16-byte aligned.
"""

from __future__ import annotations

from .base import Unrepresentable
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
