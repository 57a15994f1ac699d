"""OLMo Hybrid (`olmo_hybrid`, Ai2): Gated DeltaNet layers (pre-norm, Llama-style) and OLMo-3 attention
layers (post-norm: `post_attention_layernorm`, `post_feedforward_layernorm`), each with a gated MLP.

- GDN mixers: separate q/k/v/a/b/g projections (architectures/gdn.py); checkpoints store the short
  convolution as `q_conv1d`, `k_conv1d`, `v_conv1d`, which transformers concatenates on load.
- Attention: `q_norm` normalises all query heads together (its weight is cut with the heads) and
  `k_norm` all KV heads; `head_dim` is not a config field but `hidden_size // num_attention_heads`, so
  heads and hidden size can only be pruned together, keeping that quotient.
- Depth keeps at least one GDN and one attention layer (the config refuses otherwise).
"""

from __future__ import annotations

import copy

from .base import ATTENTION, GDN, MLP, Adapter, Dims, LayerSpec, Unrepresentable, UnsupportedArchitecture, layer_type
from .gdn import OLMO_HYBRID_GDN, check_gdn, gdn_fields
from .layouts import GATED_MLP, outer_rules, qkvo_attention

_MIXER = {"linear_attention": GDN, "full_attention": ATTENTION}
_TYPE = {GDN: "linear_attention", ATTENTION: "full_attention"}


def olmo_attention():
    """OLMo-3 attention: q/k/v/o, and q_norm / k_norm over all heads' channels."""
    base = qkvo_attention(bias="all")
    rules = {**base.rules, "q_norm.weight": ("attn_q",)}

    def count(d: Dims) -> int:
        return base.count(d) + (d.num_attention_heads + d.num_key_value_heads) * d.attention_head_dim

    def shapes(d: Dims) -> dict[str, tuple[int, ...]]:
        hd = d.attention_head_dim
        return {**base.shapes(d), "q_norm.weight": (d.num_attention_heads * hd,),
                "k_norm.weight": (d.num_key_value_heads * hd,)}

    return type(base)(ATTENTION, rules, hook=base.hook, hook_on=base.hook_on, count=count, shapes=shapes,
                      cache=base.cache)


class OlmoHybridAdapter(Adapter):
    model_types = ("olmo_hybrid",)
    layers_prefix = "model.layers."
    global_rules = outer_rules("model.embed_tokens", "model.norm")
    required_kinds = (GDN, ATTENTION)
    layer_specs = {
        layer_type(GDN, MLP): LayerSpec(units=(("linear_attn.", OLMO_HYBRID_GDN), ("mlp.", GATED_MLP)),
                                        norms=("input_layernorm", "post_attention_layernorm")),
        layer_type(ATTENTION, MLP): LayerSpec(units=(("self_attn.", olmo_attention()), ("mlp.", GATED_MLP)),
                                              norms=("post_attention_layernorm", "post_feedforward_layernorm")),
    }

    def check_supported(self, config) -> None:
        unknown = sorted({t for t in config.layer_types if t not in _MIXER})
        if unknown:
            raise UnsupportedArchitecture(f"unknown olmo_hybrid layer types {unknown}; known: {sorted(_MIXER)}")

    def dims(self, config) -> Dims:
        self.check_supported(config)
        return Dims(
            block_kinds=tuple(layer_type(_MIXER[t], MLP) for t in config.layer_types),
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            tied_embeddings=bool(config.tie_word_embeddings),
            ffn_hidden_size=config.intermediate_size,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_key_value_heads,
            attention_head_dim=config.hidden_size // config.num_attention_heads,
            attention_bias=bool(config.attention_bias),
            **gdn_fields(config),
        )

    def check_representable(self, dims: Dims, original: Dims | None = None) -> None:
        super().check_representable(dims, original)
        check_gdn(dims, original)
        if dims.hidden_size != dims.num_attention_heads * dims.attention_head_dim:
            top = original or dims
            hd, kv = dims.attention_head_dim, dims.num_key_value_heads
            pairs = [(n, n * hd) for n in range(kv, top.num_attention_heads + 1, kv)]
            raise Unrepresentable(
                f"olmo_hybrid derives head_dim as hidden_size // num_attention_heads, so hidden_size="
                f"{dims.hidden_size} with {dims.num_attention_heads} attention heads would change head_dim "
                f"({hd}). Prune them together, hidden_size = num_attention_heads x {hd}: "
                f"(num_attention_heads, hidden_size) in {pairs}")

    def make_config(self, config, dims: Dims):
        new = copy.deepcopy(config)
        new.hidden_size = dims.hidden_size
        new.intermediate_size = dims.ffn_hidden_size
        new.num_attention_heads = dims.num_attention_heads
        new.num_hidden_layers = dims.num_layers
        new.layer_types = [_TYPE[k.split("+")[0]] for k in dims.block_kinds]
        for field in ("linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim"):
            setattr(new, field, getattr(dims, field))
        return type(config).from_dict(new.to_dict())
