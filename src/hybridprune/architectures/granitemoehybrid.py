"""GraniteMoeHybrid / Granite-4.0-H (`granitemoehybrid`), dense variants (`num_local_experts=0`).

- Every layer holds a Mamba2 mixer or attention (from `layer_types`), then `shared_mlp`: a gated MLP
  whose gate and up projections are one fused `input_linear [2F, H]` (rows `i` and `F + i` pruned
  together) with `output_linear [H, F]`.
- The µP scalars (`embedding_multiplier`, `residual_multiplier`, `attention_multiplier`,
  `logits_scaling`) and the position embedding type (RoPE or none) are kept as they are.
- head_dim is written explicitly (the attention would re-derive it from hidden_size).
- The same integer `mamba_expand` coupling as Bamba (see expand.py).
"""

from __future__ import annotations

import copy

from .base import ATTENTION, MAMBA, MLP, Adapter, Dims, LayerSpec, UnsupportedArchitecture, layer_type
from .expand import check_expand, expand_of, mamba_fields
from .layouts import MAMBA2_MIXER, QKVO_ATTENTION, fused_gated_mlp, outer_rules

MAMBA_LAYER, ATTENTION_LAYER = layer_type(MAMBA, MLP), layer_type(ATTENTION, MLP)
_NORMS = ("input_layernorm", "post_attention_layernorm")
_SHARED_MLP = fused_gated_mlp("input_linear", "output_linear")
# Layer-type names in configs (new and legacy spellings) -> layer types.
_TYPE_OF_NAME = {"mamba": MAMBA_LAYER, "linear_attention": MAMBA_LAYER,
                 "attention": ATTENTION_LAYER, "full_attention": ATTENTION_LAYER}
_NAME_OF_TYPE = {MAMBA_LAYER: "mamba", ATTENTION_LAYER: "attention"}


class GraniteMoeHybridAdapter(Adapter):
    model_types = ("granitemoehybrid",)
    layers_prefix = "model.layers."
    global_rules = outer_rules("model.embed_tokens", "model.norm")
    layer_specs = {
        MAMBA_LAYER: LayerSpec(units=(("mamba.", MAMBA2_MIXER), ("shared_mlp.", _SHARED_MLP)), norms=_NORMS),
        ATTENTION_LAYER: LayerSpec(units=(("self_attn.", QKVO_ATTENTION), ("shared_mlp.", _SHARED_MLP)), norms=_NORMS),
    }

    def check_supported(self, config) -> None:
        if getattr(config, "num_local_experts", 0):
            raise UnsupportedArchitecture(
                f"this Granite checkpoint has MoE layers (num_local_experts={config.num_local_experts}); "
                "MoE pruning is not supported yet. Dense Granite-4.0-H (num_local_experts=0) is supported."
            )
        unknown = sorted({t for t in config.layer_types if t not in _TYPE_OF_NAME})
        if unknown:
            raise UnsupportedArchitecture(f"unknown Granite layer types {unknown}; known: {sorted(_TYPE_OF_NAME)}")

    # transformers 5.24's hybrid cache needs an attention layer: without one, even a plain forward
    # with use_cache=True raises in `get_seq_length`.
    required_kinds = (ATTENTION,)

    def dims(self, config) -> Dims:
        nq = config.num_attention_heads
        return Dims(
            block_kinds=tuple(_TYPE_OF_NAME[t] for t in config.layer_types),
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            tied_embeddings=bool(config.tie_word_embeddings),
            ffn_hidden_size=config.shared_intermediate_size,
            **mamba_fields(config),
            num_attention_heads=nq,
            num_key_value_heads=config.num_key_value_heads,
            attention_head_dim=getattr(config, "head_dim", None) or config.hidden_size // nq,
            attention_bias=bool(config.attention_bias),
        )

    def check_representable(self, dims: Dims, original: Dims | None = None) -> None:
        super().check_representable(dims, original)
        check_expand(dims, original, "GraniteMoeHybrid")

    def make_config(self, config, dims: Dims):
        self.check_representable(dims)
        new = copy.deepcopy(config)
        new.hidden_size = dims.hidden_size
        new.shared_intermediate_size = dims.ffn_hidden_size
        new.num_attention_heads = dims.num_attention_heads
        new.head_dim = dims.attention_head_dim  # else re-derived as hidden_size // num_attention_heads
        new.mamba_n_heads = dims.mamba_num_heads
        new.mamba_d_head = dims.mamba_head_dim
        new.mamba_expand = expand_of(dims)
        new.num_hidden_layers = dims.num_layers
        old_names = list(config.layer_types)
        new_style = any(n in ("linear_attention", "full_attention") for n in old_names)
        names = {MAMBA_LAYER: "linear_attention" if new_style else "mamba",
                 ATTENTION_LAYER: "full_attention" if new_style else "attention"}
        new.layer_types = [names[t] for t in dims.block_kinds]
        return type(config).from_dict(new.to_dict())
