"""One record per family of the shared battery (tests/test_families.py): its tiny config, the plans it
prunes, the plans it refuses with the words their message must contain (the valid values), and the
battery checks it skips, with why. A new family is one adapter file in `hybridprune/architectures/`
plus one record here.

Sizes leave every axis room to be cut inside its groups: 12 Mamba heads x 8 in 3 groups, 6 query heads
in 2 KV groups, FFN 64, hidden 48; 8 experts in 2 routing groups; 2 GDN key heads of 3 value heads."""

from __future__ import annotations

from dataclasses import dataclass, field

from hybridprune.architectures import Unrepresentable
from hybridprune.pruning.plan import PlanError


@dataclass(frozen=True)
class Family:
    name: str
    #: transformers' model_type the tiny config is built as (several records may share one)
    model_type: str
    #: the tiny config's fields (for a vision-language wrapper: its language model's)
    config: dict
    #: plans the family prunes: the first is exported, reloaded and distilled; the last generates
    plans: tuple[dict, ...]
    #: (plan, error, words its message must contain)
    refusals: tuple[tuple[dict, type, list[str]], ...] = ()
    #: battery check (the test's name without `test_`) -> why this family does not run it
    skips: dict[str, str] = field(default_factory=dict)
    #: a vision-language wrapper: its language model's model_type and the vision tower's config
    text_model_type: str | None = None
    vision: dict | None = None

    def tiny_config(self, **overrides):
        from transformers import AutoConfig

        kw = {**self.config, **overrides}
        if self.text_model_type is None:
            return AutoConfig.for_model(self.model_type, **kw)
        text = AutoConfig.for_model(self.text_model_type, **kw).to_dict()
        return AutoConfig.for_model(self.model_type, text_config=text, vision_config=self.vision)


def _without(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


_TOKENS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
_COMMON = dict(vocab_size=96, hidden_size=48, num_attention_heads=6, num_key_value_heads=2, **_TOKENS)
_MAMBA_KW = dict(mamba_n_heads=12, mamba_d_head=8, mamba_n_groups=3, mamba_d_state=8, mamba_d_conv=4,
                 mamba_expand=2, mamba_chunk_size=8)

NEMOTRON_BLOCKS = ["linear_attention", "mlp", "full_attention", "mlp", "linear_attention", "mlp"]
_NEMOTRON_KW = dict(
    vocab_size=96, hidden_size=48, layers_block_type=NEMOTRON_BLOCKS,
    mamba_num_heads=12, mamba_head_dim=8, n_groups=3, ssm_state_size=8, conv_kernel=4, chunk_size=8,
    num_attention_heads=8, num_key_value_heads=2, head_dim=8, intermediate_size=64, **_TOKENS,
)
NEMOTRON_MOE_BLOCKS = ["linear_attention", "moe", "full_attention", "moe", "linear_attention", "mlp"]
# 8 experts in 2 routing groups, 2 per token from 1 group; expert FFN 16, shared expert 24
_NEMOTRON_MOE_KW = dict(layers_block_type=NEMOTRON_MOE_BLOCKS, n_routed_experts=8, moe_intermediate_size=16,
                        moe_shared_expert_intermediate_size=24, num_experts_per_tok=2, n_group=2, topk_group=1,
                        routed_scaling_factor=1.5, norm_topk_prob=True)
_MAMBA2_KW = dict(vocab_size=96, hidden_size=48, num_heads=12, head_dim=8, expand=2, n_groups=3, state_size=8,
                  num_hidden_layers=3, chunk_size=8, conv_kernel=4, **_TOKENS)

# 6 KDA heads x 8, 4 MLA heads (nope 8 + rope 8, v 12, kv_lora 16), Hub-style linear_attn_config; 8 experts
# in 2 routing groups, 2 per token from 1 group; expert FFN 16, one shared expert (16)
KIMI_KW = dict(vocab_size=96, hidden_size=48, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
               q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=12,
               intermediate_size=64, moe_intermediate_size=16, num_local_experts=8, num_experts_per_tok=2,
               n_group=2, topk_group=1, n_shared_experts=1, routed_scaling_factor=1.5, first_k_dense_replace=1,
               linear_attn_config={"num_heads": 6, "head_dim": 8, "short_conv_kernel_size": 4,
                                   "full_attn_layers": [2], "kda_layers": [1, 3, 4]},
               **_TOKENS)

# Gated DeltaNet hybrids: 2 key heads of 8 channels, each serving 3 value heads of 8 channels; gated
# attention with 6 query heads in 2 KV groups; GDN:attention 3:1 as in Qwen3.5.
GDN_LAYERS = ["linear_attention", "full_attention", "linear_attention", "linear_attention"]
_GDN_KW = dict(vocab_size=96, hidden_size=48, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
               num_hidden_layers=4, layer_types=GDN_LAYERS, linear_num_key_heads=2, linear_num_value_heads=6,
               linear_key_head_dim=8, linear_value_head_dim=8, linear_conv_kernel_dim=4, **_TOKENS)
#: a one-block vision tower whose merger writes the language model's 48 hidden channels
TINY_VISION = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=48, patch_size=4,
                   spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16)
# MoE: 8 experts of 16 neurons, 2 per token, a shared expert of 24
_QWEN_MOE_KW = dict(num_experts=8, moe_intermediate_size=16, shared_expert_intermediate_size=24, num_experts_per_tok=2)
_GRANITE_KW = dict(**_COMMON, **_MAMBA_KW, shared_intermediate_size=64, num_local_experts=0, num_hidden_layers=4,
                   layer_types=["mamba", "attention", "mamba", "mamba"], position_embedding_type="rope",
                   embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.3, logits_scaling=2.0)
_LFM2_KW = dict(**_COMMON, intermediate_size=64, block_auto_adjust_ff_dim=False, block_multiple_of=16,
                num_hidden_layers=4, layer_types=["conv", "full_attention", "conv", "full_attention"], conv_L_cache=3)
_DENSE_KW = dict(**_COMMON, intermediate_size=64, num_hidden_layers=3, head_dim=8)

#: what every Gated DeltaNet family refuses: value heads that do not fill the key heads evenly
GDN_REFUSALS = (
    (dict(linear_num_value_heads=5), PlanError,
     ["not a multiple of linear_num_key_heads=2", "Valid values: [2, 4, 6]"]),
    (dict(linear_num_key_heads=1, linear_num_value_heads=4), PlanError,
     ["more than the 1 kept key head(s) hold (3 value heads each)", "Valid values: [1, 2, 3]"]),
    (dict(mamba_num_heads=4), PlanError, ["no mamba blocks"]),
)

RECORDS = [
    Family(
        "nemotron_h", "nemotron_h", _NEMOTRON_KW,
        plans=(dict(ffn_hidden_size=32, mamba_num_heads=6, num_attention_heads=4, hidden_size=32),
               dict(mamba_head_dim=4, drop_layers=[1, 4])),
        refusals=((dict(drop_layers=[2]), Unrepresentable, ["removes every attention block"]),),
        skips={"cli_calibrates_and_prunes_each_family": "test_cli.py runs every command on its checkpoint"},
    ),
    # MoE (Nemotron 3 Nano's layout): 8 experts in 2 routing groups, 2 per token from 1 group.
    Family(
        "nemotron_h_moe", "nemotron_h", {**_NEMOTRON_KW, **_NEMOTRON_MOE_KW},
        plans=(dict(num_moe_experts=6, moe_ffn_hidden_size=8, moe_shared_expert_intermediate_size=12, hidden_size=32,
                    mamba_num_heads=6),
               dict(num_moe_experts=4, drop_layers=[3, 5])),
        refusals=((dict(num_moe_experts=5), PlanError, ["multiple of n_group=2", "Valid values: [4, 6, 8]"]),
                  (dict(num_moe_experts=2), PlanError,
                   ["too few experts for num_experts_per_tok=2", "Valid values: [4, 6, 8]"])),
    ),
    # experts in a latent space, with biased projections
    Family(
        "nemotron_h_moe_latent", "nemotron_h", {**_NEMOTRON_KW, **_NEMOTRON_MOE_KW, "moe_latent_size": 32,
                                                "mlp_bias": True},
        plans=(dict(num_moe_experts=4, moe_ffn_hidden_size=8, hidden_size=32),
               dict(moe_ffn_hidden_size=8, hidden_size=44, drop_layers=[1])),
        refusals=((dict(moe_shared_expert_intermediate_size=30), PlanError, ["larger than the current size 24"]),
                  (dict(moe_ffn_hidden_size=12), Unrepresentable, ["moe_ffn_hidden_size=12 is not a multiple of 8",
                                                                    "Valid values: multiples of 8 (8, 16)"])),
    ),
    # Granite-4.0-H Tiny's layout, tiny: 6 experts of 16, 2 per token
    Family(
        "granitemoehybrid_moe", "granitemoehybrid",
        {**_GRANITE_KW, "num_local_experts": 6, "intermediate_size": 16, "num_experts_per_tok": 2},
        plans=(dict(num_moe_experts=4, moe_ffn_hidden_size=8, ffn_hidden_size=32, hidden_size=24),
               dict(num_moe_experts=3, drop_layers=[2])),
        refusals=((dict(num_moe_experts=1), PlanError,
                   ["too few experts for num_experts_per_tok=2", "Valid values: [2, 3"]),
                  (dict(hidden_size=36), Unrepresentable, ["hidden_size=36 is not a multiple of 8"]),
                  (dict(moe_shared_expert_intermediate_size=8), PlanError, ["no shared-expert MoE blocks"])),
    ),
    # Kimi-Linear-48B-A3B's layout, tiny: 6 independent KDA heads, 4 independent MLA heads, a dense first
    # FFN, then 8 experts in 2 groups
    Family(
        "kimi_linear", "kimi_linear", KIMI_KW,
        plans=(dict(mamba_num_heads=3, num_attention_heads=2, hidden_size=32, ffn_hidden_size=32, num_moe_experts=6,
                    moe_ffn_hidden_size=8, moe_shared_expert_intermediate_size=8),
               dict(mamba_num_heads=5, num_moe_experts=4, drop_layers=[0, 2])),
        refusals=((dict(mamba_head_dim=4), Unrepresentable, ["cannot prune linear_head_dim", "mamba_num_heads (1..6)"]),
                  (dict(moe_shared_expert_intermediate_size=12), Unrepresentable,
                   ["not a multiple of moe_ffn_hidden_size=16", "Valid values: [16]"]),
                  (dict(num_moe_experts=5), PlanError, ["multiple of n_group=2"]),
                  (dict(drop_layers=[1]), Unrepresentable, ["removes every attention block"])),
    ),
    Family(
        "mamba2", "mamba2", _MAMBA2_KW,
        plans=(dict(mamba_num_heads=6), dict(hidden_size=24, drop_layers=[1])),
        refusals=((dict(hidden_size=40), Unrepresentable,
                   ["mamba_num_heads in", "hidden_size in the divisors of 96"]),),
        skips={"cli_calibrates_and_prunes_each_family": "Nemotron-H's Mamba-2 mixers take the commands' path "
                                                        "(test_cli.py)"},
    ),
    Family(
        "bamba", "bamba", {**_COMMON, **_MAMBA_KW, "intermediate_size": 64, "num_hidden_layers": 4,
                           "attn_layer_indices": [1]},
        plans=(dict(ffn_hidden_size=32, mamba_num_heads=6, num_attention_heads=4),
               dict(hidden_size=24, drop_layers=[2])),
        refusals=((dict(mamba_num_heads=3), Unrepresentable, ["mamba_num_heads in [6, 12]"]),
                  (dict(drop_layers=[1]), Unrepresentable, ["removes every attention block"])),
    ),
    Family(
        "granitemoehybrid", "granitemoehybrid", _GRANITE_KW,
        plans=(dict(ffn_hidden_size=32, mamba_num_heads=6, num_attention_heads=4),
               dict(hidden_size=24, drop_layers=[3])),
        refusals=((dict(mamba_num_heads=9), Unrepresentable, ["mamba_num_heads in [6, 12]"]),
                  (dict(drop_layers=[1]), Unrepresentable, ["removes every attention block"])),
    ),
    Family(
        "falcon_h1", "falcon_h1",
        {**_COMMON, **_without(_MAMBA_KW, "mamba_expand"), "intermediate_size": 64, "num_hidden_layers": 3,
         "head_dim": 8, "mamba_d_ssm": 96, "mamba_rms_norm": True, "ssm_multipliers": [1.0, 0.5, 1.0, 1.0, 1.0],
         "mlp_multipliers": [1.0, 0.8], "embedding_multiplier": 1.5},
        plans=(dict(ffn_hidden_size=32, mamba_num_heads=6, mamba_head_dim=4, num_attention_heads=4, hidden_size=32),
               dict(ffn_hidden_size=48, drop_layers=[1])),
        refusals=((dict(mamba_num_heads=4), PlanError, ["Valid values: [3, 6, 9, 12]"]),),
    ),
    # one shared transformer block called by two hybrid layers, with per-call-site adapters
    Family(
        "zamba2", "zamba2",
        {**_COMMON, "intermediate_size": 64, "num_hidden_layers": 5, "n_mamba_heads": 12, "mamba_ngroups": 3,
         "mamba_d_state": 8, "mamba_expand": 2, "chunk_size": 8, "num_key_value_heads": 6, "num_mem_blocks": 1,
         "layers_block_type": ["mamba", "hybrid", "mamba", "hybrid", "mamba"],
         "use_shared_attention_adapter": True, "adapter_rank": 4},
        plans=(dict(ffn_hidden_size=32, mamba_num_heads=6), dict(ffn_hidden_size=40, drop_layers=[2])),
        refusals=((dict(hidden_size=32), Unrepresentable, ["cannot prune hidden_size", "ffn_hidden_size (1..64)",
                                                           "mamba_num_heads ([6, 12])"]),
                  (dict(mamba_head_dim=4), Unrepresentable, ["cannot prune mamba_head_dim"]),
                  (dict(drop_layers=[1]), Unrepresentable, ["Layers that can be dropped: [0, 2, 4]"])),
        skips={"removing_attention_heads_equals_zeroing_them":
               "Zamba2 refuses attention-head pruning (head_dim is derived)"},
    ),
    Family(
        "llama", "llama", {**_DENSE_KW, "tie_word_embeddings": True},
        plans=(dict(ffn_hidden_size=32, num_attention_heads=4, hidden_size=32), dict(hidden_size=36, drop_layers=[1])),
        refusals=((dict(hidden_size=40), Unrepresentable, ["num_attention_heads in [2, 4]", "multiples of 6"]),),
    ),
    # Mistral and Qwen configs do not couple hidden_size and heads; only the GQA grouping is refused.
    Family(
        "mistral", "mistral", {**_DENSE_KW, "tie_word_embeddings": False},
        plans=(dict(ffn_hidden_size=32, num_attention_heads=4, hidden_size=40),),
        refusals=((dict(num_attention_heads=3), PlanError, ["Valid values: [2, 4, 6]"]),),
        skips={"cli_calibrates_and_prunes_each_family": "the same dense layout as llama, which takes the check"},
    ),
    Family(
        "qwen2", "qwen2", {**_DENSE_KW, "tie_word_embeddings": False},
        plans=(dict(ffn_hidden_size=32, num_attention_heads=4, hidden_size=40, drop_layers=[0]),),
        refusals=((dict(num_attention_heads=5), PlanError, ["Valid values: [2, 4, 6]"]),),
        skips={"cli_calibrates_and_prunes_each_family": "the same dense layout as llama, which takes the check"},
    ),
    Family(
        "qwen3", "qwen3", {**_DENSE_KW, "sliding_window": 8, "use_sliding_window": True,
                           "layer_types": ["full_attention", "sliding_attention", "full_attention"]},
        plans=(dict(ffn_hidden_size=32, num_attention_heads=4, hidden_size=40, drop_layers=[1]),),
        refusals=((dict(num_attention_heads=3), PlanError, ["Valid values: [2, 4, 6]"]),),
    ),
    # LFM2: short convolutions (hidden-wide) and GQA attention with per-head q/k norms
    Family(
        "lfm2", "lfm2", _LFM2_KW,
        plans=(dict(ffn_hidden_size=32, num_attention_heads=4, hidden_size=32), dict(hidden_size=40, drop_layers=[2])),
        refusals=((dict(drop_layers=[1, 3]), Unrepresentable, ["removes every attention layer", "layers: [1, 3]"]),
                  (dict(drop_layers=[0, 2]), Unrepresentable, ["removes every conv layer", "layers: [0, 2]"]),
                  (dict(num_attention_heads=3), PlanError, ["Valid values: [2, 4, 6]"])),
    ),
    # block_auto_adjust_ff_dim: intermediate_size 100 builds an FFN of int(2 * 100 / 3) = 66, rounded up to
    # 16: 80; a pruned width is written exactly
    Family(
        "lfm2_ffn_auto", "lfm2", {**_LFM2_KW, "intermediate_size": 100, "block_auto_adjust_ff_dim": True},
        plans=(dict(ffn_hidden_size=40, hidden_size=32), dict(ffn_hidden_size=64, drop_layers=[0])),
        refusals=((dict(ffn_hidden_size=90), PlanError, ["larger than the current size 80"]),),
    ),
    # LFM2-8B-A1B's layout, tiny: 1 dense layer, then 8 experts, 2 per token
    Family(
        "lfm2_moe", "lfm2_moe",
        {**_COMMON, "intermediate_size": 64, "moe_intermediate_size": 16, "num_experts": 8, "num_experts_per_tok": 2,
         "num_dense_layers": 1, "num_hidden_layers": 4, "layer_types": ["conv", "full_attention", "conv", "conv"]},
        plans=(dict(num_moe_experts=6, moe_ffn_hidden_size=8, ffn_hidden_size=32, hidden_size=32),
               dict(num_moe_experts=4, drop_layers=[0])),
        refusals=((dict(num_moe_experts=1), PlanError, ["too few experts for num_experts_per_tok=2"]),
                  (dict(hidden_size=36), Unrepresentable, ["hidden_size=36 is not a multiple of 8"]),
                  (dict(drop_layers=[1]), Unrepresentable, ["removes every attention layer"])),
    ),
    # LFM3: sandwich norms, a per-head sigmoid output gate, biased projections, sliding + full attention
    Family(
        "lfm3", "lfm3",
        {**_COMMON, "intermediate_size": 64, "head_dim": 8, "num_hidden_layers": 4, "sliding_window": 4,
         "attention_bias": True, "layer_types": ["conv", "sliding_attention", "full_attention", "conv"],
         "conv_L_cache": 4},
        plans=(dict(ffn_hidden_size=32, num_attention_heads=4, hidden_size=40), dict(hidden_size=32, drop_layers=[1])),
        refusals=((dict(drop_layers=[0, 3]), Unrepresentable, ["removes every conv layer"]),),
    ),
    # Gated DeltaNet hybrids: 2 key heads x 3 value heads, 8 channels each; gated attention 6 heads / 2 KV
    Family(
        "qwen3_5_text", "qwen3_5_text", {**_GDN_KW, "intermediate_size": 64},
        plans=(dict(ffn_hidden_size=32, num_attention_heads=4, linear_num_value_heads=4, linear_value_head_dim=4,
                    linear_key_head_dim=4, hidden_size=32),
               dict(linear_num_key_heads=1, drop_layers=[2])),
        refusals=(*GDN_REFUSALS, (dict(drop_layers=[1]), Unrepresentable, ["removes every attention block"])),
    ),
    Family(
        "qwen3_5_moe_text", "qwen3_5_moe_text", {**_GDN_KW, **_QWEN_MOE_KW},
        plans=(dict(num_moe_experts=6, moe_ffn_hidden_size=8, moe_shared_expert_intermediate_size=12,
                    linear_num_value_heads=4, linear_key_head_dim=4, num_attention_heads=4, hidden_size=32),
               dict(linear_value_head_dim=4, num_moe_experts=4, drop_layers=[3])),
        refusals=(*GDN_REFUSALS, (dict(drop_layers=[0, 2, 3]), Unrepresentable, ["removes every gdn block"]),
                  (dict(moe_ffn_hidden_size=12), Unrepresentable, ["moe_ffn_hidden_size=12 is not a multiple of 8"])),
    ),
    # attention head_dim is hidden_size // num_attention_heads = 8: heads and hidden are pruned together
    Family(
        "olmo_hybrid", "olmo_hybrid", {**_without(_GDN_KW, "head_dim"), "intermediate_size": 64},
        plans=(dict(ffn_hidden_size=32, num_attention_heads=4, hidden_size=32, linear_num_value_heads=4,
                    linear_value_head_dim=4, linear_key_head_dim=4),
               dict(linear_num_key_heads=1, drop_layers=[3])),
        refusals=(*GDN_REFUSALS, (dict(hidden_size=40), Unrepresentable, ["would change head_dim (8)", "(4, 32)"]),
                  (dict(drop_layers=[1]), Unrepresentable, ["removes every attention block"])),
        skips={"removing_attention_heads_equals_zeroing_them":
               "OLMo's q_norm normalises all heads together: removing a head changes the others"},
    ),
    # the vision-language wrappers: the language model pruned as above, the vision tower carried
    Family(
        "qwen3_5", "qwen3_5", {**_GDN_KW, "intermediate_size": 64},
        text_model_type="qwen3_5_text", vision=TINY_VISION,
        plans=(dict(ffn_hidden_size=32, linear_num_value_heads=4, linear_key_head_dim=4, num_attention_heads=4,
                    hidden_size=32),
               dict(linear_value_head_dim=4, drop_layers=[3])),
        refusals=GDN_REFUSALS,
    ),
    Family(
        "qwen3_5_moe", "qwen3_5_moe", {**_GDN_KW, **_QWEN_MOE_KW},
        text_model_type="qwen3_5_moe_text", vision=TINY_VISION,
        plans=(dict(num_moe_experts=4, linear_num_value_heads=4, hidden_size=40),
               dict(linear_num_key_heads=1, drop_layers=[0])),
        refusals=GDN_REFUSALS,
    ),
    # MoE in layers 0, 1 and 3, a dense MLP in layer 2 (mlp_only_layers); GDN rows fused per key-head group
    Family(
        "qwen3_next", "qwen3_next", {**_GDN_KW, **_QWEN_MOE_KW, "intermediate_size": 64, "mlp_only_layers": [2]},
        plans=(dict(ffn_hidden_size=32, num_moe_experts=4, linear_num_value_heads=4, linear_value_head_dim=4,
                    linear_key_head_dim=4, num_attention_heads=4, hidden_size=32),
               dict(linear_num_key_heads=1, linear_num_value_heads=2, drop_layers=[0])),
        refusals=(*GDN_REFUSALS, (dict(num_moe_experts=1), PlanError, ["too few experts for num_experts_per_tok=2"])),
    ),
]
# Transformer MoE families: GQA attention + a sparse MoE block of 8 experts of 16 neurons, 2 per token.
# Qwen3-30B-A3B's layout, tiny: no shared expert, per-head q/k norms, top-k weights renormalised (the Hub's
# norm_topk_prob); layer 2 dense (mlp_only_layers) so the FFN axis is exercised too
_MOE_TRANSFORMER_KW = dict(**_COMMON, head_dim=8, num_hidden_layers=4, num_experts_per_tok=2)
QWEN3_MOE_KW = dict(**_MOE_TRANSFORMER_KW, num_experts=8, moe_intermediate_size=16, intermediate_size=64,
                    mlp_only_layers=[2], norm_topk_prob=True)
# Qwen1.5-MoE-A2.7B's layout, tiny: a gated shared expert of 24 beside the routed experts, q/k/v biases,
# top-k weights not renormalised (the Hub's norm_topk_prob=False); sliding and full attention layers, whose
# `layer_types` depth pruning slices (the window is longer than the battery's sequences: the analytic cache
# counts every layer's keys at full length)
QWEN2_MOE_KW = dict(**_MOE_TRANSFORMER_KW, num_experts=8, moe_intermediate_size=16, shared_expert_intermediate_size=24,
                    intermediate_size=64, mlp_only_layers=[2], use_sliding_window=True, sliding_window=16,
                    layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"])
# Mixtral's layout, tiny: every layer MoE, the expert width is intermediate_size
MIXTRAL_KW = dict(**_without(_MOE_TRANSFORMER_KW, "num_hidden_layers"), num_hidden_layers=3, num_local_experts=8,
                  intermediate_size=16)
# gpt-oss's layout, tiny: every layer MoE (expert width intermediate_size), q/k/v/o biases, a sink logit per query
# head, a biased router, experts with biases and interleaved gate/up columns; sliding and full attention alternate
# by `layer_types` (the window longer than the battery's sequences)
GPT_OSS_KW = dict(**_MOE_TRANSFORMER_KW, num_local_experts=8, intermediate_size=16, sliding_window=16)
_MOE_TRANSFORMER_REFUSALS = (
    (dict(num_moe_experts=1), PlanError, ["too few experts for num_experts_per_tok=2"]),
    (dict(moe_ffn_hidden_size=12), Unrepresentable, ["moe_ffn_hidden_size=12 is not a multiple of 8"]),
    (dict(hidden_size=36), Unrepresentable, ["hidden_size=36 is not a multiple of 8"]),
    (dict(num_attention_heads=3), PlanError, ["Valid values: [2, 4, 6]"]),
)
RECORDS += [
    Family(
        "qwen3_moe", "qwen3_moe", QWEN3_MOE_KW,
        plans=(dict(num_moe_experts=6, moe_ffn_hidden_size=8, ffn_hidden_size=32, num_attention_heads=4, hidden_size=32),
               dict(num_moe_experts=4, hidden_size=40, drop_layers=[2])),
        refusals=(*_MOE_TRANSFORMER_REFUSALS,
                  (dict(moe_shared_expert_intermediate_size=8), PlanError, ["no shared-expert MoE blocks"])),
    ),
    Family(
        "qwen2_moe", "qwen2_moe", QWEN2_MOE_KW,
        plans=(dict(num_moe_experts=6, moe_ffn_hidden_size=8, moe_shared_expert_intermediate_size=12,
                    ffn_hidden_size=32, num_attention_heads=4, hidden_size=40),
               dict(num_moe_experts=4, drop_layers=[1])),
        refusals=_MOE_TRANSFORMER_REFUSALS,
        skips={"removing_experts_the_router_never_selects_keeps_logits":
               "norm_topk_prob=False: the top-k weights are shares of a softmax over all experts, so removing even "
               "an unpicked expert raises the kept ones' weights (test_transformer_moe.py proves removal equals "
               "masking the expert's router logit instead)"},
    ),
    Family(
        "mixtral", "mixtral", MIXTRAL_KW,
        plans=(dict(num_moe_experts=6, moe_ffn_hidden_size=8, num_attention_heads=4, hidden_size=32),
               dict(num_moe_experts=4, drop_layers=[1])),
        refusals=(*_MOE_TRANSFORMER_REFUSALS, (dict(ffn_hidden_size=32), PlanError, ["no mlp blocks"])),
    ),
    Family(
        "gpt_oss", "gpt_oss", GPT_OSS_KW,
        plans=(dict(num_moe_experts=6, moe_ffn_hidden_size=8, num_attention_heads=4, hidden_size=32),
               dict(num_moe_experts=4, drop_layers=[1])),
        refusals=(*_MOE_TRANSFORMER_REFUSALS, (dict(ffn_hidden_size=32), PlanError, ["no mlp blocks"])),
    ),
]
# Dense transformer families (dense.py). Gemma 3's layout, tiny: head_dim 16 over a hidden size of 48 (as Gemma 3
# 1B: 4 heads of 256 over 1152), four norms a layer, per-head q/k norms, tied embeddings scaled by sqrt(hidden),
# sliding:full 2:1 by `layer_types` (the window longer than the battery's sequences)
GEMMA3_TEXT_KW = dict(**_COMMON, head_dim=16, intermediate_size=64, num_hidden_layers=3, sliding_window=16,
                      query_pre_attn_scalar=16, tie_word_embeddings=True,
                      layer_types=["sliding_attention", "sliding_attention", "full_attention"])
RECORDS += [
    Family(
        "gemma3_text", "gemma3_text", GEMMA3_TEXT_KW,
        plans=(dict(ffn_hidden_size=32, num_attention_heads=4, hidden_size=32),
               dict(hidden_size=40, num_attention_heads=4, drop_layers=[1])),
        refusals=((dict(num_attention_heads=3), PlanError, ["Valid values: [2, 4, 6]"]),
                  (dict(hidden_size=32), Unrepresentable, ["Gemma3TextConfig needs hidden_size to be a multiple of "
                                                           "num_attention_heads", "num_attention_heads in [2, 4]"])),
    ),
]
# OLMo 2 / OLMo 3: post-norm layers, q_norm / k_norm over all heads; head_dim derived (8), written when pruning
# heads and hidden apart; OLMo 3's sliding and full attention layers
_OLMO_SKIPS = {"removing_attention_heads_equals_zeroing_them":
               "OLMo's q_norm normalises all heads together: removing a head changes the others"}
RECORDS += [
    Family(
        "olmo2", "olmo2", {**_without(_DENSE_KW, "head_dim"), "tie_word_embeddings": False},
        plans=(dict(ffn_hidden_size=32, num_attention_heads=4, hidden_size=40),
               dict(hidden_size=32, num_attention_heads=4, drop_layers=[1])),
        refusals=((dict(num_attention_heads=3), PlanError, ["Valid values: [2, 4, 6]"]),),
        skips=_OLMO_SKIPS,
    ),
    Family(
        "olmo3", "olmo3", {**_without(_DENSE_KW, "head_dim"), "num_hidden_layers": 4, "sliding_window": 16,
                           "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention",
                                           "full_attention"]},
        plans=(dict(ffn_hidden_size=32, num_attention_heads=4, hidden_size=40),
               dict(hidden_size=36, drop_layers=[3])),
        refusals=((dict(num_attention_heads=5), PlanError, ["Valid values: [2, 4, 6]"]),),
        skips=_OLMO_SKIPS,
    ),
]
# SmolLM3's layout, tiny: every fourth layer without RoPE (no_rope_layers), tied embeddings; head_dim written
RECORDS += [
    Family(
        "smollm3", "smollm3", {**_without(_DENSE_KW, "head_dim"), "num_hidden_layers": 4, "no_rope_layer_interval": 4,
                               "tie_word_embeddings": True},
        plans=(dict(ffn_hidden_size=32, num_attention_heads=4, hidden_size=40),
               dict(hidden_size=32, num_attention_heads=4, drop_layers=[1])),
        refusals=((dict(num_attention_heads=3), PlanError, ["Valid values: [2, 4, 6]"]),),
    ),
]
# Granite 3 (dense): Llama layers with µP multipliers (embedding, residual, attention, logits) kept as they are;
# head_dim derived (8), written when pruning heads and hidden apart
_GRANITE_MUP = dict(embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.3, logits_scaling=2.0)
# Seed-OSS: q/k/v biases (attention_bias) and an o_proj bias of its own (attention_out_bias); head_dim a field
# Nemotron (Minitron 4B/8B): LayerNorm1P with biases (the final norm's too), squared-ReLU up/down MLP, partial
# rotary (half of head_dim); Phi-3: fused qkv_proj (query heads, then K, then V rows) and gate_up_proj
RECORDS += [
    Family(
        "granite", "granite", {**_without(_DENSE_KW, "head_dim"), **_GRANITE_MUP, "tie_word_embeddings": True},
        plans=(dict(ffn_hidden_size=32, num_attention_heads=4, hidden_size=40),
               dict(hidden_size=32, num_attention_heads=4, drop_layers=[1])),
        refusals=((dict(num_attention_heads=3), PlanError, ["Valid values: [2, 4, 6]"]),),
    ),
    Family(
        "seed_oss", "seed_oss", {**_DENSE_KW, "attention_bias": True, "attention_out_bias": True,
                                 "attention_dropout": 0.0, "residual_dropout": 0.0, "tie_word_embeddings": False},
        plans=(dict(ffn_hidden_size=32, num_attention_heads=4, hidden_size=40),
               dict(hidden_size=32, drop_layers=[1])),
        refusals=((dict(num_attention_heads=5), PlanError, ["Valid values: [2, 4, 6]"]),),
    ),
    Family(
        "nemotron", "nemotron", {**_DENSE_KW, "mlp_bias": True, "attention_bias": True, "tie_word_embeddings": False},
        plans=(dict(ffn_hidden_size=32, num_attention_heads=4, hidden_size=40),
               dict(hidden_size=32, num_attention_heads=4, drop_layers=[1])),
        refusals=((dict(num_attention_heads=3), PlanError, ["Valid values: [2, 4, 6]"]),),
    ),
    Family(
        "phi3", "phi3", {**_without(_DENSE_KW, "head_dim"), "tie_word_embeddings": False},
        plans=(dict(ffn_hidden_size=32, num_attention_heads=4, hidden_size=40),
               dict(hidden_size=32, num_attention_heads=4, drop_layers=[1])),
        refusals=((dict(num_attention_heads=3), PlanError, ["Valid values: [2, 4, 6]"]),),
    ),
]
# DeepSeek-V3-style MoE transformers (deepseek_moe.py): a dense first layer, then 8 experts in 2 routing groups
# (2 per token from 1 group, sigmoid scores with a correction bias), expert FFN 16, one shared expert (16); the
# multi-token-prediction layer off here (the Hub layouts carry it). GLM-4.5's GQA: 6 query heads in 2 KV groups of
# 8 channels, q/k/v biases, per-head q/k norms, rotary over half of head_dim. DeepSeek-V3's MLA: 4 independent
# heads (nope 8 + rope 8, v 12) through a q LoRA (24) and the kv latent (16), interleaved rope. GLM-4.7-Flash's MLA
# without q LoRA, one routing group, its dense layers by `mlp_layer_types`.
_DEEPSEEK_MOE_KW = dict(vocab_size=96, hidden_size=48, num_hidden_layers=4, intermediate_size=64,
                        moe_intermediate_size=16, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2,
                        n_group=2, topk_group=1, routed_scaling_factor=1.5, norm_topk_prob=True,
                        tie_word_embeddings=False, **_TOKENS)
GLM4_MOE_KW = dict(**_DEEPSEEK_MOE_KW, num_attention_heads=6, num_key_value_heads=2, head_dim=8, attention_bias=True,
                   use_qk_norm=True, first_k_dense_replace=1, num_nextn_predict_layers=0)
_MLA_KW = dict(num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
               v_head_dim=12)
DEEPSEEK_V3_KW = dict(**_DEEPSEEK_MOE_KW, **_MLA_KW, q_lora_rank=24, first_k_dense_replace=1, rope_interleave=True,
                      num_nextn_predict_layers=0)
GLM4_MOE_LITE_KW = dict(**_without(_DEEPSEEK_MOE_KW, "n_group", "topk_group"), **_MLA_KW, q_lora_rank=None,
                        n_group=1, topk_group=1, mlp_layer_types=["dense", "sparse", "dense", "sparse"])
_DEEPSEEK_MOE_REFUSALS = (
    (dict(moe_shared_expert_intermediate_size=12), Unrepresentable,
     ["not a multiple of moe_ffn_hidden_size=16", "Valid values: [16]"]),
    (dict(moe_ffn_hidden_size=12), Unrepresentable, ["moe_ffn_hidden_size=12 is not a multiple of 8"]),
)
RECORDS += [
    Family(
        "glm4_moe", "glm4_moe", GLM4_MOE_KW,
        plans=(dict(num_moe_experts=6, moe_ffn_hidden_size=8, moe_shared_expert_intermediate_size=8,
                    ffn_hidden_size=32, num_attention_heads=4, hidden_size=32),
               dict(num_moe_experts=4, hidden_size=40, drop_layers=[0])),
        refusals=(*_DEEPSEEK_MOE_REFUSALS,
                  (dict(num_moe_experts=5), PlanError, ["multiple of n_group=2"]),
                  (dict(num_attention_heads=3), PlanError, ["Valid values: [2, 4, 6]"])),
    ),
    Family(
        "deepseek_v3", "deepseek_v3", DEEPSEEK_V3_KW,
        plans=(dict(num_attention_heads=2, hidden_size=32, ffn_hidden_size=32, num_moe_experts=6,
                    moe_ffn_hidden_size=8, moe_shared_expert_intermediate_size=8),
               dict(num_attention_heads=3, num_moe_experts=4, drop_layers=[2])),
        refusals=(*_DEEPSEEK_MOE_REFUSALS, (dict(num_moe_experts=5), PlanError, ["multiple of n_group=2"])),
    ),
    Family(
        "glm4_moe_lite", "glm4_moe_lite", GLM4_MOE_LITE_KW,
        plans=(dict(num_moe_experts=5, moe_ffn_hidden_size=8, ffn_hidden_size=32, num_attention_heads=3,
                    hidden_size=40),
               dict(num_moe_experts=3, drop_layers=[1])),
        refusals=(*_DEEPSEEK_MOE_REFUSALS,
                  (dict(num_moe_experts=1), PlanError, ["too few experts for num_experts_per_tok=2"])),
    ),
]
FAMILIES = {f.name: f for f in RECORDS}


def tiny_config(family: str, **overrides):
    """The tiny config of a battery family (its record's name), with `overrides`."""
    return FAMILIES[family].tiny_config(**overrides)
