"""`Dims`: every size pruning can change, in the Minitron vocabulary, and the naming of layer types.

A layer type is named by the unit kinds it holds joined with "+" ("mamba", "attention+mlp",
"mamba+attention+mlp"), so `Dims.block_kinds` alone tells the algorithms which units every layer has.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

# Unit kinds the algorithms understand (a unit kind is also a Scores group).
MAMBA, ATTENTION, MLP, MOE = "mamba", "attention", "mlp", "moe"
#: a Gated DeltaNet mixer (gated delta-rule linear attention: Qwen3.5, Qwen3-Next, OLMo Hybrid)
GDN = "gdn"
#: joins unit kinds into a layer-type name: "mamba+mlp" holds a Mamba mixer and an MLP
KIND_SEPARATOR = "+"


#: separates a family's variant of a layer type, which depth pruning carries along
#: ("attention+mlp@sliding_attention": a Qwen3 layer with sliding-window attention)
VARIANT_SEPARATOR = "@"


def unit_kinds(layer_type: str) -> tuple[str, ...]:
    """The unit kinds a layer type holds, from its name ("attention+mlp" -> ("attention", "mlp"))."""
    return tuple(layer_type.split(VARIANT_SEPARATOR, 1)[0].split(KIND_SEPARATOR))


def layer_type(*kinds: str) -> str:
    return KIND_SEPARATOR.join(kinds)


@dataclass(frozen=True)
class Dims:
    """Every size the pruning can change, plus the fixed ones the parameter count needs.

    Widths are global per unit kind (stock HF configs cannot express per-layer widths).
    `block_kinds` is the per-layer type sequence (see `unit_kinds`); depth pruning removes entries.
    `fixed_layer_types`: layer types that depth pruning never removes (e.g. Zamba2's layers that call
    a shared block); `attention_qk_norm`: per-head q/k RMSNorms (Qwen3), which pruning never touches.
    """

    block_kinds: tuple[str, ...]
    vocab_size: int
    hidden_size: int
    tied_embeddings: bool = False
    ffn_hidden_size: int | None = None
    mamba_num_heads: int | None = None
    mamba_head_dim: int | None = None
    mamba_n_groups: int | None = None
    mamba_state_size: int | None = None
    mamba_conv_kernel: int | None = None
    mamba_proj_bias: bool = False
    mamba_conv_bias: bool = True
    mamba_has_norm: bool = True
    mamba_out_proj_bias: bool | None = None  # None: the same as mamba_proj_bias
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    attention_head_dim: int | None = None
    attention_bias: bool = False
    mlp_bias: bool = False
    attention_qk_norm: bool = False
    #: MoE blocks: routed experts, their FFN width (one for every expert), the shared expert's width
    #: (None: no shared expert) and the latent size the experts work in (None: they read `hidden_size`)
    num_moe_experts: int | None = None
    moe_ffn_hidden_size: int | None = None
    moe_shared_expert_intermediate_size: int | None = None
    moe_latent_size: int | None = None
    #: routing: experts per token, routing groups (kept experts stay in their group, every group the
    #: same size) and how many groups each token may use
    moe_top_k: int | None = None
    moe_n_group: int = 1
    moe_topk_group: int = 1
    #: Gated DeltaNet mixers, in the config's own names: key heads (each serves
    #: `linear_num_value_heads / linear_num_key_heads` consecutive value heads, its group), their
    #: channels (the delta rule's state dimension) and the value heads and channels; conv window
    linear_num_key_heads: int | None = None
    linear_num_value_heads: int | None = None
    linear_key_head_dim: int | None = None
    linear_value_head_dim: int | None = None
    linear_conv_kernel_dim: int | None = None
    #: gated full attention: q_proj emits a query and an output gate per head (Qwen3.5, Qwen3-Next)
    attention_gated: bool = False
    fixed_layer_types: tuple[str, ...] = ()
    #: family-specific fixed quantities the adapter needs to count parameters (name, value) pairs
    extras: tuple[tuple[str, int], ...] = ()

    def extra(self, name: str, default: int | None = None) -> int | None:
        return dict(self.extras).get(name, default)

    @property
    def num_layers(self) -> int:
        return len(self.block_kinds)

    def has_kind(self, kind: str) -> bool:
        """Whether any layer holds a unit of `kind`."""
        return any(kind in unit_kinds(t) for t in self.block_kinds)

    def layers_of(self, kind: str) -> list[int]:
        """The layers holding a unit of `kind` (a Bamba layer holds both a mixer and an MLP)."""
        return [i for i, t in enumerate(self.block_kinds) if kind in unit_kinds(t)]

    def count_of(self, kind: str) -> int:
        return len(self.layers_of(kind))

    def replace(self, **changes: Any) -> "Dims":
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["block_kinds"] = list(self.block_kinds)
        d["fixed_layer_types"] = list(self.fixed_layer_types)
        d["extras"] = [list(pair) for pair in self.extras]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Dims":
        d = dict(d)
        d["block_kinds"] = tuple(d["block_kinds"])
        d["fixed_layer_types"] = tuple(d.get("fixed_layer_types", ()))
        d["extras"] = tuple(tuple(pair) for pair in d.get("extras", ()))
        return cls(**d)
