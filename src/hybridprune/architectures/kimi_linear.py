"""Kimi Linear (`kimi_linear`): Kimi Delta Attention (KDA) and MLA mixers, dense first FFNs, then a
DeepSeek-V3 MoE with a shared expert. Layouts in kimi_layouts.py.

- Layers: `layer_types` ("linear_attention": KDA, "full_attention": MLA), which transformers derives from
  the Hub's `linear_attn_config` (`kda_layers`, `full_attn_layers`, 1-based) when absent; `mlp_layer_types`
  ("dense", "sparse"), derived from `first_k_dense_replace`. Depth pruning rewrites all of them, and
  `linear_attn_config.num_heads`, which transformers reads over `linear_num_heads`.
- KDA heads (`linear_num_heads`) are pruned through the Mamba axes (`mamba_num_heads`, one group);
  `linear_head_dim` is refused: transformers sizes the forget- and output-gate bottlenecks (`f_a_proj`,
  `g_a_proj`) with it, and those are not pruned.
- MLA query heads (`num_attention_heads`) are independent; `num_key_value_heads` is written equal to
  them (the keys are expanded per head from one latent, and `repeat_kv` must not repeat them).
- The shared expert is `moe_intermediate_size × n_shared_experts` wide: its width must stay a multiple
  of the experts' (the written `n_shared_experts` is the ratio).
- `lm_head` is never tied (KimiLinearForCausalLM ties nothing).
"""

from __future__ import annotations

import copy

from .base import (
    ATTENTION, MAMBA, MLP, MOE, Adapter, Dims, LayerSpec, Unrepresentable, UnsupportedArchitecture, layer_type,
    unit_kinds,
)
from .kimi_layouts import DEEPSEEK_MOE, KDA, KV_HEAD, KV_LORA, MLA, Q_HEAD, Q_LORA, ROPE
from .layouts import GATED_MLP, outer_rules
from .moe import check_deepseek_moe

_MIXER = {"linear_attention": MAMBA, "full_attention": ATTENTION}
_FFN = {"dense": MLP, "sparse": MOE}
_NORMS = ("input_layernorm", "post_attention_layernorm")
_UNITS = {MAMBA: ("self_attn.", KDA), ATTENTION: ("self_attn.", MLA), MLP: ("mlp.", GATED_MLP),
          MOE: ("mlp.", DEEPSEEK_MOE)}


class KimiLinearAdapter(Adapter):
    model_types = ("kimi_linear",)
    config_spellings = {"linear_num_heads": "mamba_num_heads", "num_local_experts": "num_moe_experts",
                        "moe_intermediate_size": "moe_ffn_hidden_size"}
    layers_prefix = "model.layers."
    global_rules = outer_rules("model.embed_tokens", "model.norm")
    layer_specs = {layer_type(m, f): LayerSpec(units=(_UNITS[m], _UNITS[f]), norms=_NORMS)
                   for m in (MAMBA, ATTENTION) for f in (MLP, MOE)}
    moe_config_names = {"num_moe_experts": "num_experts", "moe_top_k": "num_experts_per_token",
                        "moe_n_group": "num_expert_group", "moe_topk_group": "topk_group"}
    moe_group_top = 2  # the router scores a group by the sum of its best two experts
    # transformers 5.24's cache needs an MLA layer: without one, even a plain forward with use_cache=True
    # raises in `get_seq_length`.
    required_kinds = (ATTENTION,)
    # the KDA head size sizes the forget- and output-gate bottlenecks, which are not pruned
    fixed_axes = ("mamba_head_dim",)

    def check_supported(self, config) -> None:
        for field, known in (("layer_types", _MIXER), ("mlp_layer_types", _FFN)):
            unknown = sorted({t for t in getattr(config, field) if t not in known})
            if unknown:
                raise UnsupportedArchitecture(f"unknown Kimi Linear {field} {unknown}; known: {sorted(known)}")

    def dims(self, config) -> Dims:
        kinds = tuple(layer_type(_MIXER[m], _FFN[f]) for m, f in zip(config.layer_types, config.mlp_layer_types))
        has = {k for t in kinds for k in unit_kinds(t)}
        hd = config.linear_head_dim
        mamba = dict(mamba_num_heads=config.linear_num_heads, mamba_head_dim=hd, mamba_n_groups=1,
                     mamba_state_size=hd, mamba_conv_kernel=config.linear_conv_kernel_dim,
                     mamba_conv_bias=False) if MAMBA in has else {}
        attention = dict(num_attention_heads=config.num_attention_heads, num_key_value_heads=1,
                         attention_head_dim=config.v_head_dim) if ATTENTION in has else {}
        moe = dict(num_moe_experts=config.num_local_experts, moe_ffn_hidden_size=config.moe_intermediate_size,
                   moe_shared_expert_intermediate_size=config.moe_intermediate_size * config.n_shared_experts,
                   moe_top_k=config.num_experts_per_tok, moe_n_group=config.n_group,
                   moe_topk_group=config.topk_group) if MOE in has else {}
        rope, nope = config.qk_rope_head_dim, config.qk_nope_head_dim
        extras = ((Q_HEAD, nope + rope), (KV_HEAD, nope + config.v_head_dim), (Q_LORA, config.q_lora_rank or 0),
                  (KV_LORA, config.kv_lora_rank), (ROPE, rope),
                  # the MLA and KDA caches' widths: their layouts state the cache; kept here only because
                  # the dims records and score fingerprints written so far hold them
                  ("kv_cache_width", config.kv_lora_rank + rope), ("conv_streams", 3))
        return Dims(
            block_kinds=kinds, vocab_size=config.vocab_size, hidden_size=config.hidden_size, tied_embeddings=False,
            ffn_hidden_size=config.intermediate_size if MLP in has else None,
            attention_bias=bool(config.attention_bias), extras=extras, **mamba, **attention, **moe,
        )

    def checkpoint_renames(self, config) -> dict[str, str]:
        """transformers renames the Hub's `block_sparse_moe.` to `mlp.` on load, and back on save for every
        layer, so a dense MLP would be written `block_sparse_moe.gate_proj`: the Hub (and the remote code,
        which builds `mlp` there) names it `mlp.`."""
        return {f"{self.layers_prefix}{i}.block_sparse_moe.{p}.weight": f"{self.layers_prefix}{i}.mlp.{p}.weight"
                for i, t in enumerate(config.mlp_layer_types) if t == "dense"
                for p in ("gate_proj", "up_proj", "down_proj")}

    def check_representable(self, dims: Dims, original: Dims | None = None) -> None:
        super().check_representable(dims, original)
        if original is not None and dims.mamba_head_dim != original.mamba_head_dim:
            raise Unrepresentable(
                f"kimi_linear cannot prune linear_head_dim (mamba_head_dim={dims.mamba_head_dim}): transformers "
                f"sizes the KDA forget- and output-gate bottlenecks (f_a_proj, g_a_proj) with it, and those are not "
                f"pruned. Keep mamba_head_dim={original.mamba_head_dim}; prune KDA heads with mamba_num_heads "
                f"(1..{original.mamba_num_heads}) instead.")
        check_deepseek_moe(dims, original, "Kimi Linear")

    def make_config(self, config, dims: Dims):
        self.check_representable(dims, self.dims(config))
        new = copy.deepcopy(config)
        mixers = {MAMBA: "linear_attention", ATTENTION: "full_attention"}
        new.layer_types = [mixers[unit_kinds(t)[0]] for t in dims.block_kinds]
        new.mlp_layer_types = ["dense" if unit_kinds(t)[1] == MLP else "sparse" for t in dims.block_kinds]
        new.num_hidden_layers = dims.num_layers
        new.hidden_size = dims.hidden_size
        if dims.ffn_hidden_size is not None:
            new.intermediate_size = dims.ffn_hidden_size
        if dims.mamba_num_heads is not None:
            new.linear_num_heads = dims.mamba_num_heads
        if dims.num_attention_heads is not None:
            if config.num_key_value_heads == config.num_attention_heads:
                new.num_key_value_heads = dims.num_attention_heads
            new.num_attention_heads = dims.num_attention_heads
        if dims.num_moe_experts is not None:
            new.num_local_experts = dims.num_moe_experts
            new.moe_intermediate_size = dims.moe_ffn_hidden_size
            new.n_shared_experts = dims.moe_shared_expert_intermediate_size // dims.moe_ffn_hidden_size
        # The Hub's spellings, which transformers reads over the lists above when present (and other
        # readers read alone): `linear_attn_config` (1-based layer lists, head count) and the dense prefix.
        linear = getattr(config, "linear_attn_config", None)
        if isinstance(linear, dict):
            linear = dict(linear)
            if "num_heads" in linear:
                linear["num_heads"] = new.linear_num_heads
            if "full_attn_layers" in linear or "kda_layers" in linear:
                linear["full_attn_layers"] = [i + 1 for i, t in enumerate(new.layer_types) if t == "full_attention"]
                linear["kda_layers"] = [i + 1 for i, t in enumerate(new.layer_types) if t == "linear_attention"]
            new.linear_attn_config = linear
        if hasattr(config, "first_k_dense_replace"):
            dense = new.mlp_layer_types
            new.first_k_dense_replace = next((i for i, t in enumerate(dense) if t != "dense"), len(dense))
        return type(config).from_dict(new.to_dict())
