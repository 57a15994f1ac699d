"""Unit layouts of Kimi Linear (`kimi_linear`): Kimi Delta Attention, MLA and its DeepSeek-V3 MoE.

As transformers 5.24 lays them out (modeling_kimi_linear.py):

- KDA (`KimiLinearDeltaAttention`): `q_proj`/`k_proj`/`v_proj` [heads·head_dim, H]; one depthwise
  `conv1d` over the stacked q ‖ k ‖ v channels [3·heads·head_dim, 1, K] (the Hub's `q_conv1d`,
  `k_conv1d`, `v_conv1d` are concatenated on load), no bias; `forget_gate.f_a_proj` [head_dim, H] →
  `forget_gate.f_b_proj` [heads·head_dim, head_dim], `forget_gate.dt_bias` per channel,
  `forget_gate.A_log` [1, 1, heads, 1]; `b_proj` [heads, H]; `g_a_proj` [head_dim, H] → `g_b_proj`
  [heads·head_dim, head_dim]; `o_norm` a gated RMSNorm over head_dim, one weight for every head;
  `o_proj` [H, heads·head_dim]. Heads are independent (no grouping): they are scored, ranked and cut
  as Mamba heads in a single group, through the Mamba axes. The low-rank bottlenecks (`f_a_proj`,
  `g_a_proj` outputs) are kept.
- MLA (`KimiLinearAttention`): `q_proj` [heads·(nope + rope), H], or `q_a_proj` → `q_a_layernorm` →
  `q_b_proj` [heads·(nope + rope), q_lora_rank]; `kv_a_proj_with_mqa` [kv_lora_rank + rope, H] →
  `kv_a_layernorm` → `kv_b_proj` [heads·(nope + v), kv_lora_rank]; `o_proj` [H, heads·v]. Heads are
  independent too: a head is its q rows, its kv_b rows and its o_proj columns; the LoRA ranks and the
  shared rope key are kept.
- MoE (`KimiLinearMoE`): a sigmoid router with `e_score_correction_bias` (fp32) in `n_group` routing
  groups, gated experts with fused `gate_up_proj` [E, 2F, H], and `shared_experts`, a gated MLP of width
  `moe_intermediate_size × n_shared_experts`.
"""

from __future__ import annotations

from .base import ATTENTION, MAMBA, MOE, Dims, Shapes, UnitCache, UnitLayout
from .layouts import _gated_expert, _inactive_experts, present, routed_experts_shapes

#: `Dims.extras` names of the fixed MLA sizes
Q_HEAD = "mla_q_head_width"  # qk_nope_head_dim + qk_rope_head_dim: one head's q rows
KV_HEAD = "mla_kv_head_width"  # qk_nope_head_dim + v_head_dim: one head's kv_b rows
Q_LORA, KV_LORA, ROPE = "q_lora_rank", "kv_lora_rank", "qk_rope_head_dim"

KDA_RULES = {
    "q_proj.weight": ("mamba_channels", "hidden"),
    "k_proj.weight": ("mamba_channels", "hidden"),
    "v_proj.weight": ("mamba_channels", "hidden"),
    "conv1d.weight": ("mamba_channels_x3", None, None),
    "forget_gate.f_a_proj.weight": (None, "hidden"),
    "forget_gate.f_b_proj.weight": ("mamba_channels", None),
    "forget_gate.dt_bias": ("mamba_channels",),
    "forget_gate.A_log": (None, None, "mamba_heads", None),
    "b_proj.weight": ("mamba_heads", "hidden"),
    "g_a_proj.weight": (None, "hidden"),
    "g_b_proj.weight": ("mamba_channels", None),
    "o_norm.weight": ("mamba_head_dims",),
    "o_proj.weight": ("hidden", "mamba_channels"),
}


def _kda_count(d: Dims) -> int:
    h, heads, hd = d.hidden_size, d.mamba_num_heads, d.mamba_head_dim
    inner = heads * hd
    total = 3 * inner * h + 3 * inner * d.mamba_conv_kernel  # q, k, v and their conv
    total += 2 * (hd * h + inner * hd)  # forget and output gates, low rank
    total += inner + heads + heads * h  # dt_bias, A_log, b_proj
    return total + hd + inner * h  # o_norm, o_proj


def _kda_shapes(d: Dims) -> Shapes:
    h, heads, hd = d.hidden_size, d.mamba_num_heads, d.mamba_head_dim
    inner = heads * hd
    return {"q_proj.weight": (inner, h), "k_proj.weight": (inner, h), "v_proj.weight": (inner, h),
            "conv1d.weight": (3 * inner, 1, d.mamba_conv_kernel),
            "forget_gate.f_a_proj.weight": (hd, h), "forget_gate.f_b_proj.weight": (inner, hd),
            "forget_gate.dt_bias": (inner,), "forget_gate.A_log": (1, 1, heads, 1), "b_proj.weight": (heads, h),
            "g_a_proj.weight": (hd, h), "g_b_proj.weight": (inner, hd), "o_norm.weight": (hd,),
            "o_proj.weight": (h, inner)}


def _kda_cache(d: Dims) -> UnitCache:
    """The conv window over the stacked q ‖ k ‖ v channels and the recurrent state [heads, head_dim, head_dim]."""
    inner = d.mamba_num_heads * d.mamba_head_dim
    return UnitCache(conv=3 * inner * d.mamba_conv_kernel, state=inner * d.mamba_state_size)


KDA = UnitLayout(MAMBA, KDA_RULES, hook="o_proj", hook_on="input", count=_kda_count, shapes=_kda_shapes,
                 cache=_kda_cache)

MLA_RULES = {
    "q_proj.weight": (f"attn_heads:{Q_HEAD}", "hidden"),
    "q_a_proj.weight": (None, "hidden"),
    "q_b_proj.weight": (f"attn_heads:{Q_HEAD}", None),
    "kv_a_proj_with_mqa.weight": (None, "hidden"),
    "kv_b_proj.weight": (f"attn_heads:{KV_HEAD}", None),
    "o_proj.weight": ("hidden", "attn_q"),
    "o_proj.bias": ("hidden",),
}


def _mla_count(d: Dims) -> int:
    h, heads, bias = d.hidden_size, d.num_attention_heads, d.attention_bias
    q_rows, q_lora, kv_lora = heads * d.extra(Q_HEAD), d.extra(Q_LORA), d.extra(KV_LORA)
    if q_lora:
        total = q_lora * h + (q_lora if bias else 0) + q_lora + q_rows * q_lora  # q_a, its norm, q_b
    else:
        total = q_rows * h
    kv_a = kv_lora + d.extra(ROPE)
    total += kv_a * h + (kv_a if bias else 0) + kv_lora + heads * d.extra(KV_HEAD) * kv_lora
    return total + heads * d.attention_head_dim * h + (h if bias else 0)


def _mla_shapes(d: Dims) -> Shapes:
    h, heads, bias = d.hidden_size, d.num_attention_heads, d.attention_bias
    q_rows, q_lora, kv_lora = heads * d.extra(Q_HEAD), d.extra(Q_LORA), d.extra(KV_LORA)
    kv_a = kv_lora + d.extra(ROPE)
    return present(
        q_proj__weight=None if q_lora else (q_rows, h),
        q_a_proj__weight=(q_lora, h) if q_lora else None, q_a_proj__bias=(q_lora,) if q_lora and bias else None,
        q_a_layernorm__weight=(q_lora,) if q_lora else None, q_b_proj__weight=(q_rows, q_lora) if q_lora else None,
        kv_a_proj_with_mqa__weight=(kv_a, h), kv_a_proj_with_mqa__bias=(kv_a,) if bias else None,
        kv_a_layernorm__weight=(kv_lora,), kv_b_proj__weight=(heads * d.extra(KV_HEAD), kv_lora),
        o_proj__weight=(h, heads * d.attention_head_dim), o_proj__bias=(h,) if bias else None)


# the cache holds, per token, one latent shared by every head: the compressed kv and the rope key
MLA = UnitLayout(ATTENTION, MLA_RULES, hook="o_proj", hook_on="input", count=_mla_count, shapes=_mla_shapes,
                 cache=lambda d: UnitCache(per_token=d.extra(KV_LORA) + d.extra(ROPE)))


def _moe_shapes(d: Dims) -> Shapes:
    h, fs = d.hidden_size, d.moe_shared_expert_intermediate_size
    return {**routed_experts_shapes("gate", router_bias="gate.e_score_correction_bias")(d),
            "shared_experts.gate_proj.weight": (fs, h), "shared_experts.up_proj.weight": (fs, h),
            "shared_experts.down_proj.weight": (h, fs)}


def _moe_count(d: Dims) -> int:
    e, h, f, fs = d.num_moe_experts, d.hidden_size, d.moe_ffn_hidden_size, d.moe_shared_expert_intermediate_size
    return e * h + e * 3 * f * h + 3 * fs * h  # router, experts, shared experts


DEEPSEEK_MOE = UnitLayout(
    MOE,
    {"gate.weight": ("moe_experts", "hidden"), "gate.e_score_correction_bias": ("moe_experts",),
     "experts.gate_up_proj": ("moe_experts", "moe_ffn_gate_up", "moe_input"),
     "experts.down_proj": ("moe_experts", "moe_input", "moe_ffn"),
     "shared_experts.gate_proj.weight": ("moe_shared_ffn", "hidden"),
     "shared_experts.up_proj.weight": ("moe_shared_ffn", "hidden"),
     "shared_experts.down_proj.weight": ("hidden", "moe_shared_ffn")},
    hook="experts", hook_on="moe_experts", count=_moe_count, inactive=_inactive_experts(3),
    more_hooks=(("shared_experts.down_proj", "input", "moe_shared_ffn"),), expert_forward=_gated_expert,
    shapes=_moe_shapes,
)
