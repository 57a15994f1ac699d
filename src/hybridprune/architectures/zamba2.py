"""Zamba2 (`zamba2`): Mamba2 layers, and hybrid layers that call a transformer block shared between
call sites before their own Mamba2 mixer.

- A hybrid layer holds `shared_transformer` (RMSNorm over 2H, attention that reads
  `concat(hidden, embeddings)` of width 2H, RMSNorm, an MLP with fused `gate_up_proj [2F, H]`),
  `linear [H, H]` and `mamba_decoder` (RMSNorm + Mamba2). The `num_mem_blocks` transformer blocks are
  reused cyclically by the hybrid layers in call order, each call site with its own LoRA adapters
  (`*_adapter_list.{call site}`).
- Sharing stays consistent: the shared MLP is scored over all its call sites into the first one's
  entry (`unit_owners`) and every call site keeps the same neurons.
- Derived widths make some targets unwritable, and they are refused with the reason:
  `attention_head_dim = 2 * hidden_size // num_attention_heads` (so no hidden-size or attention-head
  pruning), `mamba_headdim = mamba_expand * hidden_size // n_mamba_heads` (so no Mamba head-dim
  pruning, and Mamba head pruning only where the integer `mamba_expand` can absorb it); hybrid layers
  cannot be dropped (the adapters and block cycle follow call order). Prunable: FFN neurons of the
  shared MLP, Mamba heads, and depth over the Mamba layers.
"""

from __future__ import annotations

import copy
import re

from .base import ATTENTION, MAMBA, MLP, Adapter, Dims, LayerSpec, ParamRule, Unrepresentable, layer_type
from .expand import check_expand, expand_of, mamba_fields
from .layouts import MAMBA2_MIXER, fused_gated_mlp, qkvo_attention, outer_rules

MAMBA_LAYER, HYBRID_LAYER = MAMBA, layer_type(MAMBA, ATTENTION, MLP)
_ADAPTER_INDEX = re.compile(r"_adapter_list\.\d+\.")
_SHARED_MLP = fused_gated_mlp("gate_up_proj", "down_proj")
_SHARED_ATTENTION = qkvo_attention(input_axis="hidden2")


class Zamba2Adapter(Adapter):
    model_types = ("zamba2",)
    config_spellings = {"n_mamba_heads": "mamba_num_heads", "mamba_headdim": "mamba_head_dim",
                        "mamba_d_state": "ssm_state_size"}
    layers_prefix = "model.layers."
    global_rules = outer_rules("model.embed_tokens", "model.final_layernorm")
    layer_specs = {
        MAMBA_LAYER: LayerSpec(units=(("mamba.", MAMBA2_MIXER),), norms=("input_layernorm",)),
        HYBRID_LAYER: LayerSpec(
            units=(("mamba_decoder.mamba.", MAMBA2_MIXER),
                   ("shared_transformer.self_attn.", _SHARED_ATTENTION),
                   ("shared_transformer.feed_forward.", _SHARED_MLP)),
            norms=("mamba_decoder.input_layernorm", "shared_transformer.pre_ff_layernorm"),
            # (the call sites' adapters: `_shared_block_shapes`)
            extra_shapes=lambda d: {"shared_transformer.input_layernorm.weight": (2 * d.hidden_size,),
                                    "linear.weight": (d.hidden_size, d.hidden_size)},
            extra_rules={
                "shared_transformer.input_layernorm.weight": ("hidden2",),
                "linear.weight": ("hidden", "hidden"),
                # per-call-site LoRA adapters (any call-site index; see param_rules)
                "shared_transformer.feed_forward.gate_up_proj_adapter_list.*.0.weight": (None, "hidden"),
                "shared_transformer.feed_forward.gate_up_proj_adapter_list.*.1.weight": ("ffn_gate_up", None),
                "shared_transformer.self_attn.linear_q_adapter_list.*.0.weight": (None, "hidden2"),
                "shared_transformer.self_attn.linear_q_adapter_list.*.1.weight": ("attn_q", None),
                "shared_transformer.self_attn.linear_k_adapter_list.*.0.weight": (None, "hidden2"),
                "shared_transformer.self_attn.linear_v_adapter_list.*.0.weight": (None, "hidden2"),
            },
        ),
    }

    def dims(self, config) -> Dims:
        kinds = tuple(HYBRID_LAYER if t == "hybrid" else MAMBA_LAYER for t in config.layers_block_type)
        return Dims(
            block_kinds=kinds,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            tied_embeddings=bool(config.tie_word_embeddings),
            ffn_hidden_size=config.intermediate_size,
            **mamba_fields(config, heads="n_mamba_heads", head_dim="mamba_headdim", groups="mamba_ngroups",
                           proj_bias="add_bias_linear", conv_bias="use_conv_bias"),
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_key_value_heads,
            attention_head_dim=config.attention_head_dim,
            mlp_bias=bool(config.add_bias_linear),
            fixed_layer_types=(HYBRID_LAYER,),
            extras=(("num_mem_blocks", config.num_mem_blocks), ("adapter_rank", config.adapter_rank),
                    ("attention_adapters", int(bool(config.use_shared_attention_adapter)))),
        )

    def param_rules(self, keys: list[str], dims: Dims) -> dict[str, ParamRule]:
        rules = super().param_rules(keys, dims)
        spec_rules = self.layer_specs[HYBRID_LAYER].rules()
        for key in keys:
            if key in rules or "_adapter_list." not in key or not key.startswith(self.layers_prefix):
                continue
            index, name = key[len(self.layers_prefix):].split(".", 1)
            axes = spec_rules.get(_ADAPTER_INDEX.sub("_adapter_list.*.", name))
            if axes is not None:
                rules[key] = ParamRule(int(index), axes)
        return rules

    def unit_owners(self, dims: Dims) -> dict[tuple[str, int], int]:
        hybrid = [i for i, t in enumerate(dims.block_kinds) if t == HYBRID_LAYER]
        blocks = dims.extra("num_mem_blocks")
        owners = {}
        for call, i in enumerate(hybrid):
            owner = hybrid[call % blocks]
            owners[(MLP, i)] = owners[(ATTENTION, i)] = owner
        return owners

    def num_parameters(self, dims: Dims, *, embeddings: bool = True) -> int:
        """Distinct parameters: each shared block once, each call site's adapters once."""
        h, f, r = dims.hidden_size, dims.ffn_hidden_size, dims.extra("adapter_rank")
        total = h + (dims.vocab_size * h * (1 if dims.tied_embeddings else 2) if embeddings else 0)
        mamba_layer = h + MAMBA2_MIXER.count(dims)
        calls = dims.block_kinds.count(HYBRID_LAYER)
        total += dims.num_layers * mamba_layer + calls * h * h  # every layer's Mamba; hybrid `linear`
        shared = 2 * h + _SHARED_ATTENTION.count(dims) + h + _SHARED_MLP.count(dims)
        total += min(calls, dims.extra("num_mem_blocks")) * shared
        per_call = r * h + 2 * f * r  # the MLP adapter
        if dims.extra("attention_adapters"):
            per_call += 3 * (r * 2 * h + r * 2 * h)
        return total + calls * per_call

    def expected_shapes(self, config) -> tuple[dict[str, tuple[int, ...]], set[str]]:
        """Each shared block's tensors once, under the first layer that calls it, with the adapters of
        every call site that uses it; at the later call sites the same names are tied to those."""
        dims = self.dims(config)
        shapes = {k: s for k, s in self.layout_shapes(dims).items() if ".shared_transformer." not in k}
        tied = {"lm_head.weight"} if dims.tied_embeddings else set()
        hybrid = [i for i, t in enumerate(dims.block_kinds) if t == HYBRID_LAYER]
        blocks = dims.extra("num_mem_blocks")
        for call, i in enumerate(hybrid):
            block = _shared_block_shapes(dims, [c for c in range(len(hybrid)) if c % blocks == call % blocks])
            names = {f"{self.layers_prefix}{i}.{name}": shape for name, shape in block.items()}
            if call < blocks:
                shapes.update(names)
            else:
                tied.update(names)
        return shapes, tied

    def check_representable(self, dims: Dims, original: Dims | None = None) -> None:
        super().check_representable(dims, original)
        base = original or dims
        if original is not None:
            refused = [(name, getattr(dims, name)) for name, why in _DERIVED.items()
                       if getattr(dims, name) != getattr(original, name)]
            if refused:
                name = refused[0][0]
                raise Unrepresentable(
                    f"Zamba2 cannot prune {name}: {_DERIVED[name]} Prunable on Zamba2: ffn_hidden_size "
                    f"(1..{base.ffn_hidden_size}), mamba_num_heads ({_valid_heads(base)}) and depth over the "
                    f"Mamba layers (drop_layers from {[i for i, t in enumerate(base.block_kinds) if t == MAMBA_LAYER]})."
                )
        check_expand(dims, original, "Zamba2")

    def make_config(self, config, dims: Dims):
        self.check_representable(dims)
        new = copy.deepcopy(config)
        new.intermediate_size = dims.ffn_hidden_size
        new.n_mamba_heads = dims.mamba_num_heads
        new.mamba_expand = expand_of(dims)
        new.layers_block_type = ["hybrid" if t == HYBRID_LAYER else "linear_attention" for t in dims.block_kinds]
        new.num_hidden_layers = dims.num_layers
        # Derived fields travel in to_dict() and would override __post_init__'s recomputation.
        new.hybrid_layer_ids = [i for i, t in enumerate(dims.block_kinds) if t == HYBRID_LAYER]
        new.mamba_headdim = dims.mamba_head_dim
        return type(config).from_dict(new.to_dict())


def _shared_block_shapes(dims: Dims, calls: list[int]) -> dict[str, tuple[int, ...]]:
    """A shared transformer block's tensors (names inside a hybrid layer) with the LoRA adapters of call
    sites `calls`: the MLP's (rank r, [r, H] then [2F, r]) and, with `use_shared_attention_adapter`, the
    q/k/v projections' ([r, 2H] then [2H, r])."""
    h, f, r = dims.hidden_size, dims.ffn_hidden_size, dims.extra("adapter_rank")
    spec = Zamba2Adapter.layer_specs[HYBRID_LAYER].shapes(dims)
    out = {name: shape for name, shape in spec.items() if name.startswith("shared_transformer.")}
    mlp, attention = "shared_transformer.feed_forward.", "shared_transformer.self_attn."
    for c in calls:
        out.update({f"{mlp}gate_up_proj_adapter_list.{c}.0.weight": (r, h),
                    f"{mlp}gate_up_proj_adapter_list.{c}.1.weight": (2 * f, r)})
        if dims.extra("attention_adapters"):
            for x in "qkv":
                out.update({f"{attention}linear_{x}_adapter_list.{c}.0.weight": (r, 2 * h),
                            f"{attention}linear_{x}_adapter_list.{c}.1.weight": (2 * h, r)})
    return out


_DERIVED = {
    "hidden_size": "the shared attention reads concat(hidden, embeddings) and its head_dim is derived as "
                   "2 * hidden_size // num_attention_heads, so pruning hidden channels would change the "
                   "attention head size.",
    "num_attention_heads": "the attention head_dim is derived as 2 * hidden_size // num_attention_heads, so "
                           "fewer heads would each get more channels.",
    "mamba_head_dim": "mamba_headdim is derived as mamba_expand * hidden_size // n_mamba_heads and cannot be "
                      "set on its own.",
}


def _valid_heads(dims: Dims) -> list[int]:
    g, hd, h = dims.mamba_n_groups, dims.mamba_head_dim, dims.hidden_size
    return [n for n in range(g, dims.mamba_num_heads + 1, g) if (n * hd) % h == 0]
