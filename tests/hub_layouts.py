"""Tiny checkpoints written file by file in the layouts real Hub checkpoints use.

Nothing here goes through `save_pretrained`: the config is the dict a Hub `config.json` holds
(legacy `hybrid_override_pattern`, remote-code-era field names, `auto_map`), and the weights are
named as on the Hub (`backbone.*`, per-expert `experts.{j}.*`, Granite's `input_linear`/`router.layer`,
LFM3's `self_attn.gate_proj`),
written into several safetensors shards with a `model.safetensors.index.json`. The weights come
from a random transformers model of the same config, renamed by hand, so the reload can be compared.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

from conftest import build
from hybridprune.checkpoint.load import load_model
from hybridprune.importance.calibrate import calibrate
from hybridprune.pruning.apply import prune
from hybridprune.pruning.export import export
from hybridprune.pruning.streaming import stream_prune

#: The auto_map code of the source: carried as files, never executed (importing it fails loudly).
REMOTE_CODE = 'raise RuntimeError("the checkpoint\'s own code was executed")\n'

NEMOTRON_HUB = {
    "architectures": ["NemotronHForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_nemotron_h.NemotronHConfig",
                 "AutoModelForCausalLM": "modeling_nemotron_h.NemotronHForCausalLM"},
    "model_type": "nemotron_h",
    "vocab_size": 96, "hidden_size": 48, "hybrid_override_pattern": "M-*-M-", "num_hidden_layers": 6,
    "mamba_num_heads": 12, "mamba_head_dim": 8, "mamba_n_groups": 3, "ssm_state_size": 8, "conv_kernel": 4,
    "chunk_size": 8, "expand": 2, "mamba_hidden_act": "silu", "time_step_limit": [0.0, float("inf")],
    "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 64,
    "mlp_hidden_act": "relu2", "layer_norm_epsilon": 1e-5, "residual_in_fp32": False, "use_bias": False,
    "use_conv_bias": True, "rescale_prenorm_residual": True, "tie_word_embeddings": False,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    "transformers_version": "4.48.0.dev0",
}

GRANITE_HUB = {
    "architectures": ["GraniteMoeHybridForCausalLM"],
    "model_type": "granitemoehybrid",
    "vocab_size": 96, "hidden_size": 48, "num_hidden_layers": 4,
    "layer_types": ["mamba", "attention", "mamba", "mamba"],
    "mamba_n_heads": 12, "mamba_d_head": 8, "mamba_n_groups": 3, "mamba_d_state": 8, "mamba_d_conv": 4,
    "mamba_expand": 2, "mamba_chunk_size": 8, "mamba_conv_bias": True, "mamba_proj_bias": False,
    "num_attention_heads": 6, "num_key_value_heads": 2, "attention_bias": False,
    "shared_intermediate_size": 64, "intermediate_size": 32, "num_local_experts": 0, "num_experts_per_tok": 0,
    "position_embedding_type": "nope", "embedding_multiplier": 2.0, "residual_multiplier": 0.5,
    "attention_multiplier": 0.3, "logits_scaling": 2.0, "tie_word_embeddings": True,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    "transformers_version": "4.56.0",
}


# Nemotron 3 Nano's layout, tiny: 8 experts in 2 routing groups, 2 per token, a shared expert
NEMOTRON_MOE_HUB = dict(
    NEMOTRON_HUB, hybrid_override_pattern="ME*EM-", n_routed_experts=8, moe_intermediate_size=16,
    moe_shared_expert_intermediate_size=24, n_shared_experts=1, num_experts_per_tok=2, n_group=2, topk_group=1,
    routed_scaling_factor=1.5, norm_topk_prob=True,
)
# the latent-projection variant: experts work in a 32-wide latent space, with biased projections
NEMOTRON_LATENT_HUB = dict(NEMOTRON_MOE_HUB, moe_latent_size=32, mlp_bias=True)
# Granite-4.0-H Tiny's layout, tiny: 6 experts (3-D ParallelExperts weights), 2 per token
GRANITE_MOE_HUB = dict(GRANITE_HUB, num_local_experts=6, intermediate_size=16, num_experts_per_tok=2)

# Kimi-Linear-48B-A3B's Hub config, tiny: the layer layout only in `linear_attn_config` (1-based) and
# `first_k_dense_replace`, the remote code's field names (`num_experts`, `num_experts_per_token`, ...)
KIMI_HUB = {
    "architectures": ["KimiLinearForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_kimi.KimiLinearConfig",
                 "AutoModelForCausalLM": "modeling_kimi.KimiLinearForCausalLM"},
    "model_type": "kimi_linear",
    "vocab_size": 96, "hidden_size": 48, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
    "q_lora_rank": None, "kv_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 12,
    "mla_use_nope": True, "intermediate_size": 64, "moe_intermediate_size": 16, "num_experts": 8,
    "num_experts_per_token": 2, "num_expert_group": 2, "topk_group": 1, "num_shared_experts": 1,
    "moe_renormalize": True, "routed_scaling_factor": 1.5, "first_k_dense_replace": 1, "moe_layer_freq": 1,
    "use_grouped_topk": True, "moe_router_activation_func": "sigmoid", "hidden_act": "silu", "rms_norm_eps": 1e-5,
    "linear_attn_config": {"kda_layers": [1, 3, 4], "full_attn_layers": [2], "num_heads": 6, "head_dim": 8,
                           "short_conv_kernel_size": 4},
    "model_max_length": 1048576, "tie_word_embeddings": False, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
    "torch_dtype": "float32", "transformers_version": "4.56.0",
}


def per_expert(stem: str, which: str, t: torch.Tensor, names=("gate_proj", "up_proj", "down_proj")) -> dict:
    """The Hub's per-expert tensors (`stem.{j}.{name}.weight`) of the 3-D expert tensor `stem.which`: each
    expert's `gate_up_proj` rows halved into gate and up, its `down_proj` as is."""
    out = {}
    for j in range(t.shape[0]):
        if which == "down_proj":
            out[f"{stem}.{j}.{names[2]}.weight"] = t[j].clone()
        else:
            gate, up = t[j].chunk(2, dim=0)
            out[f"{stem}.{j}.{names[0]}.weight"], out[f"{stem}.{j}.{names[1]}.weight"] = gate.clone(), up.clone()
    return out


def kimi_hub_tensors(state: dict[str, torch.Tensor], mlp_types: list[str]) -> dict[str, torch.Tensor]:
    """Kimi Linear's Hub names: the forget gate's tensors directly under `self_attn`, one short conv per
    q/k/v, MoE layers under `block_sparse_moe` with per-expert `w1` (gate), `w3` (up), `w2` (down)."""
    out = {}
    for key, t in state.items():
        key = key.replace("self_attn.forget_gate.", "self_attn.")
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.*)", key)
        if m and mlp_types[int(m.group(1))] == "sparse":
            key = key.replace(".mlp.", ".block_sparse_moe.")
        if key.endswith("self_attn.conv1d.weight"):
            for name, part in zip("qkv", t.chunk(3, dim=0)):
                out[key.replace("conv1d", f"{name}_conv1d")] = part.clone()
        elif (experts := per_expert_w123(key, t)) is not None:
            out.update(experts)
        else:
            out[key] = t.clone()
    return out


def per_expert_w123(key: str, t: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """The per-expert `w1` (gate), `w3` (up) and `w2` (down) tensors of a stacked `experts.gate_up_proj`
    [E, 2F, H] or `experts.down_proj` [E, H, F] (Kimi Linear's and LFM2-MoE's Hub layout), else None."""
    m = re.fullmatch(r"(.*\.experts)\.(gate_up_proj|down_proj)", key)
    return None if m is None else per_expert(m.group(1), m.group(2), t, ("w1", "w3", "w2"))


# LFM2-1.2B's Hub config, tiny: remote-code-era aliases of the sizes (block_dim, conv_dim, num_heads,
# block_ff_dim, tie_embedding, theta), attention layers from full_attn_idxs, the auto-adjusted FFN
# (int(2 * 96 / 3) = 64, a multiple of 16)
LFM2_HUB = {
    "architectures": ["Lfm2ForCausalLM"], "model_type": "lfm2",
    "vocab_size": 96, "hidden_size": 48, "block_dim": 48, "conv_dim": 48, "conv_dim_out": 48,
    "num_hidden_layers": 4, "full_attn_idxs": [1, 3], "num_attention_heads": 6, "num_heads": 6,
    "num_key_value_heads": 2, "intermediate_size": 96, "block_ff_dim": 96, "block_auto_adjust_ff_dim": True,
    "block_ffn_dim_multiplier": 1.0, "block_multiple_of": 16, "block_use_swiglu": True, "conv_L_cache": 3,
    "conv_bias": False, "norm_eps": 1e-5, "rope_theta": 1000000.0, "theta": 1000000.0, "tie_embedding": True,
    "max_position_embeddings": 128000, "use_pos_enc": True, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
    "torch_dtype": "float32", "transformers_version": "4.54.0.dev0",
}
# LFM2-8B-A1B's layout, tiny: per-expert `feed_forward.experts.{j}.w1/w2/w3.weight` keys (transformers
# stacks w1 and w3 into experts.gate_up_proj), one dense layer first, an fp32 expert_bias
LFM2_MOE_HUB = {
    "architectures": ["Lfm2MoeForCausalLM"], "model_type": "lfm2_moe",
    "vocab_size": 96, "hidden_size": 48, "num_hidden_layers": 4,
    "layer_types": ["conv", "full_attention", "conv", "conv"], "num_attention_heads": 6, "num_key_value_heads": 2,
    "intermediate_size": 64, "moe_intermediate_size": 16, "num_experts": 8, "num_experts_per_tok": 2,
    "num_dense_layers": 1, "use_expert_bias": True, "norm_topk_prob": True, "routed_scaling_factor": 1.0,
    "conv_L_cache": 3, "conv_bias": False, "norm_eps": 1e-5, "rope_theta": 1000000.0, "tie_embedding": True,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    "transformers_version": "4.57.0",
}
# LFM3-1.7B's layout, tiny: the attention's output gate is `self_attn.gate_proj` on the Hub (g_proj loaded)
LFM3_HUB = {
    "architectures": ["Lfm3ForCausalLM"], "model_type": "lfm3",
    "vocab_size": 96, "hidden_size": 48, "num_hidden_layers": 4, "head_dim": 8,
    "layer_types": ["conv", "sliding_attention", "full_attention", "conv"], "num_attention_heads": 6,
    "num_key_value_heads": 2, "intermediate_size": 64, "sliding_window": 4, "conv_L_cache": 4,
    "use_sandwich_norm": True, "use_attention_gate": True, "norm_eps": 1e-5, "tie_word_embeddings": True,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "dtype": "float32", "transformers_version": "5.24.0",
}
# Qwen3-Next's layout, tiny: GDN 3:1 with gated attention; 8 experts (per-expert keys on the Hub), a dense MLP
# in layer 2; one multi-token-prediction layer stored beside the model
QWEN3_NEXT_HUB = {
    "architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next",
    "vocab_size": 96, "hidden_size": 48, "num_hidden_layers": 4, "full_attention_interval": 4,
    "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 8, "partial_rotary_factor": 0.25,
    "linear_num_key_heads": 2, "linear_num_value_heads": 6, "linear_key_head_dim": 8, "linear_value_head_dim": 8,
    "linear_conv_kernel_dim": 4, "intermediate_size": 64, "num_experts": 8, "moe_intermediate_size": 16,
    "shared_expert_intermediate_size": 24, "num_experts_per_tok": 2, "decoder_sparse_step": 1, "mlp_only_layers": [2],
    "norm_topk_prob": True, "mtp_num_hidden_layers": 1, "tie_word_embeddings": False, "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    "transformers_version": "4.57.0.dev0",
}
# Qwen3-30B-A3B's Hub config, tiny: per-expert `mlp.experts.{j}.gate_proj/up_proj/down_proj` keys, a head_dim
# wider than hidden_size / num_attention_heads (as there: 32 heads of 128 over a hidden size of 2048)
QWEN3_MOE_HUB = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
    "vocab_size": 96, "hidden_size": 48, "num_hidden_layers": 4, "num_attention_heads": 6, "num_key_value_heads": 2,
    "head_dim": 16, "attention_bias": False, "intermediate_size": 64, "moe_intermediate_size": 16, "num_experts": 8,
    "num_experts_per_tok": 2, "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True,
    "max_window_layers": 4, "use_sliding_window": False, "sliding_window": None, "rope_scaling": None,
    "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "hidden_act": "silu", "tie_word_embeddings": False,
    "router_aux_loss_coef": 0.001, "output_router_logits": False, "pad_token_id": 0, "bos_token_id": 1,
    "eos_token_id": 2, "torch_dtype": "float32", "transformers_version": "4.51.0",
}
# Qwen1.5-MoE-A2.7B's Hub config, tiny: per-expert keys beside `mlp.shared_expert.*` and `mlp.shared_expert_gate`,
# no `qkv_bias` field (q/k/v biases by default) and no `mlp_only_layers`; GQA as in Qwen2-57B-A14B
QWEN2_MOE_HUB = {
    "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe",
    "vocab_size": 96, "hidden_size": 48, "num_hidden_layers": 4, "num_attention_heads": 6, "num_key_value_heads": 2,
    "intermediate_size": 64, "moe_intermediate_size": 16, "shared_expert_intermediate_size": 24, "num_experts": 8,
    "num_experts_per_tok": 2, "decoder_sparse_step": 1, "norm_topk_prob": False, "max_window_layers": 4,
    "use_sliding_window": False, "sliding_window": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
    "hidden_act": "silu", "tie_word_embeddings": False, "router_aux_loss_coef": 0.001, "output_router_logits": False,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    "transformers_version": "4.40.0.dev0",
}
# Mixtral-8x7B's Hub config, tiny: `block_sparse_moe.gate` and per-expert `block_sparse_moe.experts.{j}.w1/w2/w3`
MIXTRAL_HUB = {
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
    "vocab_size": 96, "hidden_size": 48, "num_hidden_layers": 3, "num_attention_heads": 6, "num_key_value_heads": 2,
    "intermediate_size": 16, "num_local_experts": 8, "num_experts_per_tok": 2, "sliding_window": None,
    "rope_theta": 1000000.0, "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False,
    "router_aux_loss_coef": 0.02, "output_router_logits": False, "max_position_embeddings": 32768,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    "transformers_version": "4.36.0.dev0",
}
# gpt-oss-20b's Hub config, tiny: every layer MoE (num_local_experts, the expert width in intermediate_size, the
# legacy `experts_per_token` beside `num_experts_per_tok`), q/k/v/o biases and attention sinks, head_dim wider than
# hidden_size / num_attention_heads (as there: 64 heads of 64 over 2880), sliding / full attention alternating by
# `layer_types`, YaRN in the legacy `rope_scaling`. This is the unquantized (bf16) form, keys as the model's.
GPT_OSS_HUB = {
    "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
    "vocab_size": 96, "hidden_size": 48, "num_hidden_layers": 4, "num_attention_heads": 6, "num_key_value_heads": 2,
    "head_dim": 16, "attention_bias": True, "attention_dropout": 0.0, "intermediate_size": 16, "num_local_experts": 8,
    "num_experts_per_tok": 2, "experts_per_token": 2, "sliding_window": 16, "swiglu_limit": 7.0,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
    "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
                     "rope_type": "yarn", "truncate": False},
    "rope_theta": 150000, "initial_context_length": 4096, "max_position_embeddings": 131072, "hidden_act": "silu",
    "rms_norm_eps": 1e-5, "router_aux_loss_coef": 0.9, "output_router_logits": False, "initializer_range": 0.02,
    "tie_word_embeddings": False, "use_cache": True, "pad_token_id": 0, "eos_token_id": 2, "torch_dtype": "float32",
    "transformers_version": "4.55.0.dev0",
}
# The same as the Hub ships it: experts in MXFP4 (`*_blocks`, `*_scales`; attention, router, embeddings and head
# unquantized, as the Hub's modules_to_not_convert says), widths multiples of the 32-value MXFP4 block
GPT_OSS_MXFP4_HUB = dict(
    GPT_OSS_HUB, hidden_size=64, num_attention_heads=8, intermediate_size=32, torch_dtype="bfloat16",
    quantization_config={"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                    "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"})


def mxfp4_experts(tensors: dict[str, torch.Tensor], seed: int = 5) -> None:
    """Replace each expert matrix ([E, in, out] in the model) by random MXFP4 bytes as the Hub stores them:
    `*_blocks` [E, out, in / 32, 16] uint8 (two 4-bit values a byte) and `*_scales` [E, out, in / 32] uint8
    (biased exponents, here 2^-4 .. 2^1)."""
    g = torch.Generator().manual_seed(seed)
    for key in [k for k in tensors if re.search(r"\.experts\.(gate_up_proj|down_proj)$", k)]:
        e, n_in, n_out = tensors.pop(key).shape
        tensors[f"{key}_blocks"] = torch.randint(0, 256, (e, n_out, n_in // 32, 16), generator=g, dtype=torch.uint8)
        tensors[f"{key}_scales"] = torch.randint(123, 129, (e, n_out, n_in // 32), generator=g, dtype=torch.uint8)
    for key in list(tensors):
        if tensors[key].is_floating_point():
            tensors[key] = tensors[key].to(torch.bfloat16)


# Gemma-3-1B's Hub config, tiny: no `layer_types` (the 5:1 pattern from `sliding_window_pattern`), a local and a
# global RoPE base, one KV head, head_dim wider than hidden_size / num_attention_heads (4 x 256 over 1152), tied
# embeddings (no `lm_head.weight` stored)
GEMMA3_TEXT_HUB = {
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
    "vocab_size": 96, "hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 7, "num_attention_heads": 4,
    "num_key_value_heads": 1, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 16,
    "sliding_window_pattern": 6, "rope_theta": 1000000, "rope_local_base_freq": 10000, "rope_scaling": None,
    "attention_bias": False, "attention_dropout": 0.0, "attn_logit_softcapping": None,
    "final_logit_softcapping": None, "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6,
    "max_position_embeddings": 32768, "cache_implementation": "hybrid", "initializer_range": 0.02,
    "use_cache": True, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": [1, 106], "torch_dtype": "bfloat16",
    "transformers_version": "4.50.0.dev0",
}
# OLMo-2-1124-7B's Hub config, tiny: as many KV heads as heads (every head its own group: heads are kept)
OLMO2_HUB = {
    "architectures": ["Olmo2ForCausalLM"], "model_type": "olmo2",
    "vocab_size": 96, "hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 6,
    "num_key_value_heads": 6, "attention_bias": False, "attention_dropout": 0.0, "hidden_act": "silu",
    "rms_norm_eps": 1e-6, "rope_scaling": None, "rope_theta": 500000, "max_position_embeddings": 4096,
    "initializer_range": 0.02, "tie_word_embeddings": False, "use_cache": True, "pad_token_id": 0, "bos_token_id": 1,
    "eos_token_id": 2, "torch_dtype": "float32", "transformers_version": "4.47.0.dev0",
}
# OLMo-3's Hub config, tiny: GQA as in OLMo-3-32B, three sliding layers to one full one by `layer_types`
OLMO3_HUB = dict(OLMO2_HUB, architectures=["Olmo3ForCausalLM"], model_type="olmo3", num_hidden_layers=4,
                 num_key_value_heads=2, sliding_window=16,
                 layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
                 transformers_version="4.57.0")
# SmolLM3-3B's Hub config, tiny: `no_rope_layers` written out (every fourth layer NoPE), no `layer_types`, tied
SMOLLM3_HUB = {
    "architectures": ["SmolLM3ForCausalLM"], "model_type": "smollm3",
    "vocab_size": 96, "hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 8, "num_attention_heads": 6,
    "num_key_value_heads": 2, "no_rope_layers": [1, 1, 1, 0, 1, 1, 1, 0], "no_rope_layer_interval": 4,
    "use_sliding_window": False, "sliding_window": None, "attention_bias": False, "mlp_bias": False,
    "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_scaling": None, "rope_theta": 5000000.0,
    "max_position_embeddings": 65536, "tie_word_embeddings": True, "use_cache": False, "pad_token_id": 0,
    "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16", "transformers_version": "4.53.0.dev0",
}

# Granite-3.3's Hub config (GraniteForCausalLM), tiny: the µP multipliers as the Hub writes them, tied embeddings
GRANITE_DENSE_HUB = {
    "architectures": ["GraniteForCausalLM"], "model_type": "granite",
    "vocab_size": 96, "hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 6,
    "num_key_value_heads": 2, "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
    "embedding_multiplier": 12.0, "residual_multiplier": 0.22, "attention_multiplier": 0.125, "logits_scaling": 8.0,
    "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 10000000.0, "rope_scaling": None,
    "max_position_embeddings": 131072, "initializer_range": 0.02, "tie_word_embeddings": True, "use_cache": True,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
    "transformers_version": "4.49.0",
}
# Seed-OSS-36B's Hub config, tiny: head_dim (16) over twice hidden / heads as there (80 x 128 over 5120),
# q/k/v biases without an o_proj bias
SEED_OSS_HUB = {
    "architectures": ["SeedOssForCausalLM"], "model_type": "seed_oss",
    "vocab_size": 96, "hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 6,
    "num_key_value_heads": 2, "head_dim": 16, "attention_bias": True, "attention_out_bias": False, "mlp_bias": False,
    "attention_dropout": 0.1, "residual_dropout": 0.1, "hidden_act": "silu", "rms_norm_eps": 1e-6,
    "rope_theta": 10000000.0, "rope_scaling": {"rope_type": "default"}, "max_position_embeddings": 524288,
    "initializer_range": 0.02, "tie_word_embeddings": False, "use_cache": True, "pad_token_id": 1, "bos_token_id": 0,
    "eos_token_id": 2, "torch_dtype": "bfloat16", "transformers_version": "4.55.0",
}
# Mistral-NeMo-Minitron-8B / Nemotron-4-Minitron's Hub config (NemotronForCausalLM), tiny: head_dim 16 over
# hidden 48 with 6 heads (8B: 48 x 128 over 4096), squared ReLU, half-rotary heads, LayerNorm1P with biases
NEMOTRON_DENSE_HUB = {
    "architectures": ["NemotronForCausalLM"], "model_type": "nemotron",
    "vocab_size": 96, "hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 6,
    "num_key_value_heads": 2, "head_dim": 16, "hidden_act": "relu2", "norm_eps": 1e-5, "partial_rotary_factor": 0.5,
    "rope_theta": 10000, "rope_scaling": None, "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
    "max_position_embeddings": 4096, "initializer_range": 0.0134, "tie_word_embeddings": False, "use_cache": True,
    "bos_token_id": 2, "eos_token_id": 3, "torch_dtype": "bfloat16", "transformers_version": "4.44.0",
}
# Phi-4-mini's Hub config (Phi3ForCausalLM), tiny: fused qkv_proj and gate_up_proj, GQA, three quarters of each
# head rotary, LongRoPE factors for those 6 dims (3 each), tied embeddings
PHI3_HUB = {
    "architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
    "vocab_size": 96, "hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 6,
    "num_key_value_heads": 2, "partial_rotary_factor": 0.75, "hidden_act": "silu", "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0, "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.1, 1.2],
                                            "long_factor": [1.0, 2.0, 4.0]},
    "original_max_position_embeddings": 4096, "max_position_embeddings": 131072, "sliding_window": 262144,
    "attention_dropout": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0, "initializer_range": 0.02,
    "tie_word_embeddings": True, "use_cache": True, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
    "torch_dtype": "bfloat16", "transformers_version": "4.45.0",
}

# GLM-4.5-Air's Hub config, tiny: 6 query heads of 16 channels over a hidden size of 48 (as 96 x 128 over 4096), 2 KV
# heads, rotary over half of head_dim, q/k/v biases, no q/k norms, one routing group; a dense first layer; one
# multi-token-prediction layer stored as model.layers.4.* (`mtp_layer`)
GLM4_MOE_HUB = {
    "architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe",
    "vocab_size": 96, "hidden_size": 48, "num_hidden_layers": 4, "num_attention_heads": 6, "num_key_value_heads": 2,
    "head_dim": 16, "partial_rotary_factor": 0.5, "attention_bias": True, "use_qk_norm": False,
    "intermediate_size": 64, "moe_intermediate_size": 16, "n_routed_experts": 8, "n_shared_experts": 1,
    "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1, "norm_topk_prob": True,
    "routed_scaling_factor": 1.0, "num_nextn_predict_layers": 1, "hidden_act": "silu", "rms_norm_eps": 1e-5,
    "max_position_embeddings": 131072, "rope_theta": 1000000, "rope_scaling": None, "attention_dropout": 0.0,
    "tie_word_embeddings": False, "use_cache": True, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": [2],
    "torch_dtype": "float32", "transformers_version": "4.54.0",
}
# DeepSeek-V3's Hub config, tiny (remote-code era: `auto_map`, `scoring_func`, `topk_method`, yarn `rope_scaling`):
# MLA with a q LoRA, 8 experts in 2 routing groups, a dense first layer, one MTP layer (model.layers.4.*). The
# Hub's FP8 block-scaled weights (`weight_scale_inv`) are not reproduced: this one holds float32.
DEEPSEEK_V3_HUB = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config",
                 "AutoModel": "modeling_deepseek.DeepseekV3Model",
                 "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM"},
    "model_type": "deepseek_v3",
    "vocab_size": 96, "hidden_size": 48, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
    "q_lora_rank": 24, "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 12,
    "intermediate_size": 64, "moe_intermediate_size": 16, "n_routed_experts": 8, "n_shared_experts": 1,
    "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1, "first_k_dense_replace": 1, "moe_layer_freq": 1,
    "norm_topk_prob": True, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "topk_method": "noaux_tc",
    "seq_aux": True, "aux_loss_alpha": 0.001, "ep_size": 1, "num_nextn_predict_layers": 1, "hidden_act": "silu",
    "rms_norm_eps": 1e-6, "max_position_embeddings": 163840, "rope_theta": 10000,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "attention_bias": False, "attention_dropout": 0.0, "tie_word_embeddings": False, "use_cache": True,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    "transformers_version": "4.33.1",
}
# GLM-4.7-Flash's Hub config, tiny: MLA with a q LoRA, one routing group, the dense layers by
# `first_k_dense_replace` alone (transformers derives `mlp_layer_types`), one MTP layer (model.layers.4.*)
GLM4_MOE_LITE_HUB = {
    "architectures": ["Glm4MoeLiteForCausalLM"], "model_type": "glm4_moe_lite",
    "vocab_size": 96, "hidden_size": 48, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
    "q_lora_rank": 24, "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 12,
    "intermediate_size": 64, "moe_intermediate_size": 16, "n_routed_experts": 8, "n_shared_experts": 1,
    "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1, "norm_topk_prob": True,
    "routed_scaling_factor": 1.8, "topk_method": "noaux_tc", "num_nextn_predict_layers": 1, "hidden_act": "silu",
    "rms_norm_eps": 1e-5, "max_position_embeddings": 202752, "rope_theta": 1000000, "rope_interleave": True,
    "attention_bias": False, "attention_dropout": 0.0, "tie_word_embeddings": False, "use_cache": True,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": [2], "torch_dtype": "float32",
    "transformers_version": "5.0.0.dev0",
}


def mtp_layer(index: int, hidden: int, vocab: int = 96) -> dict[str, torch.Tensor]:
    """A multi-token-prediction layer as DeepSeek-V3 and GLM-4.5 store it, after the last decoder layer
    (`model.layers.{index}.*`): its projections and norms, a shared head, and decoder tensors of its own
    (one of them a per-expert tensor, which the load-time merge must not take for the model's)."""
    g = torch.Generator().manual_seed(4)
    stem = f"model.layers.{index}."
    return {f"{stem}{name}": torch.randn(*shape, generator=g) for name, shape in {
        "embed_tokens.weight": (vocab, hidden), "enorm.weight": (hidden,), "hnorm.weight": (hidden,),
        "eh_proj.weight": (hidden, 2 * hidden), "shared_head.norm.weight": (hidden,),
        "shared_head.head.weight": (vocab, hidden), "input_layernorm.weight": (hidden,),
        "mlp.gate.weight": (8, hidden), "mlp.gate.e_score_correction_bias": (8,),
        "mlp.experts.0.gate_proj.weight": (16, hidden), "mlp.experts.0.down_proj.weight": (hidden, 16),
    }.items()}


def _moe_transformer_hub_tensors(key: str, t: torch.Tensor, model_type: str) -> dict[str, torch.Tensor] | None:
    """The Hub's tensors for one model tensor of a transformer MoE family, or None when it is stored as is:
    Qwen's per-expert gate/up/down; Mixtral's `block_sparse_moe` with per-expert w1 (gate), w3 (up), w2 (down)."""
    if model_type in ("qwen3_moe", "qwen2_moe", "glm4_moe", "glm4_moe_lite", "deepseek_v3"):
        m = re.fullmatch(r"(.*\.mlp\.experts)\.(gate_up_proj|down_proj)", key)
        return per_expert(m.group(1), m.group(2), t) if m else None
    if model_type == "mixtral" and ".mlp." in key:
        key = key.replace(".mlp.", ".block_sparse_moe.")
        return per_expert_w123(key, t) or {key: t.clone()}
    return None


# OLMo Hybrid's layout, tiny: the Hub stores q/k/v convolutions apart, at their own sizes (16, 16, 48)
OLMO_HYBRID_HUB = {
    "architectures": ["OlmoHybridForCausalLM"], "model_type": "olmo_hybrid",
    "vocab_size": 96, "hidden_size": 48, "num_hidden_layers": 4, "intermediate_size": 64,
    "layer_types": ["linear_attention", "full_attention", "linear_attention", "linear_attention"],
    "num_attention_heads": 6, "num_key_value_heads": 2, "linear_num_key_heads": 2, "linear_num_value_heads": 6,
    "linear_key_head_dim": 8, "linear_value_head_dim": 8, "linear_conv_kernel_dim": 4, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
}


def _gdn_hub_tensors(key: str, t: torch.Tensor, config) -> dict[str, torch.Tensor] | None:
    """The Hub's tensors for one model tensor of a GDN family, or None when it is stored as is: Qwen's
    per-expert gate/up/down, OLMo Hybrid's q/k/v convolutions at their own sizes and its layer norms."""
    m = re.fullmatch(r"(.*\.mlp\.experts)\.(gate_up_proj|down_proj)", key)
    if m and config.model_type in ("qwen3_next", "qwen3_5_moe_text"):
        return per_expert(m.group(1), m.group(2), t)
    if config.model_type != "olmo_hybrid":
        return None
    if key.endswith("linear_attn.conv1d.weight"):
        kd = config.linear_num_key_heads * config.linear_key_head_dim
        q, k, v = t[:kd], t[kd:2 * kd], t[2 * kd:]
        stem = key[: -len("conv1d.weight")]
        return {f"{stem}q_conv1d.weight": q.clone(), f"{stem}k_conv1d.weight": k.clone(), f"{stem}v_conv1d.weight": v.clone()}
    layer = re.fullmatch(r"model\.layers\.(\d+)\.(input_layernorm|post_attention_layernorm)\.weight", key)
    if layer and config.layer_types[int(layer.group(1))] == "linear_attention":
        name = {"input_layernorm": "attention_layer_norm", "post_attention_layernorm": "feedforward_layer_norm"}
        return {f"model.layers.{layer.group(1)}.{name[layer.group(2)]}.weight": t.clone()}
    return None


def hub_name(model_key: str, model_type: str) -> str:
    """The Hub's name of a transformers 5 model key (written out, not taken from transformers)."""
    if model_type == "nemotron_h":
        return re.sub(r"^model\.", "backbone.", model_key)
    if model_type == "lfm3":
        return model_key.replace(".self_attn.g_proj.", ".self_attn.gate_proj.")
    key = model_key.replace("block_sparse_moe.experts.gate_up_proj", "block_sparse_moe.input_linear.weight")
    key = key.replace("block_sparse_moe.experts.down_proj", "block_sparse_moe.output_linear.weight")
    return key.replace("block_sparse_moe.router.weight", "block_sparse_moe.router.layer.weight")


def hub_tensors(model, model_type: str) -> dict[str, torch.Tensor]:
    """The model's weights under Hub names; Nemotron-H's and Qwen's 3-D expert tensors split per expert."""
    if model_type == "kimi_linear":
        return kimi_hub_tensors(model.state_dict(), list(model.config.mlp_layer_types))
    out = {}
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    for key, t in model.state_dict().items():
        if key in tied:
            continue
        gdn = _gdn_hub_tensors(key, t, model.config)
        if gdn is None:
            gdn = _moe_transformer_hub_tensors(key, t, model_type)
        if gdn is not None:
            out.update(gdn)
            continue
        m = re.fullmatch(r"(.*\.mixer\.experts)\.(up_proj|down_proj)", key)
        if model_type == "nemotron_h" and m:
            for j in range(t.shape[0]):
                out[hub_name(f"{m.group(1)}.{j}.{m.group(2)}.weight", model_type)] = t[j].clone()
        elif model_type == "lfm2_moe" and (experts := per_expert_w123(key, t)) is not None:
            out.update(experts)
        else:
            out[hub_name(key, model_type)] = t.clone()
    return out


def write_shards(path: Path, tensors: dict[str, torch.Tensor], shards: int = 8) -> None:
    """`tensors` in about `shards` safetensors files of similar size, in key order, with an index."""
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    groups: list[list[str]] = [[]]
    size = 0
    for key, t in tensors.items():
        if groups[-1] and size >= total / shards:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += t.numel() * t.element_size()
    weight_map = {}
    for i, keys in enumerate(groups):
        name = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        save_file({k: tensors[k].contiguous() for k in keys}, str(path / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in keys})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def hub_checkpoint(path: Path, raw: dict, *, seed: int = 0, extra: dict[str, torch.Tensor] | None = None,
                   edit=None):
    """Write a Hub-layout checkpoint for config dict `raw` into `path`; return the random model whose
    weights it holds (built by transformers from the same config). `extra`: more tensors (e.g. MTP
    layers the model does not load); `edit(tensors)`: change the tensors before they are written."""
    from transformers import AutoConfig

    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(raw, indent=2))  # Infinity written bare, as on the Hub
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    model = build(config, seed=seed)
    tensors = hub_tensors(model, config.model_type)
    tensors.update(extra or {})
    if edit is not None:
        edit(tensors)
    write_shards(path, tensors)
    for name in set(raw.get("auto_map", {}).values()):
        (path / f"{name.split('.')[0]}.py").write_text(REMOTE_CODE)
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    return model


def mtp_tensors(hidden: int) -> dict[str, torch.Tensor]:
    """Multi-token-prediction weights as Nemotron checkpoints store them beside the backbone (names
    after the MTP module's own layers; one of them looks like a per-expert tensor)."""
    g = torch.Generator().manual_seed(3)
    return {
        "mtp.layers.0.enorm.weight": torch.randn(hidden, generator=g),
        "mtp.layers.0.hnorm.weight": torch.randn(hidden, generator=g),
        "mtp.layers.0.eh_proj.weight": torch.randn(hidden, 2 * hidden, generator=g),
        "mtp.layers.0.mixer.q_proj.weight": torch.randn(hidden, hidden, generator=g),
        "mtp.layers.1.mixer.experts.0.up_proj.weight": torch.randn(16, hidden, generator=g),
        "mtp.layers.1.final_layernorm.weight": torch.randn(hidden, generator=g),
    }


def read_all(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for p in sorted(directory.glob("*.safetensors")):
        out.update(load_file(str(p)))
    return out


# ---- pruning such a checkpoint both ways, and reloading the outputs ---------------------------------------
def logits(model, tokens):
    with torch.no_grad():
        return model(input_ids=tokens, use_cache=False).logits


def prune_both_ways(tmp_path, src, tokens, plan):
    """In memory (our load path, `prune`, `export`) and streaming, from the same scores; our own
    warnings are returned for the caller to check."""
    model = load_model(src)  # refuses a missing, unexpected or misshapen tensor
    scores = calibrate(model, tokens, batch_size=2, progress=False, depth_samples=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned = prune(model, scores, plan)
        memory = export(pruned, tmp_path / "memory", source=str(src))
        stream = stream_prune(src, scores, plan, tmp_path / "stream")
    # ours: raised in hybridprune, or attributed (stacklevel) to its callers, here or in a test
    ours = [str(w.message) for w in caught
            if "hybridprune" in w.filename or w.filename == __file__ or "test_" in w.filename]
    return pruned, memory, stream, ours


def check_round_trip(pruned, outputs, tokens):
    """Both outputs hold the same tensors under the same names, sharded with an index, and reload with
    plain transformers (no remote code) and with our strict load path to the pruned model's logits."""
    from transformers import AutoModelForCausalLM

    memory, stream = outputs
    a, b = read_all(memory), read_all(stream)
    assert sorted(a) == sorted(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    expected = logits(pruned, tokens)
    for out in outputs:
        assert (out / "model.safetensors.index.json").is_file() and len(list(out.glob("*.safetensors"))) > 1
        reloaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False).eval()
        torch.testing.assert_close(logits(reloaded, tokens), expected, rtol=0, atol=0)
        torch.testing.assert_close(logits(load_model(out), tokens), expected, rtol=0, atol=0)
    return a
