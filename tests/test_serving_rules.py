"""Serving-engine rules (architectures/engine_rules.py): each rule against hand-computed cases, the
nearest valid values, and `prune`/`search --serve-with` through the command line (issue #22)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import build, tiny_config
from serving_helpers import dims_of, sources
from hybridprune.architectures import get_adapter
from hybridprune.architectures.engine_rules import RULES
from hybridprune.architectures.serving import (
    ENGINES, NotServable, check_servable, check_tensor_parallel, config_violations, has_model, parse_engines,
    serving_record, violations,
)
from hybridprune.cli import app
from hybridprune.data import tokenizer_path
from hybridprune.pruning.export import copy_tokenizer_files

runner = CliRunner()


# ---- each rule, accepted and refused, on hand-computed sizes ---------------------------------------------
# (family, changes, engine, tensor parallel, the source of the broken rule or None when it holds)
CASES = [
    # Granite: head size is hidden / heads in both engines (6 x 8 == 48 holds; 4 x 8 = 32 != 48 breaks)
    ("granitemoehybrid", {}, "vllm", 1, None),
    ("granitemoehybrid", {"num_attention_heads": 4}, "vllm", 1, "vllm/model_executor/models/granitemoehybrid.py:241"),
    ("granitemoehybrid", {"num_attention_heads": 4}, "llama.cpp", 1, "conversion/granite.py:33 and src/llama-model.cpp:1439"),
    ("bamba", {"hidden_size": 32, "mamba_num_heads": 8}, "llama.cpp", 1, "conversion/granite.py:33 and src/llama-model.cpp:1439"),
    ("qwen2", {"num_attention_heads": 4}, "vllm", 1, "vllm/model_executor/models/qwen2.py:150"),
    # llama.cpp too (seen by the serving matrix: `attn_q.weight has wrong shape`)
    ("qwen2", {"num_attention_heads": 4}, "llama.cpp", 1, "conversion/qwen.py:66 (seen: `attn_q.weight has wrong shape`, docs/serving.md)"),
    ("qwen3", {"num_attention_heads": 4}, "llama.cpp", 1, None),  # Qwen3 reads head_dim
    ("llama", {"num_attention_heads": 4}, "vllm", 1, None),  # vLLM's Llama reads head_dim
    # Granite/Bamba in llama.cpp: 12 x 8 == 2 x 48 holds; 6 x 8 = 48 != 96 breaks
    ("granitemoehybrid", {"mamba_num_heads": 6}, "llama.cpp", 1, "src/models/granite-hybrid.cpp:54"),
    ("bamba", {"mamba_num_heads": 6}, "llama.cpp", 1, "src/models/granite-hybrid.cpp:54"),
    ("granitemoehybrid", {"mamba_num_heads": 6}, "vllm", 1, None),  # vLLM reads mamba_expand x hidden
    # Nemotron-H in llama.cpp: 16 x 8 = 128 is a multiple of 64; 12 x 8 = 96 is not
    ("nemotron_h", {"mamba_num_heads": 16}, "llama.cpp", 1, None),
    ("nemotron_h", {}, "llama.cpp", 1, "conversion/granite.py:525-526 (inner size: conversion/nemotron.py:237)"),
    ("nemotron_h", {}, "vllm", 1, None),
    # families an engine has no model for
    ("bamba", {}, "vllm", 1, "vllm/model_executor/models/registry.py (no BambaForCausalLM entry)"),
    ("zamba2", {}, "llama.cpp", 1, "conversion/__init__.py (no Zamba2ForCausalLM entry)"),
    ("zamba2", {}, "vllm", 1, None),
    ("mamba2", {}, "llama.cpp", 1, None),
    ("falcon_h1", {"num_attention_heads": 4, "hidden_size": 40}, "vllm", 1, None),  # head_dim and mamba_d_ssm read
    # vLLM tensor parallelism: Mamba heads (12 % 4 == 0; 12 % 8 != 0) and groups (3 % 3; 1 replicated; 3 % 2)
    ("mamba2", {}, "vllm", 3, None),
    ("mamba2", {"mamba_n_groups": 1}, "vllm", 4, None),
    ("mamba2", {"mamba_n_groups": 4}, "vllm", 8, "vllm/model_executor/layers/mamba/mamba_mixer2.py:315"),
    ("mamba2", {}, "vllm", 2, "vllm/model_executor/layers/mamba/mamba_mixer2.py:319"),
    # attention heads (8 % 2 == 0; 8 % 3 != 0) and KV heads (2 replicated over 4 ranks; 2 and 3 do not divide)
    ("llama", {"num_attention_heads": 8}, "vllm", 2, None),
    ("llama", {"num_attention_heads": 8, "num_key_value_heads": 2}, "vllm", 4, None),
    ("llama", {"num_attention_heads": 6}, "vllm", 3, "vllm/model_executor/layers/linear.py:1055-1057"),
    ("llama", {"num_attention_heads": 9, "num_key_value_heads": 3}, "vllm", 2,
     "vllm/model_executor/layers/linear.py:1052 (QKVParallelLinear)"),
    # FFN width (64 % 2 == 0; 66 % 4 != 0) and expert widths (16 % 2; 16 % 3)
    ("llama", {"ffn_hidden_size": 66, "num_attention_heads": 4}, "vllm", 2, None),
    ("llama", {"ffn_hidden_size": 66, "num_attention_heads": 4}, "vllm", 4,
     "vllm/model_executor/layers/linear.py:499 (MergedColumnParallelLinear)"),
    ("granitemoehybrid_moe", {"mamba_n_groups": 1}, "vllm", 2, None),
    ("granitemoehybrid_moe", {"moe_ffn_hidden_size": 12}, "vllm", 8, "vllm/model_executor/layers/fused_moe/config.py:1341"),
    ("nemotron_h_moe", {"moe_shared_expert_intermediate_size": 20, "mamba_n_groups": 4, "num_attention_heads": 8},
     "vllm", 8, "vllm/model_executor/layers/linear.py:499 (the shared expert's ColumnParallelLinear)"),
    # Gated DeltaNet (2 key heads of 8, 6 value heads of 8): llama.cpp needs dk == dv; vLLM splits both head
    # counts over the ranks (2 % 2; 2 % 3 breaks); OLMo Hybrid has no llama.cpp model
    ("qwen3_5_text", {}, "llama.cpp", 1, None),
    ("qwen3_5_text", {"linear_value_head_dim": 4}, "llama.cpp", 1,
     "src/models/qwen35.cpp:55-56, qwen35moe.cpp:61-62, qwen3next.cpp:56-57 (converter: conversion/qwen.py:378)"),
    ("qwen3_5", {"linear_key_head_dim": 4}, "llama.cpp", 1,
     "src/models/qwen35.cpp:55-56, qwen35moe.cpp:61-62, qwen3next.cpp:56-57 (converter: conversion/qwen.py:378)"),
    ("qwen3_5_text", {}, "vllm", 2, None),
    ("qwen3_5_text", {"num_attention_heads": 6}, "vllm", 3,
     "vllm/model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py:736 and olmo_gdn_linear_attn.py:189"),
    ("qwen3_next", {}, "vllm", 4,
     "vllm/model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py:557 and olmo_gdn_linear_attn.py:141"),
    ("olmo_hybrid", {}, "llama.cpp", 1, "conversion/olmo.py (registers Olmo, Olmo2, Olmo3 and Olmoe only)"),
    ("olmo_hybrid", {}, "vllm", 2, None),
    # Qwen MoE in vLLM: no more ranks than experts (8 experts; 2 over 4 ranks breaks), shared expert width
    ("qwen3_next", {}, "vllm", 2, None),
    ("qwen3_next", {"num_moe_experts": 2}, "vllm", 4, "vllm/model_executor/models/qwen3_next.py:176"),
    ("qwen3_5_moe_text", {"moe_shared_expert_intermediate_size": 21}, "vllm", 2,
     "vllm/model_executor/models/qwen3_next.py:117"),
    # Kimi Linear in vLLM: KDA heads (6 % 2; 6 % 4 breaks) and MLA heads (4 % 2; 3 % 2 breaks)
    ("kimi_linear", {}, "vllm", 2, None),
    ("kimi_linear", {}, "vllm", 4, "vllm/model_executor/layers/mamba/gdn/kimi_gdn_linear_attn.py:189"),
    ("kimi_linear", {"num_attention_heads": 3}, "vllm", 2,
     "vllm/model_executor/layers/linear.py:1052 (the MLA q/kv_b ColumnParallelLinear)"),
    # Kimi in llama.cpp: one head count for KDA and MLA (6 KDA heads, 4 MLA heads breaks; 4 and 4 holds)
    ("kimi_linear", {"mamba_num_heads": 4}, "llama.cpp", 1, None),
    ("kimi_linear", {}, "llama.cpp", 1, "src/models/kimi-linear.cpp:59-69"),
    # Qwen3-Next in llama.cpp: every layer MoE (the tiny one has a dense layer 2: mlp_only_layers)
    ("qwen3_next", {}, "llama.cpp", 1, "conversion/qwen.py:370 (Qwen3NextModel, a Qwen2MoeModel)"),
    # LFM2 in llama.cpp: query and output projections hidden_size wide (6 x 8 == 48; 4 x 8 breaks)
    ("lfm2", {}, "llama.cpp", 1, None),
    ("lfm2_moe", {"num_attention_heads": 4}, "llama.cpp", 1, "src/models/lfm2.cpp:74-76 and lfm2moe.cpp:63-65"),
]


@pytest.mark.parametrize("family, changes, engine, tp, source", CASES)
def test_each_rule_on_hand_computed_sizes(family, changes, engine, tp, source):
    adapter, _, dims = dims_of(family, **changes)
    found = sources(adapter.model_type, dims, (engine,), tp)
    if source is None:
        assert found == []
    else:
        assert source in found


def test_every_rule_names_its_engine_version_source_and_families():
    for rule in RULES:
        assert rule.version.startswith(("vLLM 0.32.0", "llama.cpp (llama-cpp-python 0.3.36)"))
        assert rule.source and rule.says and rule.model_types
        assert rule.test in ("equal", "multiple", "multiple_or_one", "kv_heads", "at_least", "absent", "no_model",
                             "pattern")
    assert not has_model("bamba", "vllm") and not has_model("zamba2", "llama.cpp") and has_model("nemotron_h", "vllm")
    assert not has_model("olmo_hybrid", "llama.cpp") and has_model("olmo_hybrid", "vllm")


def test_nearest_values_satisfy_every_named_engine():
    adapter, original, _ = dims_of("granitemoehybrid")
    with pytest.raises(NotServable) as err:  # vLLM alone: 6 heads, or hidden 32 (4 x 8) with expand 3
        check_servable(adapter, original.replace(num_attention_heads=4), ("vllm",), 1, original)
    message = str(err.value)
    assert message.startswith("vLLM 0.32.0 cannot serve this plan")
    assert "granitemoehybrid.py:241" in message
    assert "num_attention_heads in [6]" in message and "hidden_size in [32]" in message
    with pytest.raises(NotServable, match=r"mamba_num_heads in \[12\]"):  # 12 x 8 = 2 x 48
        check_servable(adapter, original.replace(mamba_num_heads=6), ENGINES, 1, original)

    config = tiny_config("nemotron_h", mamba_num_heads=16, n_groups=4)
    adapter, original = get_adapter(config), get_adapter(config).dims(config)
    with pytest.raises(NotServable, match=r"mamba_num_heads in \[16, 8\]"):  # 16 x 8 = 128, 8 x 8 = 64
        check_servable(adapter, original.replace(mamba_num_heads=12), ("llama.cpp",), 1, original)
    with pytest.raises(NotServable, match="No plan changes mamba_n_groups=4: choose another tensor-parallel size"):
        check_servable(adapter, original, ("vllm",), 8, original)
    with pytest.raises(NotServable, match="cannot serve bamba models: vLLM has no Bamba model"):
        check_servable(*dims_of("bamba")[:2], ("vllm",))


def test_every_broken_rule_is_named_at_once():
    """Found by a user: --tensor-parallel 3 on the shipped teacher named one rule and '2 more', so a plan
    was fixed and rerun one rule at a time."""
    config = tiny_config("nemotron_h", mamba_num_heads=16, n_groups=4, num_attention_heads=8, num_key_value_heads=2)
    adapter, original = get_adapter(config), get_adapter(config).dims(config)
    with pytest.raises(NotServable) as err:
        check_servable(adapter, original.replace(mamba_num_heads=12), ("vllm",), 3, original)
    message = str(err.value)
    assert message.startswith("this plan breaks 4 serving rules: (1) vLLM 0.32.0: ")
    assert "mamba_n_groups = 4 is not divisible by tensor_parallel = 3" in message
    assert "(2) vLLM 0.32.0: " in message and "num_attention_heads = 8 is not divisible by tensor_parallel = 3" in message
    assert "num_attention_heads in [6]" in message and "ffn_hidden_size in [63, 60, 57]" in message  # this axis alone
    assert "(3) vLLM 0.32.0: " in message and "num_key_value_heads = 2 and tensor_parallel = 3" in message
    assert "(4) vLLM 0.32.0: " in message and "ffn_hidden_size = 64" in message
    assert message.count("choose another tensor-parallel size") == 2


def test_engine_names_and_tensor_parallel_are_checked():
    assert parse_engines("vllm, llama.cpp,vllm") == ("vllm", "llama.cpp")
    assert parse_engines(["llama-cpp"]) == ("llama.cpp",) and parse_engines(None) == ()
    with pytest.raises(ValueError, match="unknown serving engine 'sglang'; known: vllm, llama.cpp"):
        parse_engines("sglang")
    with pytest.raises(ValueError, match="tensor parallelism is a vLLM setting"):
        check_tensor_parallel(2, ("llama.cpp",))
    with pytest.raises(ValueError, match="integer >= 1"):
        check_tensor_parallel(0, ("vllm",))


def test_the_record_and_a_config_say_which_engines_serve_a_model():
    _, _, dims = dims_of("granitemoehybrid", num_attention_heads=4)
    record = serving_record("granitemoehybrid", dims)
    assert record["tensor_parallel"] == 1
    assert record["vllm"]["servable"] is False and "granitemoehybrid.py:241" in record["vllm"]["reasons"][0]
    assert record["llama.cpp"]["servable"] is False and record["llama.cpp"]["version"].startswith("llama.cpp")
    assert config_violations(tiny_config("granitemoehybrid"), "vllm") == []
    assert [v.rule.test for v in config_violations(tiny_config("bamba"), "vllm")] == ["no_model"]


# ---- the command line ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def granite(tmp_path_factory):
    """A tiny dense Granite-4.0-H (intermediate_size 256, stale like a Hub one; shared FFN 64) with the
    shipped tokenizer (its tokenizer_config names TokenizersBackend) and scores."""
    import torch

    from hybridprune.importance.calibrate import calibrate

    root = tmp_path_factory.mktemp("serving")
    model = build(tiny_config("granitemoehybrid", vocab_size=4096, intermediate_size=256))
    model.save_pretrained(root / "model")
    copy_tokenizer_files(tokenizer_path(), root / "model")
    tokens = torch.randint(3, 4096, (4, 16), generator=torch.Generator().manual_seed(0))
    calibrate(model, tokens, batch_size=2, progress=False, depth_samples=0).save(root / "scores")
    return root


def prune_cli(root, out, plan, *extra):
    return runner.invoke(app, ["prune", "--model", str(root / "model"), "--scores", str(root / "scores"),
                               "--plan", plan, "--out", str(out), *extra])


@pytest.mark.parametrize("plan, engines, expected", [
    ("num_attention_heads=4", "vllm", ["vLLM 0.32.0 cannot serve this plan", "granitemoehybrid.py:241",
                                       "num_attention_heads in [6]"]),
    ("mamba_num_heads=6", "vllm,llama.cpp", ["llama.cpp (llama-cpp-python 0.3.36) cannot serve this plan",
                                             "src/models/granite-hybrid.cpp:54", "mamba_num_heads in [12]"]),
])
def test_prune_refuses_a_plan_an_engine_cannot_serve(granite, tmp_path, plan, engines, expected):
    out = tmp_path / "pruned"
    result = prune_cli(granite, out, plan, "--serve-with", engines)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert text.startswith("error:") and all(e in text for e in expected), text
    assert "Traceback" not in result.output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_prune_refuses_tensor_parallel_without_vllm_and_sizes_it_cannot_split(granite, tmp_path):
    result = prune_cli(granite, tmp_path / "a", "ffn_hidden_size=32", "--tensor-parallel", "2")
    assert result.exit_code == 2 and "tensor parallelism is a vLLM setting" in " ".join(result.output.split())
    result = prune_cli(granite, tmp_path / "b", "ffn_hidden_size=32", "--serve-with", "vllm", "--tensor-parallel", "4")
    assert result.exit_code == 2 and "not divisible by tensor_parallel = 4" in " ".join(result.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_prune_warns_per_engine_without_serve_with_and_records_it(granite, tmp_path):
    out = tmp_path / "pruned"
    result = prune_cli(granite, out, "num_attention_heads=4")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert text.count("warning:") == 2
    assert "vLLM 0.32.0 is not expected to serve the output" in text
    assert "llama.cpp (llama-cpp-python 0.3.36) is not expected to serve the output" in text
    serving = json.loads((out / "hybridprune.json").read_text())["serving"]
    assert serving["vllm"]["servable"] is False and serving["llama.cpp"]["servable"] is False
    assert "granitemoehybrid.py:241" in serving["vllm"]["reasons"][0]


@pytest.mark.parametrize("mode", [[], ["--in-memory"]])
def test_dense_granite_writes_the_kept_ffn_width_as_intermediate_size(granite, tmp_path, mode):
    """Issue #22's bug: llama.cpp sizes a dense Granite FFN from intermediate_size, which stayed at the
    old width. Both prune paths, checked against both engines, servable, with a portable tokenizer."""
    from transformers import AutoTokenizer

    out = tmp_path / "pruned"
    result = prune_cli(granite, out, "ffn_hidden_size=32", "--serve-with", "vllm,llama.cpp", *mode)
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["intermediate_size"] == config["shared_intermediate_size"] == 32
    assert config["num_experts_per_tok"] == 0  # transformers' default 2 aborts llama.cpp on a dense model
    assert config["layer_types"] == ["mamba", "attention", "mamba", "mamba"]  # the names llama.cpp reads
    serving = json.loads((out / "hybridprune.json").read_text())["serving"]
    assert serving["vllm"]["servable"] and serving["llama.cpp"]["servable"]
    assert json.loads((granite / "model" / "tokenizer_config.json").read_text())["tokenizer_class"] == "TokenizersBackend"
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert AutoTokenizer.from_pretrained(out)("to be").input_ids == AutoTokenizer.from_pretrained(
        granite / "model")("to be").input_ids


def test_search_with_serve_with_keeps_only_servable_candidates(granite, tmp_path):
    out = tmp_path / "search"
    args = ["search", "--model", str(granite / "model"), "--out", str(out), "--params", "0.97x",
            "--params-kind", "non-embedding", "--data", "shakespeare", "--eval-samples", "2", "--eval-seq-len", "16",
            "--batch-size", "2", "--scores", str(granite / "scores"), "--divisors", "hidden=8,ffn=16,head_dim=2",
            "--skip", "depth", "--top-k", "1", "--no-speed", "--band", "1", "--serve-with", "vllm,llama.cpp"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "dropped: vllm or llama.cpp cannot serve them" in text and "--serve-with vllm,llama.cpp" in text
    records = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    records = [r for r in records if r["stage"] == "zero_shot"]
    adapter, dims, _ = dims_of("granitemoehybrid", vocab_size=4096)
    assert records
    for r in records:
        values = {k: v for k, v in r["values"].items() if k != "num_layers"}
        assert violations("granitemoehybrid", dims.replace(**values)) == [], r["key"]
    report = json.loads((out / "search.json").read_text())
    assert report["config"]["serve_with"] == ["vllm", "llama.cpp"]


# ---- outputs engines read -------------------------------------------------------------------------------------
@pytest.mark.parametrize("family, pattern", [("nemotron_h", "M-*M-"), ("nemotron_h_moe", "ME*M-")])
def test_a_transformers_5_nemotron_config_is_written_with_the_hub_pattern(tmp_path, tokens, family, pattern):
    """A source saved by transformers 5 (layer-type list, MoE fields even on a dense model) is written
    as the Hub writes it: llama.cpp's converter reads the pattern string and takes a config holding
    num_experts_per_tok for a MoE model. Both prune paths; the file loads as the pruned config."""
    from transformers import AutoConfig

    from hybridprune.importance.calibrate import calibrate
    from hybridprune.pruning.apply import prune
    from hybridprune.pruning.export import export
    from hybridprune.pruning.streaming import stream_prune

    model = build(tiny_config(family))
    model.save_pretrained(tmp_path / "source")
    source = json.loads((tmp_path / "source" / "config.json").read_text())
    assert "layers_block_type" in source and "num_experts_per_tok" in source  # transformers 5's style
    scores = calibrate(model, tokens, batch_size=2, progress=False, depth_samples=2)
    plan = {"drop_layers": [3], "hidden_size": 32}
    pruned = prune(model, scores, plan)
    outputs = [export(pruned, tmp_path / "memory", source=str(tmp_path / "source")),
               stream_prune(tmp_path / "source", scores, plan, tmp_path / "stream")]
    for out in outputs:
        raw = json.loads((out / "config.json").read_text())
        assert raw["hybrid_override_pattern"] == pattern and raw["num_hidden_layers"] == 5
        assert "layers_block_type" not in raw
        assert ("num_experts_per_tok" in raw) == (family == "nemotron_h_moe")
        loaded = AutoConfig.from_pretrained(out).to_dict()
        assert {k: v for k, v in loaded.items() if k != "_name_or_path"} == {
            k: v for k, v in pruned.config.to_dict().items() if k != "_name_or_path"}


def test_a_transformers_5_lfm2_config_is_written_with_conv_dim_and_block_dim(tmp_path, tokens):
    """vLLM sizes LFM2's blocks and short convolution from the Hub's `block_dim` and `conv_dim`
    (vllm/model_executor/models/lfm2.py:214, 256) and fails without them (`'Lfm2Config' object has no
    attribute 'conv_dim'`, docs/serving.md); transformers 5 does not write them. Both prune paths write
    them, equal to the kept hidden_size, and the file loads as the pruned config (plus those inert
    attributes)."""
    from transformers import AutoConfig

    from hybridprune.importance.calibrate import calibrate
    from hybridprune.pruning.apply import prune
    from hybridprune.pruning.export import export
    from hybridprune.pruning.streaming import stream_prune

    model = build(tiny_config("lfm2"))
    model.save_pretrained(tmp_path / "source")
    assert not {"conv_dim", "block_dim"} & set(json.loads((tmp_path / "source" / "config.json").read_text()))
    scores = calibrate(model, tokens, batch_size=2, progress=False, depth_samples=0)
    plan = {"hidden_size": 32}
    pruned = prune(model, scores, plan)
    outputs = [export(pruned, tmp_path / "memory", source=str(tmp_path / "source")),
               stream_prune(tmp_path / "source", scores, plan, tmp_path / "stream")]
    for out in outputs:
        raw = json.loads((out / "config.json").read_text())
        assert raw["conv_dim"] == raw["block_dim"] == 32
        loaded = AutoConfig.from_pretrained(out).to_dict()
        assert {k: v for k, v in loaded.items() if k not in ("_name_or_path", "conv_dim", "block_dim")} == {
            k: v for k, v in pruned.config.to_dict().items() if k != "_name_or_path"}


def test_the_python_api_takes_serve_with_and_tensor_parallel(tokens):
    import hybridprune as hp
    from hybridprune.archsearch import SearchConfig
    from hybridprune.archsearch.searcher import SearchError
    from hybridprune.importance.calibrate import calibrate

    model = build(tiny_config("granitemoehybrid"))
    scores = calibrate(model, tokens, batch_size=2, progress=False, depth_samples=0)
    with pytest.raises(NotServable, match="granitemoehybrid.py:241"):
        hp.prune(model, scores, "num_attention_heads=4", serve_with=["vllm"])
    with pytest.raises(NotServable, match="mamba_n_groups = 3 is not divisible by tensor_parallel = 2"):
        hp.prune(model, scores, "ffn_hidden_size=32", serve_with="vllm", tensor_parallel=2)
    pruned = hp.prune(model, scores, "ffn_hidden_size=32", serve_with="vllm,llama.cpp")
    serving = pruned.hybridprune_info["serving"]
    assert serving["tensor_parallel"] == 1 and serving["vllm"]["servable"] and serving["llama.cpp"]["servable"]
    assert pruned.config.intermediate_size == 32
    SearchConfig(serve_with="vllm", tensor_parallel=2).validate()
    with pytest.raises(SearchError, match="tensor parallelism is a vLLM setting"):
        SearchConfig(tensor_parallel=2).validate()
    with pytest.raises(SearchError, match="unknown serving engine"):
        SearchConfig(serve_with="tgi").validate()


# ---- sliding-window layers the engines fix by index ("pattern" rules) --------------------------------------
def _with_kinds(family: str, variants: list[str]):
    """The family's tiny dims with these attention variants, layer by layer (as depth pruning writes them)."""
    adapter, _, dims = dims_of(family)
    base = dims.block_kinds[0].split("@", 1)[0]
    return adapter, dims.replace(block_kinds=tuple(f"{base}@{v}" for v in variants))


S, F = "sliding_attention", "full_attention"


@pytest.mark.parametrize("variants, broken", [
    ([S, F, S, F], False),        # the source's alternation
    ([S, F], False),              # layers 2 and 3 dropped: a whole period
    ([S, S, F], True),            # layer 1 dropped: layer 1 is now sliding where the engines expect full
    ([F, S, F], True),            # layer 0 dropped: every layer moves one step
])
def test_gpt_oss_sliding_layers_are_fixed_by_index_in_both_engines(variants, broken):
    """vLLM 0.32.0 and llama.cpp give gpt-oss a window on every even layer whatever `layer_types` says, so a
    depth plan that shifts the alternation is refused for both (read in both engines' pinned source)."""
    adapter, dims = _with_kinds("gpt_oss", variants)
    found = sources("gpt_oss", dims, ENGINES, 1)
    assert ("vllm/model_executor/models/gpt_oss.py:176 (sliding_window if self.layer_idx % 2 == 0)" in found) is broken
    assert any(s.startswith("src/models/openai-moe.cpp:9") for s in found) is broken
    if broken:
        with pytest.raises(NotServable, match="dropping whole runs of 2 layers"):
            check_servable(adapter, dims, ("vllm",), 1)


def test_gemma3_sliding_pattern_is_fixed_at_six_in_llama_cpp_only():
    """llama.cpp reads Gemma 3's pattern as every sixth layer full (its converter writes no per-layer
    list); vLLM reads `layer_types`. The Hub's 5:1 pattern passes, a dropped layer that shifts it does not,
    six dropped in a row pass again; a model with no sliding layer passes."""
    hub = [F if i % 6 == 5 else S for i in range(12)]
    for variants, broken in ((hub, False), (hub[1:], True), (hub[6:], False), (hub[:3] + hub[9:], False),
                             ([F] * 4, False)):
        _, dims = _with_kinds("gemma3_text", variants)
        found = [v.rule.source for v in violations("gemma3_text", dims, ("llama.cpp",))]
        assert any(s.startswith("src/models/gemma3.cpp:7") for s in found) is broken, variants
        assert violations("gemma3_text", dims, ("vllm",)) == []


R, N = "full_attention,1", "full_attention,0"


@pytest.mark.parametrize("variants, broken", [
    ([R, R, R, N], False),              # the source's every-fourth NoPE layer
    ([R, R, R, N, R, R, R, N], False),  # two periods
    ([R, R, R], False),                 # the last layer dropped: no layer 3 left
    ([R, R, N], True),                  # layer 1 dropped: the NoPE layer moves to 2, llama.cpp ropes it
    ([R, R, R, R], True),               # llama.cpp leaves layer 3 without RoPE
])
def test_smollm3_nope_layers_are_fixed_every_fourth_in_llama_cpp_only(variants, broken):
    """llama.cpp skips RoPE on layer i exactly when (i + 1) % 4 == 0 (smollm3.cpp:5, :69), whatever
    `no_rope_layers` says; vLLM's Transformers backend reads the list."""
    adapter, dims = _with_kinds("smollm3", variants)
    found = sources("smollm3", dims, ("llama.cpp",), 1)
    assert any(s.startswith("src/models/smollm3.cpp:5") for s in found) is broken
    assert sources("smollm3", dims, ("vllm",), 1) == []
    if broken:
        with pytest.raises(NotServable, match="dropping whole runs of 4 layers"):
            check_servable(adapter, dims, ("llama.cpp",), 1)
