"""Qwen3.5 / Qwen3.6 (`qwen3_5_text`, `qwen3_5_moe_text`) and Qwen3-Next (`qwen3_next`): Gated DeltaNet
layers and gated full-attention layers (`layer_types`), each followed by a gated MLP or a sparse MoE
block, behind two zero-centred RMSNorms.

- GDN mixers: the four GDN axes (architectures/gdn.py); Qwen3-Next's fused, per-group interleaved
  `in_proj_qkvz` / `in_proj_ba` are cut by the same selection.
- Gated attention: query heads pruned inside their KV group with their gate rows; q_norm/k_norm over
  `head_dim`, which is never pruned (partial rotary covers a fixed share of it).
- MoE (Qwen3.5-MoE: every layer; Qwen3-Next: the layers `decoder_sparse_step` / `mlp_only_layers`
  pick, written back as an explicit `mlp_only_layers` list after depth pruning): routed experts with
  their router rows, expert neurons, the shared expert and its `shared_expert_gate`.
- Depth keeps at least one GDN and one full-attention layer; `layer_types` is rewritten.
- Multi-token-prediction weights (`mtp.*`), which transformers does not load, are left out.
"""

from __future__ import annotations

import copy

from .base import ATTENTION, GDN, MLP, MOE, Adapter, Dims, DroppedPart, LayerSpec, UnsupportedArchitecture, layer_type
from .gdn import QWEN3_5_GDN, QWEN3_NEXT_GDN, check_gdn, gdn_fields
from .layouts import GATED_ATTENTION, GATED_MLP, QWEN_MOE, outer_rules

_MIXER = {"linear_attention": GDN, "full_attention": ATTENTION}
_TYPE = {GDN: "linear_attention", ATTENTION: "full_attention"}
_NORMS = ("input_layernorm", "post_attention_layernorm")
_MIXER_PREFIX = {GDN: "linear_attn.", ATTENTION: "self_attn."}


def _specs(gdn) -> dict[str, LayerSpec]:
    mixers = {GDN: gdn, ATTENTION: GATED_ATTENTION}
    ffns = {MLP: GATED_MLP, MOE: QWEN_MOE}
    return {layer_type(m, f): LayerSpec(units=((_MIXER_PREFIX[m], mixers[m]), ("mlp.", ffns[f])), norms=_NORMS)
            for m in mixers for f in ffns}


class Qwen3_5Adapter(Adapter):
    model_types = ("qwen3_5_text", "qwen3_5_moe_text", "qwen3_next")
    layers_prefix = "model.layers."
    global_rules = outer_rules("model.embed_tokens", "model.norm")
    required_kinds = (GDN, ATTENTION)
    moe_config_names = {"num_moe_experts": "num_experts", "moe_top_k": "num_experts_per_tok"}

    def __init__(self, model_type: str | None = None) -> None:
        super().__init__(model_type)
        self.layer_specs = _specs(QWEN3_NEXT_GDN if self.model_type == "qwen3_next" else QWEN3_5_GDN)

    def check_supported(self, config) -> None:
        self._kinds(config)

    def _ffn_kinds(self, config) -> list[str]:
        n = len(config.layer_types)
        if self.model_type == "qwen3_5_text":
            return [MLP] * n
        if self.model_type == "qwen3_5_moe_text":
            return [MOE] * n
        only = set(config.mlp_only_layers or ())
        step = config.decoder_sparse_step
        return [MOE if i not in only and config.num_experts > 0 and (i + 1) % step == 0 else MLP for i in range(n)]

    def _kinds(self, config) -> tuple[str, ...]:
        types = list(config.layer_types)
        unknown = sorted({t for t in types if t not in _MIXER})
        if unknown:
            raise UnsupportedArchitecture(f"unknown {self.model_type} layer types {unknown}; known: {sorted(_MIXER)}")
        return tuple(layer_type(_MIXER[t], f) for t, f in zip(types, self._ffn_kinds(config)))

    def dropped_parts(self, config) -> tuple[DroppedPart, ...]:
        n = getattr(config, "mtp_num_hidden_layers", 0) or 0
        if not n:
            return ()
        return (DroppedPart(("mtp.",), f"the multi-token-prediction layers (mtp_num_hidden_layers={n}, mtp.* tensors), "
                                       "which transformers does not load, so they are neither scored nor pruned; "
                                       "the output has mtp_num_hidden_layers=0"),)

    def dims(self, config) -> Dims:
        kinds = self._kinds(config)
        probe = Dims(block_kinds=kinds, vocab_size=0, hidden_size=0)
        moe = probe.has_kind(MOE)
        return Dims(
            block_kinds=kinds,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            tied_embeddings=bool(config.tie_word_embeddings),
            ffn_hidden_size=config.intermediate_size if probe.has_kind(MLP) else None,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_key_value_heads,
            attention_head_dim=config.head_dim,
            attention_bias=bool(config.attention_bias),
            attention_qk_norm=True,
            attention_gated=True,
            num_moe_experts=config.num_experts if moe else None,
            moe_ffn_hidden_size=config.moe_intermediate_size if moe else None,
            moe_shared_expert_intermediate_size=config.shared_expert_intermediate_size if moe else None,
            moe_top_k=config.num_experts_per_tok if moe else None,
            **gdn_fields(config),
        )

    def check_representable(self, dims: Dims, original: Dims | None = None) -> None:
        super().check_representable(dims, original)
        check_gdn(dims, original)

    def make_config(self, config, dims: Dims):
        new = copy.deepcopy(config)
        new.hidden_size = dims.hidden_size
        new.num_hidden_layers = dims.num_layers
        new.layer_types = [_TYPE[k.split("+")[0]] for k in dims.block_kinds]
        for field in ("num_attention_heads", "linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim",
                      "linear_value_head_dim"):
            setattr(new, field, getattr(dims, field))
        if dims.ffn_hidden_size is not None:
            new.intermediate_size = dims.ffn_hidden_size
        if dims.num_moe_experts is not None:
            new.num_experts = dims.num_moe_experts
            new.moe_intermediate_size = dims.moe_ffn_hidden_size
            new.shared_expert_intermediate_size = dims.moe_shared_expert_intermediate_size
        if self.model_type == "qwen3_next":  # which layers are MoE, by index after depth pruning
            new.decoder_sparse_step = 1
            new.mlp_only_layers = [i for i, k in enumerate(dims.block_kinds) if k.endswith(MLP)]
        if getattr(new, "mtp_num_hidden_layers", None):
            new.mtp_num_hidden_layers = 0  # the MTP layers are left out (dropped_parts)
        return type(config).from_dict(new.to_dict())
