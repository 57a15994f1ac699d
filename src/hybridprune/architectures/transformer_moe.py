"""Transformer MoE families: `qwen3_moe` (Qwen3-30B-A3B, 235B-A22B), `qwen2_moe` (Qwen1.5-MoE, Qwen2-57B-A14B),
`mixtral` (Mixtral 8x7B, 8x22B) and `gpt_oss` (gpt-oss-20b, 120b). Every layer is GQA attention + a sparse MoE
block (Qwen: or a gated MLP in the layers `decoder_sparse_step` / `mlp_only_layers` leave dense) behind two
RMSNorms.

- Attention as in the Llama family: query heads pruned inside their KV group, `head_dim` kept and
  written when `hidden_size` no longer derives it; Qwen3-MoE's per-head q/k norms and Qwen2-MoE's q/k/v
  biases (`qkv_bias`) are kept.
- MoE: a softmax top-k router (`gate`) whose rows are cut with their experts, gated experts stacked
  [E, 2F, H] on load (the Hub's per-expert `gate_proj`/`up_proj`/`down_proj`, Mixtral's
  `block_sparse_moe.experts.{j}.w1/w3/w2`), one expert FFN width for all experts; Qwen2-MoE adds a
  gated shared expert and its sigmoid `shared_expert_gate` [1, H] (one scalar per token: only its hidden
  columns are cut).
- Removing an expert is masking its router logit to -inf. Where the router renormalises the top-k
  weights (`norm_topk_prob`, always in Mixtral) an expert no token picks leaves every token's output
  unchanged; without it (Qwen2-MoE's default) the kept experts' weights grow by the removed ones'
  softmax share.
- gpt-oss: q/k/v/o biases, one learned sink logit per query head (`self_attn.sinks`, cut with its head: a
  head's softmax is its own, so removing a head is zeroing its o_proj columns), a biased router whose
  softmax runs over the top-k logits only (removing an expert is masking its logit whether or not a token
  picks it), experts stored transposed with biases and a clamped SwiGLU over interleaved gate/up columns
  (`layouts.GPT_OSS_MOE`); the expert width is `intermediate_size`. Sliding / full attention by
  `layer_types`, sliced by depth pruning. The Hub's MXFP4 experts are dequantised by transformers when
  loaded in memory; the streaming prune refuses them (`checkpoint.files`), naming that remedy.
- Depth: any layer; Qwen's dense layers are written back as an explicit `mlp_only_layers` list with
  `decoder_sparse_step=1`, Qwen2-MoE's `layer_types` (sliding / full attention) sliced.
"""

from __future__ import annotations

import copy

from .base import ATTENTION, MLP, MOE, Adapter, Dims, LayerSpec, layer_type
from .layouts import GATED_MLP, GPT_OSS_MOE, QWEN_MOE, outer_rules, qkvo_attention, routed_gated_moe

_NORMS = ("input_layernorm", "post_attention_layernorm")
_ATTENTION = {
    "qwen3_moe": qkvo_attention(bias="all", qk_norm=True),
    "qwen2_moe": qkvo_attention(bias="qkv"),
    "mixtral": qkvo_attention(bias="all"),
    "gpt_oss": qkvo_attention(bias="all", sinks="sinks"),
}
_MOE = {"qwen3_moe": routed_gated_moe("gate"), "qwen2_moe": QWEN_MOE, "mixtral": routed_gated_moe("gate"),
        "gpt_oss": GPT_OSS_MOE}
#: the config's name of the expert count (Mixtral, gpt-oss: `num_local_experts`; Qwen: `num_experts`)
_EXPERTS = {"qwen3_moe": "num_experts", "qwen2_moe": "num_experts", "mixtral": "num_local_experts",
            "gpt_oss": "num_local_experts"}
#: every layer MoE, the expert width in `intermediate_size`
_ALL_MOE = ("mixtral", "gpt_oss")


class TransformerMoeAdapter(Adapter):
    model_types = ("qwen3_moe", "qwen2_moe", "mixtral", "gpt_oss")
    layers_prefix = "model.layers."
    global_rules = outer_rules("model.embed_tokens", "model.norm")
    config_spellings = {"num_experts": "num_moe_experts", "moe_intermediate_size": "moe_ffn_hidden_size",
                        "shared_expert_intermediate_size": "moe_shared_expert_intermediate_size"}

    def __init__(self, model_type: str | None = None) -> None:
        super().__init__(model_type)
        attention = _ATTENTION[self.model_type]
        self.layer_specs = {
            layer_type(ATTENTION, MLP): LayerSpec(units=(("self_attn.", attention), ("mlp.", GATED_MLP)), norms=_NORMS),
            layer_type(ATTENTION, MOE): LayerSpec(units=(("self_attn.", attention), ("mlp.", _MOE[self.model_type])),
                                                  norms=_NORMS),
        }
        self.moe_config_names = {"num_moe_experts": _EXPERTS[self.model_type], "moe_top_k": "num_experts_per_tok"}

    def _ffn_kinds(self, config) -> list[str]:
        """Which layers hold a MoE block, as the decoder layer's constructor decides."""
        n = config.num_hidden_layers
        if self.model_type in _ALL_MOE:
            return [MOE] * n
        only = set(config.mlp_only_layers or ())
        step = config.decoder_sparse_step
        return [MOE if i not in only and config.num_experts > 0 and (i + 1) % step == 0 else MLP for i in range(n)]

    def _kinds(self, config) -> tuple[str, ...]:
        kinds = [layer_type(ATTENTION, f) for f in self._ffn_kinds(config)]
        variants = getattr(config, "layer_types", None)  # Qwen2-MoE, gpt-oss: sliding / full attention per layer
        if variants:
            kinds = [f"{k}@{v}" for k, v in zip(kinds, variants)]
        return tuple(kinds)

    def dims(self, config) -> Dims:
        kinds = self._kinds(config)
        probe = Dims(block_kinds=kinds, vocab_size=0, hidden_size=0)
        moe, mlp = probe.has_kind(MOE), probe.has_kind(MLP)
        nq = config.num_attention_heads
        mixtral = self.model_type in _ALL_MOE
        if self.model_type == "qwen2_moe":
            bias = bool(config.qkv_bias)
        else:
            bias = bool(getattr(config, "attention_bias", False))
        return Dims(
            block_kinds=kinds,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            tied_embeddings=bool(config.tie_word_embeddings),
            ffn_hidden_size=config.intermediate_size if mlp else None,
            num_attention_heads=nq,
            num_key_value_heads=config.num_key_value_heads or nq,
            attention_head_dim=getattr(config, "head_dim", None) or config.hidden_size // nq,
            attention_bias=bias,
            attention_qk_norm=self.model_type == "qwen3_moe",
            num_moe_experts=getattr(config, _EXPERTS[self.model_type]) if moe else None,
            moe_ffn_hidden_size=(config.intermediate_size if mixtral else config.moe_intermediate_size) if moe else None,
            moe_shared_expert_intermediate_size=(config.shared_expert_intermediate_size
                                                 if moe and self.model_type == "qwen2_moe" else None),
            moe_top_k=config.num_experts_per_tok if moe else None,
        )

    def make_config(self, config, dims: Dims):
        self.check_representable(dims)
        new = copy.deepcopy(config)
        new.hidden_size = dims.hidden_size
        new.num_attention_heads = dims.num_attention_heads
        new.num_hidden_layers = dims.num_layers
        derived = dims.hidden_size == dims.num_attention_heads * dims.attention_head_dim
        if getattr(config, "head_dim", None) is not None or not derived:
            new.head_dim = dims.attention_head_dim  # the attention would re-derive hidden_size // heads
        if self.model_type in _ALL_MOE:
            new.num_local_experts = dims.num_moe_experts
            new.intermediate_size = dims.moe_ffn_hidden_size
        else:
            if dims.ffn_hidden_size is not None:
                new.intermediate_size = dims.ffn_hidden_size
            if dims.num_moe_experts is not None:
                new.num_experts = dims.num_moe_experts
                new.moe_intermediate_size = dims.moe_ffn_hidden_size
            if dims.moe_shared_expert_intermediate_size is not None:
                new.shared_expert_intermediate_size = dims.moe_shared_expert_intermediate_size
            new.decoder_sparse_step = 1  # which layers are MoE, by index after depth pruning
            new.mlp_only_layers = [i for i, k in enumerate(dims.block_kinds) if k.split("@")[0].endswith(MLP)]
        if getattr(config, "layer_types", None):
            new.layer_types = [k.split("@", 1)[1] for k in dims.block_kinds]
        return type(config).from_dict(new.to_dict())
