"""Bamba (`bamba`): every layer holds a Mamba2 mixer or attention, then a gated MLP, each behind its
own RMSNorm; depth removes the whole layer.

- The layout comes from `attn_layer_indices`, renumbered for the kept layers.
- The config validates `mamba_d_head * mamba_n_heads == mamba_expand * hidden_size` with an integer
  `mamba_expand` (see expand.py): other targets are refused with the representable ones listed.
- Attention derives head_dim as `hidden_size // num_attention_heads` unless the config carries
  `head_dim`, so it is written explicitly. RoPE is partial (factor 0.5, hard-coded by the config).
"""

from __future__ import annotations

import copy

from .base import ATTENTION, MAMBA, MLP, Adapter, Dims, LayerSpec, layer_type
from .expand import check_expand, expand_of, mamba_fields
from .layouts import GATED_MLP, MAMBA2_MIXER, QKVO_ATTENTION, outer_rules

MAMBA_LAYER, ATTENTION_LAYER = layer_type(MAMBA, MLP), layer_type(ATTENTION, MLP)
_NORMS = ("input_layernorm", "pre_ff_layernorm")


class BambaAdapter(Adapter):
    model_types = ("bamba",)
    layers_prefix = "model.layers."
    global_rules = outer_rules("model.embed_tokens", "model.final_layernorm")
    layer_specs = {
        MAMBA_LAYER: LayerSpec(units=(("mamba.", MAMBA2_MIXER), ("feed_forward.", GATED_MLP)), norms=_NORMS),
        ATTENTION_LAYER: LayerSpec(units=(("self_attn.", QKVO_ATTENTION), ("feed_forward.", GATED_MLP)), norms=_NORMS),
    }
    scan_chunk_field = "mamba_chunk_size"
    config_spellings = {"mamba_n_heads": "mamba_num_heads", "mamba_d_head": "mamba_head_dim",
                        "mamba_d_state": "ssm_state_size"}

    # transformers 5.24's hybrid cache needs an attention layer: without one, even a plain forward
    # with use_cache=True raises in `get_seq_length`.
    required_kinds = (ATTENTION,)

    def dims(self, config) -> Dims:
        attn = set(config.attn_layer_indices or ())
        kinds = tuple(ATTENTION_LAYER if i in attn else MAMBA_LAYER for i in range(config.num_hidden_layers))
        nq = config.num_attention_heads
        return Dims(
            block_kinds=kinds,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            tied_embeddings=bool(config.tie_word_embeddings),
            ffn_hidden_size=config.intermediate_size,
            **mamba_fields(config),
            num_attention_heads=nq,
            num_key_value_heads=config.num_key_value_heads,
            attention_head_dim=getattr(config, "head_dim", None) or config.hidden_size // nq,
            attention_bias=bool(config.attention_bias),
            mlp_bias=bool(config.mlp_bias),
        )

    def check_representable(self, dims: Dims, original: Dims | None = None) -> None:
        super().check_representable(dims, original)
        check_expand(dims, original, "Bamba")

    def make_config(self, config, dims: Dims):
        self.check_representable(dims)
        new = copy.deepcopy(config)
        new.hidden_size = dims.hidden_size
        new.intermediate_size = dims.ffn_hidden_size
        new.num_attention_heads = dims.num_attention_heads
        new.head_dim = dims.attention_head_dim
        new.mamba_n_heads = dims.mamba_num_heads
        new.mamba_d_head = dims.mamba_head_dim
        new.mamba_expand = expand_of(dims)
        new.num_hidden_layers = dims.num_layers
        new.attn_layer_indices = [i for i, t in enumerate(dims.block_kinds) if t == ATTENTION_LAYER]
        return type(config).from_dict(new.to_dict())
