"""GraniteMoeHybrid / Granite-4.0-H (`granitemoehybrid`), dense (`num_local_experts=0`) and MoE.

- Every layer holds a Mamba2 mixer or attention (from `layer_types`), then `shared_mlp`: a gated MLP
  whose gate and up projections are one fused `input_linear [2F, H]` (rows `i` and `F + i` pruned
  together) with `output_linear [H, F]`. Its width is `ffn_hidden_size` (`shared_intermediate_size`).
- MoE variants (Granite-4.0-H Tiny/Small) add `block_sparse_moe` to every layer: a router and
  `num_local_experts` gated experts of width `intermediate_size` (`moe_ffn_hidden_size`), run in
  parallel with the shared MLP.
- The µP scalars (`embedding_multiplier`, `residual_multiplier`, `attention_multiplier`,
  `logits_scaling`) and the position embedding type (RoPE or none) are kept as they are.
- head_dim is written explicitly (the attention would re-derive it from hidden_size); vLLM and
  llama.cpp ignore it and use hidden_size / num_attention_heads (a serving rule, engine_rules.py).
- Dense variants (`num_local_experts=0`) carry `intermediate_size` too: transformers ignores it, but
  llama.cpp sizes the FFN from it, so it is written equal to `shared_intermediate_size`.
- The same integer `mamba_expand` coupling as Bamba (see expand.py).
"""

from __future__ import annotations

import copy

from .base import ATTENTION, MAMBA, MLP, MOE, Adapter, Dims, LayerSpec, UnsupportedArchitecture, layer_type, unit_kinds
from .expand import check_expand, expand_of, mamba_fields
from .layouts import GRANITE_MOE, MAMBA2_MIXER, QKVO_ATTENTION, fused_gated_mlp, outer_rules

MAMBA_LAYER, ATTENTION_LAYER = layer_type(MAMBA, MLP), layer_type(ATTENTION, MLP)
MAMBA_MOE_LAYER, ATTENTION_MOE_LAYER = layer_type(MAMBA, MOE, MLP), layer_type(ATTENTION, MOE, MLP)
_NORMS = ("input_layernorm", "post_attention_layernorm")
_SHARED_MLP = fused_gated_mlp("input_linear", "output_linear")
_MIXERS = {MAMBA: ("mamba.", MAMBA2_MIXER), ATTENTION: ("self_attn.", QKVO_ATTENTION)}
# Layer-type names in configs (new and legacy spellings) -> the mixer's kind.
_KIND_OF_NAME = {"mamba": MAMBA, "linear_attention": MAMBA, "attention": ATTENTION, "full_attention": ATTENTION}
_LAYER_TYPE = {(MAMBA, False): MAMBA_LAYER, (ATTENTION, False): ATTENTION_LAYER,
               (MAMBA, True): MAMBA_MOE_LAYER, (ATTENTION, True): ATTENTION_MOE_LAYER}


class GraniteMoeHybridAdapter(Adapter):
    model_types = ("granitemoehybrid",)
    layers_prefix = "model.layers."
    global_rules = outer_rules("model.embed_tokens", "model.norm")
    layer_specs = {
        **{_LAYER_TYPE[kind, False]: LayerSpec(units=(_MIXERS[kind], ("shared_mlp.", _SHARED_MLP)), norms=_NORMS)
           for kind in _MIXERS},
        **{_LAYER_TYPE[kind, True]: LayerSpec(
            units=(_MIXERS[kind], ("block_sparse_moe.", GRANITE_MOE), ("shared_mlp.", _SHARED_MLP)), norms=_NORMS)
           for kind in _MIXERS},
    }

    scan_chunk_field = "mamba_chunk_size"
    config_spellings = {"mamba_n_heads": "mamba_num_heads", "mamba_d_head": "mamba_head_dim",
                        "mamba_d_state": "ssm_state_size", "num_local_experts": "num_moe_experts"}

    def logit_scale(self, config) -> float:
        """The forward divides the head's output by `logits_scaling` (µP)."""
        div = getattr(config, "logits_scaling", None)
        return 1.0 if div in (None, 0) else 1.0 / float(div)

    moe_config_names = {"num_moe_experts": "num_local_experts", "moe_top_k": "num_experts_per_tok",
                        "moe_n_group": "(one routing group)", "moe_topk_group": "(one routing group)"}

    def check_supported(self, config) -> None:
        unknown = sorted({t for t in config.layer_types if t not in _KIND_OF_NAME})
        if unknown:
            raise UnsupportedArchitecture(f"unknown Granite layer types {unknown}; known: {sorted(_KIND_OF_NAME)}")

    # transformers 5.24's hybrid cache needs an attention layer: without one, even a plain forward
    # with use_cache=True raises in `get_seq_length`.
    required_kinds = (ATTENTION,)

    def dims(self, config) -> Dims:
        nq = config.num_attention_heads
        moe = bool(getattr(config, "num_local_experts", 0))
        moe_fields = dict(num_moe_experts=config.num_local_experts, moe_ffn_hidden_size=config.intermediate_size,
                          moe_top_k=config.num_experts_per_tok) if moe else {}
        return Dims(
            block_kinds=tuple(_LAYER_TYPE[_KIND_OF_NAME[t], moe] for t in config.layer_types),
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            tied_embeddings=bool(config.tie_word_embeddings),
            ffn_hidden_size=config.shared_intermediate_size,
            **mamba_fields(config),
            num_attention_heads=nq,
            num_key_value_heads=config.num_key_value_heads,
            attention_head_dim=getattr(config, "head_dim", None) or config.hidden_size // nq,
            attention_bias=bool(config.attention_bias),
            **moe_fields,
        )

    def check_representable(self, dims: Dims, original: Dims | None = None) -> None:
        super().check_representable(dims, original)
        check_expand(dims, original, "GraniteMoeHybrid")

    def serving_config(self, raw: dict, config_class) -> dict:
        """Legacy layer-type names ("mamba", "attention"), as on the Hub: llama.cpp's converter finds the
        attention layers by the name "attention" only (conversion/granite.py:443),
        and transformers reads both spellings."""
        types = raw.get("layer_types")
        if not isinstance(types, list) or any(t not in _KIND_OF_NAME for t in types):
            return raw
        legacy = {MAMBA: "mamba", ATTENTION: "attention"}
        return {**raw, "layer_types": [legacy[_KIND_OF_NAME[t]] for t in types]}

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
        if dims.num_moe_experts is not None:
            new.num_local_experts = dims.num_moe_experts
            new.intermediate_size = dims.moe_ffn_hidden_size
        else:
            # Dense (num_local_experts=0): transformers reads only shared_intermediate_size, but llama.cpp
            # sizes the FFN from intermediate_size, so it must say the same width; and it aborts on a
            # dense model that routes to experts (`n_expert_used <= n_expert`, transformers' default is
            # 2), so the count is 0, as the Hub's dense checkpoints write it.
            new.intermediate_size = dims.ffn_hidden_size
            new.num_experts_per_tok = 0
        old_names = list(config.layer_types)
        new_style = any(n in ("linear_attention", "full_attention") for n in old_names)
        names = {MAMBA: "linear_attention" if new_style else "mamba",
                 ATTENTION: "full_attention" if new_style else "attention"}
        new.layer_types = [names[MAMBA if MAMBA in unit_kinds(t) else ATTENTION] for t in dims.block_kinds]
        return type(config).from_dict(new.to_dict())
