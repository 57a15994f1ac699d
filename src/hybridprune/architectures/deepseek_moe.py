"""DeepSeek-V3-style MoE transformers: `deepseek_v3` (DeepSeek-V3, R1, V3.1), `glm4_moe` (GLM-4.5, 4.6,
4.7) and `glm4_moe_lite` (GLM-4.7-Flash). Every layer is attention + a gated MLP (the first layers) or
DeepSeek-V3's MoE block, behind two RMSNorms.

- Attention: DeepSeek-V3 and GLM-4.7-Flash use MLA, Kimi Linear's unit (kimi_layouts.py): independent
  query heads, each its q rows (nope + rope), its `kv_b_proj` rows (nope keys + values) and its `o_proj`
  columns; the LoRA ranks, the shared rope key and so the cached latent are kept. `num_key_value_heads`
  is written equal to the heads (the keys are expanded per head, and `repeat_kv` must not repeat them).
  GLM-4.5 uses GQA with partial rotary (a share of `head_dim`, kept): query heads pruned inside their KV
  group, q/k/v biases (`attention_bias`, none on o_proj), per-head q/k norms where `use_qk_norm`;
  `head_dim` written where hidden_size // heads no longer gives it.
- MoE (kimi_layouts.DEEPSEEK_MOE): a sigmoid router whose rows and fp32 `e_score_correction_bias` are cut
  with their experts, `n_group` routing groups each scored by its best two experts (every group keeps
  the same count, at least two), gated experts, and `shared_experts` `moe_intermediate_size ×
  n_shared_experts` wide (the written `n_shared_experts` is the ratio).
- Removing an expert is masking its score for the choice to -inf: the sigmoid scores are per expert, so
  the group scores, the picks and the (renormalised or not) weights of the kept experts are unchanged.
- Depth: any layer. The dense layers stay a prefix (`first_k_dense_replace`, rewritten; GLM-4.7-Flash's
  `mlp_layer_types` sliced).
- Multi-token-prediction layers (`num_nextn_predict_layers`, stored as the layers after the last,
  `model.layers.{num_hidden_layers}.*`): transformers does not load them, so they are left out of the
  output (`dropped_parts`, a warning, hybridprune.json's note) and the config says 0.
"""

from __future__ import annotations

import copy

from .base import ATTENTION, MLP, MOE, Adapter, DroppedPart, Dims, LayerSpec, Unrepresentable, layer_type
from .kimi_layouts import DEEPSEEK_MOE, KV_HEAD, KV_LORA, MLA, Q_HEAD, Q_LORA, ROPE
from .layouts import GATED_MLP, outer_rules, qkvo_attention
from .moe import check_deepseek_moe

_NORMS = ("input_layernorm", "post_attention_layernorm")
#: GLM-4.5's GQA: q/k/v biases without an o_proj bias, per-head q/k norms where `use_qk_norm`
GLM4_MOE_ATTENTION = qkvo_attention(bias="qkv", qk_norm="dims")
_ATTENTION = {"glm4_moe": GLM4_MOE_ATTENTION, "glm4_moe_lite": MLA, "deepseek_v3": MLA}
_NAMES = {"glm4_moe": "GLM-4.5", "glm4_moe_lite": "GLM-4.7-Flash", "deepseek_v3": "DeepSeek-V3"}


class DeepseekMoeAdapter(Adapter):
    model_types = ("deepseek_v3", "glm4_moe", "glm4_moe_lite")
    layers_prefix = "model.layers."
    global_rules = outer_rules("model.embed_tokens", "model.norm")
    config_spellings = {"n_routed_experts": "num_moe_experts", "num_local_experts": "num_moe_experts",
                        "moe_intermediate_size": "moe_ffn_hidden_size"}
    moe_config_names = {"num_moe_experts": "n_routed_experts", "moe_top_k": "num_experts_per_tok",
                        "moe_n_group": "n_group", "moe_topk_group": "topk_group"}
    moe_group_top = 2  # the router scores a group by the sum of its best two experts

    def __init__(self, model_type: str | None = None) -> None:
        super().__init__(model_type)
        attention = _ATTENTION[self.model_type]
        self.mla = attention is MLA
        self.layer_specs = {
            layer_type(ATTENTION, f): LayerSpec(units=(("self_attn.", attention), ("mlp.", unit)), norms=_NORMS)
            for f, unit in ((MLP, GATED_MLP), (MOE, DEEPSEEK_MOE))}

    def _ffn_kinds(self, config) -> list[str]:
        """Which layers hold a MoE block, as the decoder layer's constructor decides."""
        if self.model_type == "glm4_moe_lite":
            return [MOE if t == "sparse" else MLP for t in config.mlp_layer_types]
        k = config.first_k_dense_replace or 0
        return [MLP if i < k else MOE for i in range(config.num_hidden_layers)]

    def dropped_parts(self, config) -> tuple[DroppedPart, ...]:
        n = getattr(config, "num_nextn_predict_layers", 0) or 0
        if not n:
            return ()
        first = config.num_hidden_layers
        layers = tuple(f"{self.layers_prefix}{first + i}." for i in range(n))
        return (DroppedPart(layers, f"the multi-token-prediction layers (num_nextn_predict_layers={n}, "
                                    f"model.layers.{first}{f'..{first + n - 1}' if n > 1 else ''}.* tensors), which "
                                    "transformers does not load, so they are neither scored nor pruned; the output "
                                    "has num_nextn_predict_layers=0"),)

    def dims(self, config) -> Dims:
        kinds = tuple(layer_type(ATTENTION, f) for f in self._ffn_kinds(config))
        probe = Dims(block_kinds=kinds, vocab_size=0, hidden_size=0)
        moe = dict(num_moe_experts=config.n_routed_experts, moe_ffn_hidden_size=config.moe_intermediate_size,
                   moe_shared_expert_intermediate_size=config.moe_intermediate_size * config.n_shared_experts,
                   moe_top_k=config.num_experts_per_tok, moe_n_group=config.n_group,
                   moe_topk_group=config.topk_group) if probe.has_kind(MOE) else {}
        nq = config.num_attention_heads
        if self.mla:
            rope, nope = config.qk_rope_head_dim, config.qk_nope_head_dim
            attention = dict(num_key_value_heads=1, attention_head_dim=config.v_head_dim, extras=(
                (Q_HEAD, nope + rope), (KV_HEAD, nope + config.v_head_dim), (Q_LORA, config.q_lora_rank or 0),
                (KV_LORA, config.kv_lora_rank), (ROPE, rope)))
        else:
            attention = dict(num_key_value_heads=config.num_key_value_heads or nq,
                             attention_head_dim=getattr(config, "head_dim", None) or config.hidden_size // nq,
                             attention_qk_norm=bool(config.use_qk_norm))
        return Dims(
            block_kinds=kinds, vocab_size=config.vocab_size, hidden_size=config.hidden_size,
            tied_embeddings=bool(config.tie_word_embeddings),
            ffn_hidden_size=config.intermediate_size if probe.has_kind(MLP) else None,
            num_attention_heads=nq, attention_bias=bool(config.attention_bias), **attention, **moe,
        )

    def check_representable(self, dims: Dims, original: Dims | None = None) -> None:
        super().check_representable(dims, original)
        check_deepseek_moe(dims, original, _NAMES[self.model_type])
        ffn = [k.split("@")[0].endswith(MLP) for k in dims.block_kinds]
        if self.model_type != "glm4_moe_lite" and any(b and not a for a, b in zip(ffn, ffn[1:])):
            raise Unrepresentable(f"{self.model_type} builds its dense layers as the first first_k_dense_replace "
                                  "layers: a dense layer cannot follow a MoE layer")

    def make_config(self, config, dims: Dims):
        self.check_representable(dims, self.dims(config))
        new = copy.deepcopy(config)
        new.hidden_size = dims.hidden_size
        new.num_hidden_layers = dims.num_layers
        if self.mla:
            if config.num_key_value_heads == config.num_attention_heads:
                new.num_key_value_heads = dims.num_attention_heads
        elif getattr(config, "head_dim", None) is not None or (
                dims.hidden_size != dims.num_attention_heads * dims.attention_head_dim):
            new.head_dim = dims.attention_head_dim  # the attention would re-derive hidden_size // heads
        new.num_attention_heads = dims.num_attention_heads
        if dims.ffn_hidden_size is not None:
            new.intermediate_size = dims.ffn_hidden_size
        if dims.num_moe_experts is not None:
            new.n_routed_experts = dims.num_moe_experts
            new.moe_intermediate_size = dims.moe_ffn_hidden_size
            new.n_shared_experts = dims.moe_shared_expert_intermediate_size // dims.moe_ffn_hidden_size
        dense = ["dense" if k.split("@")[0].endswith(MLP) else "sparse" for k in dims.block_kinds]
        if self.model_type == "glm4_moe_lite":
            new.mlp_layer_types = dense
        if self.model_type != "glm4_moe_lite" or hasattr(config, "first_k_dense_replace"):
            new.first_k_dense_replace = next((i for i, t in enumerate(dense) if t != "dense"), len(dense))
        if getattr(config, "num_nextn_predict_layers", None):
            new.num_nextn_predict_layers = 0  # the MTP layers are left out (dropped_parts)
        return type(config).from_dict(new.to_dict())
