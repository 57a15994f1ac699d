"""Falcon-H1 (`falcon_h1`): a parallel hybrid. Every layer runs attention and a Mamba2 mixer on the
same normed input, adds both, then a gated MLP behind a second norm; depth removes the whole layer.

- `mamba_d_ssm` makes the Mamba width explicit (independent of hidden_size), and attention's head_dim
  is written explicitly, so every uniform plan is representable.
- The `mup_vector` buffer (µP multipliers per in_proj segment) is not in the checkpoint: rebuilding
  from the config recreates it for the new widths. `ssm_multipliers` and the other multipliers stay.
- The gated norm exists only with `mamba_rms_norm`; `out_proj` has a bias with `projectors_bias`.
"""

from __future__ import annotations

import copy

from .base import ATTENTION, MAMBA, MLP, Adapter, Dims, LayerSpec, layer_type
from .expand import mamba_fields
from .layouts import GATED_MLP, MAMBA2_MIXER, QKVO_ATTENTION, outer_rules

PARALLEL_LAYER = layer_type(MAMBA, ATTENTION, MLP)


class FalconH1Adapter(Adapter):
    model_types = ("falcon_h1",)
    layers_prefix = "model.layers."
    global_rules = outer_rules("model.embed_tokens", "model.final_layernorm")
    layer_specs = {
        PARALLEL_LAYER: LayerSpec(
            units=(("mamba.", MAMBA2_MIXER), ("self_attn.", QKVO_ATTENTION), ("feed_forward.", GATED_MLP)),
            norms=("input_layernorm", "pre_ff_layernorm"),
        ),
    }
    scan_chunk_field = "mamba_chunk_size"
    config_spellings = {"mamba_n_heads": "mamba_num_heads", "mamba_d_head": "mamba_head_dim",
                        "mamba_d_state": "ssm_state_size"}

    def logit_scale(self, config) -> float:
        """The forward multiplies the head's output by `lm_head_multiplier` (µP)."""
        mult = getattr(config, "lm_head_multiplier", None)
        return 1.0 if mult is None else float(mult)

    def dims(self, config) -> Dims:
        nq = config.num_attention_heads
        return Dims(
            block_kinds=(PARALLEL_LAYER,) * config.num_hidden_layers,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            tied_embeddings=bool(config.tie_word_embeddings),
            ffn_hidden_size=config.intermediate_size,
            **mamba_fields(config),
            mamba_has_norm=bool(config.mamba_rms_norm),
            mamba_out_proj_bias=bool(config.projectors_bias),
            num_attention_heads=nq,
            num_key_value_heads=config.num_key_value_heads,
            attention_head_dim=getattr(config, "head_dim", None) or config.hidden_size // nq,
            attention_bias=bool(config.attention_bias),
            mlp_bias=bool(config.mlp_bias),
        )

    def make_config(self, config, dims: Dims):
        new = copy.deepcopy(config)
        new.hidden_size = dims.hidden_size
        new.intermediate_size = dims.ffn_hidden_size
        new.num_attention_heads = dims.num_attention_heads
        new.head_dim = dims.attention_head_dim
        new.mamba_n_heads = dims.mamba_num_heads
        new.mamba_d_head = dims.mamba_head_dim
        new.mamba_d_ssm = dims.mamba_num_heads * dims.mamba_head_dim
        # mamba_d_ssm wins over mamba_expand in transformers, vLLM (falcon_h1.py:114) and llama.cpp
        # (conversion/falcon_h1.py:31); mamba_expand (an int) is kept equal to the width / hidden_size
        # where that is whole, and otherwise left as the source wrote it (no reader uses it then).
        if new.mamba_d_ssm % dims.hidden_size == 0 and getattr(config, "mamba_expand", None) is not None:
            new.mamba_expand = new.mamba_d_ssm // dims.hidden_size
        new.num_hidden_layers = dims.num_layers
        return type(config).from_dict(new.to_dict())
