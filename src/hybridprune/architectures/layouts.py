"""Unit layouts shared by the families: which axis slices each tensor dimension, which activation
scores the unit, and how many parameters it has.

Rules are keyed by the parameter's name inside the unit. Axes are resolved into index tensors by
`hybridprune.pruning.slicing`. Counts and shapes are exact functions of `Dims`; the tests compare them
with `sum(p.numel())` and the state dicts of real models.
"""

from __future__ import annotations

# torch is imported by the experts' forward below: describing a layout (and checking a plan) needs none

from .base import ATTENTION, CONV, MAMBA, MLP, MOE, Dims, Shapes, UnitCache, UnitLayout, mamba_inner


def present(**tensors) -> Shapes:
    """The tensors that exist (a shape of None: the config has no such tensor), keyed by their names with
    `__` for `.` (`in_proj__weight` is `in_proj.weight`)."""
    return {name.replace("__", "."): shape for name, shape in tensors.items() if shape is not None}

# ---- Mamba2 mixer ------------------------------------------------------------------------------
# Laid out identically in every HF Mamba2-family class: in_proj rows [z | x | B | C | dt], conv1d
# channels [x | B | C], per-head dt_bias/A_log/D, a gated norm over x channels (absent in Falcon-H1
# unless mamba_rms_norm), out_proj columns over x channels.
MAMBA2_RULES = {
    "in_proj.weight": ("mamba_in_proj", "hidden"),
    "in_proj.bias": ("mamba_in_proj",),
    "conv1d.weight": ("mamba_conv", None, None),
    "conv1d.bias": ("mamba_conv",),
    "dt_bias": ("mamba_heads",),
    "A_log": ("mamba_heads",),
    "D": ("mamba_heads",),
    "norm.weight": ("mamba_channels",),
    "out_proj.weight": ("hidden", "mamba_channels"),
    "out_proj.bias": ("hidden",),
}


def _mamba2_count(d: Dims) -> int:
    h, nh, inner = d.hidden_size, d.mamba_num_heads, mamba_inner(d)
    gn = d.mamba_n_groups * d.mamba_state_size
    proj_out = 2 * inner + 2 * gn + nh
    conv_dim = inner + 2 * gn
    total = proj_out * h + (proj_out if d.mamba_proj_bias else 0)
    total += conv_dim * d.mamba_conv_kernel + (conv_dim if d.mamba_conv_bias else 0)
    total += 3 * nh  # dt_bias, A_log, D
    total += inner if d.mamba_has_norm else 0
    out_bias = d.mamba_proj_bias if d.mamba_out_proj_bias is None else d.mamba_out_proj_bias
    return total + inner * h + (h if out_bias else 0)


def _mamba2_shapes(d: Dims) -> Shapes:
    h, nh, inner = d.hidden_size, d.mamba_num_heads, mamba_inner(d)
    gn = d.mamba_n_groups * d.mamba_state_size
    proj_out, conv_dim = 2 * inner + 2 * gn + nh, inner + 2 * gn
    out_bias = d.mamba_proj_bias if d.mamba_out_proj_bias is None else d.mamba_out_proj_bias
    return present(
        in_proj__weight=(proj_out, h), in_proj__bias=(proj_out,) if d.mamba_proj_bias else None,
        conv1d__weight=(conv_dim, 1, d.mamba_conv_kernel), conv1d__bias=(conv_dim,) if d.mamba_conv_bias else None,
        dt_bias=(nh,), A_log=(nh,), D=(nh,), norm__weight=(inner,) if d.mamba_has_norm else None,
        out_proj__weight=(h, inner), out_proj__bias=(h,) if out_bias else None)


def mamba2_cache(d: Dims) -> UnitCache:
    """The conv window over the x ‖ B ‖ C channels and the SSM state [heads, head_dim, state]."""
    inner = mamba_inner(d)
    return UnitCache(conv=(inner + 2 * d.mamba_n_groups * d.mamba_state_size) * d.mamba_conv_kernel,
                     state=inner * d.mamba_state_size)


MAMBA2_MIXER = UnitLayout(MAMBA, MAMBA2_RULES, hook="in_proj", hook_on="mamba_x", count=_mamba2_count,
                          shapes=_mamba2_shapes, cache=mamba2_cache)


# ---- attention -----------------------------------------------------------------------------------
def kv_cache(d: Dims) -> UnitCache:
    """Keys and values of every KV head, per token (a gate or a wider input adds nothing to the cache)."""
    return UnitCache(per_token=2 * d.num_key_value_heads * d.attention_head_dim)


def qkvo_attention(*, bias: str = "all", qk_norm: bool | str = False, input_axis: str = "hidden", out: str = "o_proj",
                   head_gate: str | None = None, gated: bool = False,
                   qk_norm_names: tuple[str, str] = ("q_norm", "k_norm"), out_bias: str | None = None,
                   sinks: str | None = None) -> UnitLayout:
    """Attention with separate q/k/v/o projections; KV heads are never pruned.

    `bias`: which projections carry a bias when `Dims.attention_bias` ("all": q, k, v, o as in Llama;
    "qkv": Qwen2). `qk_norm`: per-head q/k RMSNorms over head_dim (Qwen3, LFM2), never sliced, named
    `qk_norm_names` (LFM2: `q_layernorm`, `k_layernorm`); "dims": present when `Dims.attention_qk_norm`
    (GLM-4.5's `use_qk_norm`, set in some checkpoints of the family and not in others).
    `input_axis`: the axis of the projections' input (Zamba2's shared attention reads 2 × hidden).
    `out`: the output projection's name (LFM2: `out_proj`). `head_gate`: a projection with one row per
    query head (LFM3's sigmoid output gate `g_proj`), cut with its head; present when the Dims extra
    "attention_gate" is 1. `gated`: q_proj emits, per head, head_dim query rows then head_dim
    output-gate rows (Qwen3.5, Qwen3-Next: `q_proj(x).view(.., heads, 2 * head_dim).chunk(2)`), so a
    pruned head takes its gate. `out_bias`: the Dims extra that says whether the output projection has
    a bias, apart from the q/k/v biases of `Dims.attention_bias` (Seed-OSS's `attention_out_bias`; `bias`
    then says "qkv"). `sinks`: a parameter with one learned logit per query head (gpt-oss's attention
    sinks, a column of each head's softmax that no value reads), cut with its head."""
    q_axis = "attn_q_gate" if gated else "attn_q"
    rules = {
        "q_proj.weight": (q_axis, input_axis),
        "q_proj.bias": (q_axis,),
        "k_proj.weight": (None, input_axis),
        "v_proj.weight": (None, input_axis),
        f"{out}.weight": ("hidden", "attn_q"),
        f"{out}.bias": ("hidden",),
    }
    if head_gate:
        rules[f"{head_gate}.weight"] = ("attn_heads", input_axis)
    if sinks:
        rules[sinks] = ("attn_heads",)

    def count(d: Dims) -> int:
        width = d.hidden_size * (2 if input_axis == "hidden2" else 1)
        hd = d.attention_head_dim
        q, kv = d.num_attention_heads * hd, d.num_key_value_heads * hd
        q_rows = 2 * q if gated else q
        total = (q_rows + 2 * kv) * width + q * d.hidden_size
        if d.attention_bias:
            total += q_rows + 2 * kv + (d.hidden_size if bias == "all" else 0)
        if out_bias and d.extra(out_bias, 0):
            total += d.hidden_size
        if qk_norm is True or (qk_norm == "dims" and d.attention_qk_norm):
            total += 2 * hd
        if head_gate and d.extra("attention_gate", 0):
            total += d.num_attention_heads * width
        if sinks:
            total += d.num_attention_heads
        return total

    def shapes(d: Dims) -> Shapes:
        width = d.hidden_size * (2 if input_axis == "hidden2" else 1)
        hd = d.attention_head_dim
        q, kv = d.num_attention_heads * hd, d.num_key_value_heads * hd
        q_rows = 2 * q if gated else q
        b = d.attention_bias
        out_shapes = {"q_proj.weight": (q_rows, width), "k_proj.weight": (kv, width), "v_proj.weight": (kv, width),
                      f"{out}.weight": (d.hidden_size, q)}
        if b:
            out_shapes.update({"q_proj.bias": (q_rows,), "k_proj.bias": (kv,), "v_proj.bias": (kv,)})
            if bias == "all":
                out_shapes[f"{out}.bias"] = (d.hidden_size,)
        if out_bias and d.extra(out_bias, 0):
            out_shapes[f"{out}.bias"] = (d.hidden_size,)
        if qk_norm is True or (qk_norm == "dims" and d.attention_qk_norm):
            out_shapes.update({f"{name}.weight": (hd,) for name in qk_norm_names})
        if head_gate and d.extra("attention_gate", 0):
            out_shapes[f"{head_gate}.weight"] = (d.num_attention_heads, width)
        if sinks:
            out_shapes[sinks] = (d.num_attention_heads,)
        return out_shapes

    return UnitLayout(ATTENTION, rules, hook=out, hook_on="input", count=count, shapes=shapes, cache=kv_cache)


def fused_qkv_attention(qkv: str = "qkv_proj", out: str = "o_proj") -> UnitLayout:
    """Attention whose q, k and v projections are one matrix `qkv` (Phi-3): rows [query heads | K | V]. Query
    heads are cut inside their KV groups; the K and V rows of every KV head stay whole (axis "attn_qkv").
    No biases, no q/k norms."""
    def shapes(d: Dims) -> Shapes:
        hd = d.attention_head_dim
        q, kv = d.num_attention_heads * hd, d.num_key_value_heads * hd
        return {f"{qkv}.weight": (q + 2 * kv, d.hidden_size), f"{out}.weight": (d.hidden_size, q)}

    def count(d: Dims) -> int:
        return sum(a * b for a, b in shapes(d).values())

    return UnitLayout(ATTENTION, {f"{qkv}.weight": ("attn_qkv", "hidden"), f"{out}.weight": ("hidden", "attn_q")},
                      hook=out, hook_on="input", count=count, shapes=shapes, cache=kv_cache)


QKVO_ATTENTION = qkvo_attention()
#: Qwen3.5 / Qwen3-Next full attention: gated, with per-head q_norm/k_norm
GATED_ATTENTION = qkvo_attention(bias="all", qk_norm=True, gated=True)


# ---- MLPs ----------------------------------------------------------------------------------------
def _mlp_count(projections_in: int):
    def count(d: Dims) -> int:
        f, h = d.ffn_hidden_size, d.hidden_size
        return (projections_in + 1) * f * h + ((projections_in * f + h) if d.mlp_bias else 0)

    return count


def _mlp_shapes(inputs: tuple[str, ...], down: str, *, fused: bool = False):
    """The shapes of an MLP whose projections `inputs` are [F, H] (one fused `inputs[0]` [2F, H] when
    `fused`) and `down` [H, F]; biases when `Dims.mlp_bias`."""
    def shapes(d: Dims) -> Shapes:
        f, h = d.ffn_hidden_size, d.hidden_size
        rows = 2 * f if fused else f
        out = {}
        for name in inputs:
            out[f"{name}.weight"] = (rows, h)
            if d.mlp_bias:
                out[f"{name}.bias"] = (rows,)
        out[f"{down}.weight"] = (h, f)
        if d.mlp_bias:
            out[f"{down}.bias"] = (h,)
        return out

    return shapes


# A non-gated MLP (up -> activation -> down): Nemotron-H.
UP_DOWN_MLP = UnitLayout(
    MLP,
    {"up_proj.weight": ("ffn", "hidden"), "up_proj.bias": ("ffn",),
     "down_proj.weight": ("hidden", "ffn"), "down_proj.bias": ("hidden",)},
    hook="down_proj", hook_on="input", count=_mlp_count(1), shapes=_mlp_shapes(("up_proj",), "down_proj"),
)

# A gated MLP (act(gate) * up -> down), gate and up rows cut together: Llama, Bamba, Falcon-H1.
GATED_MLP = UnitLayout(
    MLP,
    {"gate_proj.weight": ("ffn", "hidden"), "gate_proj.bias": ("ffn",),
     "up_proj.weight": ("ffn", "hidden"), "up_proj.bias": ("ffn",),
     "down_proj.weight": ("hidden", "ffn"), "down_proj.bias": ("hidden",)},
    hook="down_proj", hook_on="input", count=_mlp_count(2),
    shapes=_mlp_shapes(("gate_proj", "up_proj"), "down_proj"),
)


def gated_mlp(gate: str, up: str, down: str) -> UnitLayout:
    """A gated MLP under other names (LFM2's `w1`, `w3`, `w2`): act(gate) * up -> down."""
    rules = {f"{gate}.weight": ("ffn", "hidden"), f"{up}.weight": ("ffn", "hidden"),
             f"{down}.weight": ("hidden", "ffn")}
    return UnitLayout(MLP, rules, hook=down, hook_on="input", count=_mlp_count(2),
                      shapes=_mlp_shapes((gate, up), down))


def fused_gated_mlp(fused: str, down: str) -> UnitLayout:
    """A gated MLP whose gate and up projections are one `[2F, H]` matrix (`fused`), split in halves:
    rows `Kf ++ F + Kf` stay paired (Granite's input_linear, Zamba2's gate_up_proj)."""
    return UnitLayout(
        MLP,
        {f"{fused}.weight": ("ffn_gate_up", "hidden"), f"{fused}.bias": ("ffn_gate_up",),
         f"{down}.weight": ("hidden", "ffn"), f"{down}.bias": ("hidden",)},
        hook=down, hook_on="input", count=_mlp_count(2), shapes=_mlp_shapes((fused,), down, fused=True),
    )


# ---- mixture of experts --------------------------------------------------------------------------
# Routed experts are 3-D tensors [E, out, in] (transformers >= 5 merges per-expert checkpoint keys on
# load); the router's rows [E, H] are cut with them, so top-k routing can only pick kept experts. One
# expert-FFN width serves every expert (the config has one `moe_intermediate_size`), so the kept
# neurons are shared by all experts.
def _up_down_expert(experts, e: int, x):
    """Nemotron-H's non-gated expert: down(act(up(x)))."""
    import torch.nn.functional as F

    a = experts.act_fn(F.linear(x, experts.up_proj[e]))
    return a, F.linear(a, experts.down_proj[e])


def _gated_expert(experts, e: int, x):
    """A gated expert with gate and up fused in one [2F, in] matrix: down(act(gate(x)) * up(x))."""
    import torch.nn.functional as F

    gate, up = F.linear(x, experts.gate_up_proj[e]).chunk(2, dim=-1)
    a = experts.act_fn(gate) * up
    return a, F.linear(a, experts.down_proj[e])


def _expert_params(d: Dims, matrices: int) -> int:
    return matrices * d.moe_ffn_hidden_size * (d.moe_latent_size or d.hidden_size)


def _inactive_experts(matrices: int):
    def inactive(d: Dims) -> int:
        return (d.num_moe_experts - d.moe_top_k) * _expert_params(d, matrices)

    return inactive


def _nemotron_moe_count(d: Dims) -> int:
    e, h, fs, lat = d.num_moe_experts, d.hidden_size, d.moe_shared_expert_intermediate_size, d.moe_latent_size
    total = e * h + e * _expert_params(d, 2)  # router, experts
    total += 2 * fs * h + ((fs + h) if d.mlp_bias else 0)  # shared expert
    if lat:
        total += 2 * lat * h + ((lat + h) if d.mlp_bias else 0)  # fc1/fc2 latent projections
    return total


def _nemotron_moe_shapes(d: Dims) -> Shapes:
    e, h, f, fs, lat = (d.num_moe_experts, d.hidden_size, d.moe_ffn_hidden_size,
                        d.moe_shared_expert_intermediate_size, d.moe_latent_size)
    inner, bias = lat or h, d.mlp_bias
    return present(
        gate__weight=(e, h), gate__e_score_correction_bias=(e,),  # a saved buffer
        experts__up_proj=(e, f, inner), experts__down_proj=(e, inner, f),
        shared_experts__up_proj__weight=(fs, h), shared_experts__up_proj__bias=(fs,) if bias else None,
        shared_experts__down_proj__weight=(h, fs), shared_experts__down_proj__bias=(h,) if bias else None,
        fc1_latent_proj__weight=(lat, h) if lat else None, fc1_latent_proj__bias=(lat,) if lat and bias else None,
        fc2_latent_proj__weight=(h, lat) if lat else None, fc2_latent_proj__bias=(h,) if lat and bias else None)


def routed_experts_shapes(router: str, *, router_bias: str | None = None):
    """The shapes of a router [E, H] (and its fp32 `router_bias` [E], a saved buffer) and gated experts
    with fused gate‖up rows: `experts.gate_up_proj` [E, 2F, H], `experts.down_proj` [E, H, F]."""
    def shapes(d: Dims) -> Shapes:
        e, h, f = d.num_moe_experts, d.hidden_size, d.moe_ffn_hidden_size
        out = {f"{router}.weight": (e, h), "experts.gate_up_proj": (e, 2 * f, h), "experts.down_proj": (e, h, f)}
        if router_bias:
            out[router_bias] = (e,)
        return out

    return shapes


# Nemotron-H's MoE mixer: a sigmoid router with a score-correction bias (fp32), non-gated experts,
# a shared expert (a non-gated MLP) and optional latent projections around the experts.
NEMOTRON_MOE = UnitLayout(
    MOE,
    {"gate.weight": ("moe_experts", "hidden"), "gate.e_score_correction_bias": ("moe_experts",),
     "experts.up_proj": ("moe_experts", "moe_ffn", "moe_input"),
     "experts.down_proj": ("moe_experts", "moe_input", "moe_ffn"),
     "shared_experts.up_proj.weight": ("moe_shared_ffn", "hidden"), "shared_experts.up_proj.bias": ("moe_shared_ffn",),
     "shared_experts.down_proj.weight": ("hidden", "moe_shared_ffn"), "shared_experts.down_proj.bias": ("hidden",),
     "fc1_latent_proj.weight": (None, "hidden"),
     "fc2_latent_proj.weight": ("hidden", None), "fc2_latent_proj.bias": ("hidden",)},
    hook="experts", hook_on="moe_experts", count=_nemotron_moe_count, inactive=_inactive_experts(2),
    more_hooks=(("shared_experts.down_proj", "input", "moe_shared_ffn"),), expert_forward=_up_down_expert,
    shapes=_nemotron_moe_shapes,
)

def routed_gated_moe(router: str) -> UnitLayout:
    """A sparse block of routed experts only: a router without bias `router` [E, H] and gated experts
    whose gate and up projections are fused (rows `Kf ++ F + Kf`), no shared expert."""
    return UnitLayout(
        MOE,
        {f"{router}.weight": ("moe_experts", "hidden"),
         "experts.gate_up_proj": ("moe_experts", "moe_ffn_gate_up", "hidden"),
         "experts.down_proj": ("moe_experts", "hidden", "moe_ffn")},
        hook="experts", hook_on="moe_experts",
        count=lambda d: d.num_moe_experts * d.hidden_size + d.num_moe_experts * _expert_params(d, 3),
        inactive=_inactive_experts(3), expert_forward=_gated_expert, shapes=routed_experts_shapes(router),
    )


def _clamped_swiglu_expert(experts, e: int, x):
    """gpt-oss's expert: stored transposed ([in, out]) with biases, gate and up interleaved in the columns of
    `gate_up_proj` (gate at even, up at odd); gate clamped above and up on both sides at `limit`, then
    (up + 1) · gate · sigmoid(alpha · gate)."""
    import torch

    gate_up = x @ experts.gate_up_proj[e] + experts.gate_up_proj_bias[e]
    gate = gate_up[..., 0::2].clamp(max=experts.limit)
    up = gate_up[..., 1::2].clamp(min=-experts.limit, max=experts.limit)
    a = (up + 1) * gate * torch.sigmoid(gate * experts.alpha)
    return a, a @ experts.down_proj[e] + experts.down_proj_bias[e]


def _gpt_oss_expert_params(d: Dims) -> int:
    """One expert: gate‖up [H, 2F] and its bias [2F], down [F, H] and its bias [H]."""
    f, h = d.moe_ffn_hidden_size, d.hidden_size
    return 3 * f * h + 2 * f + h


def _gpt_oss_moe_shapes(d: Dims) -> Shapes:
    e, h, f = d.num_moe_experts, d.hidden_size, d.moe_ffn_hidden_size
    return {"router.weight": (e, h), "router.bias": (e,), "experts.gate_up_proj": (e, h, 2 * f),
            "experts.gate_up_proj_bias": (e, 2 * f), "experts.down_proj": (e, f, h),
            "experts.down_proj_bias": (e, h)}


# gpt-oss's MLP: a biased router (`router`, softmax over the top-k logits only) and experts stored
# transposed, [E, in, out], with biases; `gate_up_proj`'s columns interleave gate and up (neuron i is
# columns 2i and 2i + 1: axis "moe_ffn/2", each kept neuron as 2 consecutive columns).
GPT_OSS_MOE = UnitLayout(
    MOE,
    {"router.weight": ("moe_experts", "hidden"), "router.bias": ("moe_experts",),
     "experts.gate_up_proj": ("moe_experts", "hidden", "moe_ffn/2"),
     "experts.gate_up_proj_bias": ("moe_experts", "moe_ffn/2"),
     "experts.down_proj": ("moe_experts", "moe_ffn", "hidden"),
     "experts.down_proj_bias": ("moe_experts", "hidden")},
    hook="experts", hook_on="moe_experts",
    count=lambda d: d.num_moe_experts * (d.hidden_size + 1 + _gpt_oss_expert_params(d)),
    inactive=lambda d: (d.num_moe_experts - d.moe_top_k) * _gpt_oss_expert_params(d),
    expert_forward=_clamped_swiglu_expert, shapes=_gpt_oss_moe_shapes,
)


# Granite-4.0-H's block_sparse_moe: a softmax-over-top-k router (`router`). Its shared MLP is the
# layer's `mlp` unit.
GRANITE_MOE = routed_gated_moe("router")


# LFM2's short-convolution mixer: in_proj rows [B | C | x] and the depthwise conv's channels are all
# `hidden_size` wide (the config has no other width), so they are cut by the hidden axis with
# out_proj's rows and columns. It has no axis of its own, so nothing scores it (`hook=None`); depth
# pruning still removes whole layers.
def _short_conv_count(d: Dims) -> int:
    h, bias = d.hidden_size, d.extra("conv_bias", 0)
    return 4 * h * h + h * d.extra("conv_L_cache") + (5 * h if bias else 0)


def _short_conv_shapes(d: Dims) -> Shapes:
    h, bias = d.hidden_size, d.extra("conv_bias", 0)
    return present(in_proj__weight=(3 * h, h), in_proj__bias=(3 * h,) if bias else None,
                   conv__weight=(h, 1, d.extra("conv_L_cache")), conv__bias=(h,) if bias else None,
                   out_proj__weight=(h, h), out_proj__bias=(h,) if bias else None)


SHORT_CONV = UnitLayout(
    CONV,
    {"in_proj.weight": ("hidden3", "hidden"), "in_proj.bias": ("hidden3",),
     "conv.weight": ("hidden", None, None), "conv.bias": ("hidden",),
     "out_proj.weight": ("hidden", "hidden"), "out_proj.bias": ("hidden",)},
    hook=None, hook_on="none", count=_short_conv_count, shapes=_short_conv_shapes,
    # the last conv_L_cache inputs of every hidden channel
    cache=lambda d: UnitCache(conv=d.hidden_size * d.extra("conv_L_cache")),
)

# LFM2-MoE's sparse block: a sigmoid router (`gate`) with an fp32 `expert_bias` that only steers the
# choice, and gated experts (gate‖up fused rows, as Qwen2-MoE); no shared expert.
LFM2_MOE = UnitLayout(
    MOE,
    {"gate.weight": ("moe_experts", "hidden"), "expert_bias": ("moe_experts",),
     "experts.gate_up_proj": ("moe_experts", "moe_ffn_gate_up", "hidden"),
     "experts.down_proj": ("moe_experts", "hidden", "moe_ffn")},
    hook="experts", hook_on="moe_experts",
    count=lambda d: d.num_moe_experts * d.hidden_size + d.num_moe_experts * _expert_params(d, 3),
    inactive=_inactive_experts(3), expert_forward=_gated_expert,
    shapes=routed_experts_shapes("gate", router_bias="expert_bias"),
)


def _qwen_moe_count(d: Dims) -> int:
    e, h, fs = d.num_moe_experts, d.hidden_size, d.moe_shared_expert_intermediate_size
    return e * h + e * _expert_params(d, 3) + 3 * fs * h + h  # router, experts, shared expert, its gate


def _qwen_moe_shapes(d: Dims) -> Shapes:
    h, fs = d.hidden_size, d.moe_shared_expert_intermediate_size
    return {**routed_experts_shapes("gate")(d), "shared_expert.gate_proj.weight": (fs, h),
            "shared_expert.up_proj.weight": (fs, h), "shared_expert.down_proj.weight": (h, fs),
            "shared_expert_gate.weight": (1, h)}


# Qwen3-Next / Qwen3.5-MoE sparse block: a softmax top-k router (`gate`), gated experts with fused
# gate‖up rows, a gated shared expert and its sigmoid gate `shared_expert_gate` [1, H] (one scalar per
# token, not per neuron: only its hidden columns are cut).
QWEN_MOE = UnitLayout(
    MOE,
    {"gate.weight": ("moe_experts", "hidden"),
     "experts.gate_up_proj": ("moe_experts", "moe_ffn_gate_up", "hidden"),
     "experts.down_proj": ("moe_experts", "hidden", "moe_ffn"),
     "shared_expert.gate_proj.weight": ("moe_shared_ffn", "hidden"),
     "shared_expert.up_proj.weight": ("moe_shared_ffn", "hidden"),
     "shared_expert.down_proj.weight": ("hidden", "moe_shared_ffn"),
     "shared_expert_gate.weight": (None, "hidden")},
    hook="experts", hook_on="moe_experts", count=_qwen_moe_count, inactive=_inactive_experts(3),
    more_hooks=(("shared_expert.down_proj", "input", "moe_shared_ffn"),), expert_forward=_gated_expert,
    shapes=_qwen_moe_shapes,
)


def outer_rules(embeddings: str, final_norm: str) -> dict[str, tuple]:
    """Rules of the tensors outside the layers: the input embedding and the LM head are cut by hidden
    columns, the final norm by hidden channels (one tied slice when the head shares the embedding)."""
    return {
        f"{embeddings}.weight": (None, "hidden"),
        f"{final_norm}.weight": ("hidden",),
        "lm_head.weight": (None, "hidden"),
    }
