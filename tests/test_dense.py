"""Dense transformer families (dense.py) beyond the shared battery: their Hub layouts prune in both paths
to checkpoints plain transformers reloads, in the source's config style, and what each family keeps."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import build
from families import tiny_config
from hub_layouts import GEMMA3_TEXT_HUB, OLMO2_HUB, OLMO3_HUB, SMOLLM3_HUB, check_round_trip, hub_checkpoint, prune_both_ways
from hybridprune.architectures import get_adapter


def _config(out):
    return json.loads((out / "config.json").read_text())


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


# ---- Gemma 3 ---------------------------------------------------------------------------------------------
def test_gemma3_text_hub_layout_round_trips(tmp_path, tokens):
    """Gemma-3-1B's layout: the 5:1 sliding pattern comes from `sliding_window_pattern`; dropping a layer writes
    the sliced `layer_types`, head_dim 16 is kept over a hidden size of 32, the tied embedding is stored once."""
    src = tmp_path / "source"
    hub_checkpoint(src, GEMMA3_TEXT_HUB)
    plan = "hidden_size=32,ffn_hidden_size=40,num_attention_heads=2,drop_layers=1"
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, plan)
    assert ours == []
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    assert "lm_head.weight" not in tensors and tensors["model.embed_tokens.weight"].shape == (96, 32)
    assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (32, 32)  # 2 heads x 16
    assert tensors["model.layers.0.self_attn.k_proj.weight"].shape == (16, 32)
    assert tensors["model.layers.0.self_attn.q_norm.weight"].shape == (16,)
    assert tensors["model.layers.5.pre_feedforward_layernorm.weight"].shape == (32,)
    assert tensors["model.layers.5.mlp.gate_proj.weight"].shape == (40, 32)
    for out in (memory, stream):
        config = _config(out)
        assert (config["hidden_size"], config["intermediate_size"], config["num_attention_heads"],
                config["head_dim"], config["num_hidden_layers"]) == (32, 40, 2, 16, 6)
        assert config["layer_types"] == ["sliding_attention"] * 4 + ["full_attention", "sliding_attention"]
        assert config["rope_local_base_freq"] == 10000 and config["query_pre_attn_scalar"] == 16
    assert pruned.config.layer_types == _config(memory)["layer_types"]


def test_gemma3_embeddings_are_scaled_by_the_root_of_the_pruned_hidden_size(tokens):
    """transformers derives the embedding scale from hidden_size: the pruned model's is sqrt(36), applied to
    the kept columns of the source's embedding."""
    from hybridprune import calibrate, prune

    model = build(tiny_config("gemma3_text"))
    pruned = prune(model, calibrate(model, tokens, progress=False), "hidden_size=36")
    kept = [int(i) for i in torch.nonzero(torch.isin(model.model.embed_tokens.weight[5],
                                                     pruned.model.embed_tokens.weight[5])).flatten()]
    assert len(kept) == 36
    with torch.no_grad():
        got = pruned.model.embed_tokens(tokens[:1])
        want = model.model.embed_tokens.weight[tokens[:1]][..., kept] * 36 ** 0.5
    torch.testing.assert_close(got, want)
    assert get_adapter(pruned).dims(pruned.config).tied_embeddings


# ---- OLMo 2 / OLMo 3 ------------------------------------------------------------------------------------
def test_olmo2_hub_layout_round_trips(tmp_path, tokens):
    """OLMo-2-7B's layout (as many KV heads as heads: every head kept): hidden, FFN and depth; q_norm / k_norm
    over all heads' channels are cut by nothing but stay whole."""
    src = tmp_path / "source"
    hub_checkpoint(src, OLMO2_HUB)
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, "hidden_size=36,ffn_hidden_size=40,drop_layers=1")
    assert ours == []
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    assert tensors["model.layers.1.self_attn.q_proj.weight"].shape == (48, 36)
    assert tensors["model.layers.1.self_attn.q_norm.weight"].shape == (48,)
    assert tensors["model.layers.1.post_feedforward_layernorm.weight"].shape == (36,)
    for out in (memory, stream):
        config = _config(out)
        assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]) == (36, 40, 2)
        assert config["head_dim"] == 8  # 6 heads of 8 no longer fill hidden_size 36
        assert set(config) - set(OLMO2_HUB) == {"head_dim"}


def test_olmo3_hub_layout_round_trips(tmp_path, tokens):
    """OLMo-3's layout: query heads inside their KV group with their q_norm channels, `layer_types` sliced."""
    src = tmp_path / "source"
    hub_checkpoint(src, OLMO3_HUB)
    plan = "hidden_size=32,num_attention_heads=4,drop_layers=0"
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, plan)
    assert ours == []
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (32, 32)
    assert tensors["model.layers.0.self_attn.q_norm.weight"].shape == (32,)
    assert tensors["model.layers.0.self_attn.k_norm.weight"].shape == (16,)
    for out in (memory, stream):
        config = _config(out)
        assert config["layer_types"] == ["sliding_attention", "sliding_attention", "full_attention"]
        assert (config["hidden_size"], config["num_attention_heads"], config["num_hidden_layers"]) == (32, 4, 3)
        assert sorted(config) == sorted(OLMO3_HUB)  # 4 heads x 8 fill hidden_size 32: no head_dim needed


# ---- SmolLM3 --------------------------------------------------------------------------------------------
def test_smollm3_depth_pruning_keeps_each_layers_position_encoding(tmp_path, tokens):
    """SmolLM3-3B's layout: dropping layers 1 and 3 (a RoPE and a NoPE layer) leaves `no_rope_layers` [1, 1, 1, 1,
    1, 0] in both paths, and every kept layer's attention applies RoPE exactly where its source layer did."""
    src = tmp_path / "source"
    source = hub_checkpoint(src, SMOLLM3_HUB)
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, "hidden_size=40,num_attention_heads=4,"
                                                                           "drop_layers=1+3")
    assert ours == []
    check_round_trip(pruned, (memory, stream), tokens)
    kept = [0, 2, 4, 5, 6, 7]
    assert [layer.self_attn.use_rope for layer in pruned.model.layers] == [
        source.model.layers[i].self_attn.use_rope for i in kept]
    for out in (memory, stream):
        config = _config(out)
        assert config["no_rope_layers"] == [SMOLLM3_HUB["no_rope_layers"][i] for i in kept]
        assert (config["hidden_size"], config["num_attention_heads"], config["head_dim"]) == (40, 4, 8)


# ---- serving-engine rules ------------------------------------------------------------------------------
@pytest.mark.parametrize("family, changes, tp, source", [
    ("gemma3_text", {"num_attention_heads": 4}, 1, None),  # vLLM reads head_dim
    ("gemma3_text", {}, 4, "vllm/model_executor/layers/linear.py:1052 (QKVParallelLinear)"),  # 6 heads
    ("gemma3_text", {"ffn_hidden_size": 60}, 8, "vllm/model_executor/layers/linear.py:499"),
    ("gemma3_text", {}, 2, None),
    ("olmo2", {"num_attention_heads": 4}, 1, "vllm/model_executor/models/olmo2.py (Olmo2Attention"),
    ("olmo3", {"hidden_size": 40}, 1, "vllm/model_executor/models/olmo2.py (Olmo2Attention"),
    ("olmo3", {"num_attention_heads": 4, "hidden_size": 32}, 2, None),
])
def test_engine_rules_of_dense_families(family, changes, tp, source):
    from serving_helpers import dims_of, sources

    adapter, _, dims = dims_of(family, **changes)
    found = sources(adapter.model_type, dims, ("vllm",), tp)
    assert found == [] if source is None else any(source in f for f in found), found


def test_the_gemma3_wrapper_is_refused_with_the_reason():
    from transformers import AutoConfig

    from hybridprune.architectures import UnsupportedArchitecture, supported_model_types

    config = AutoConfig.for_model("gemma3")
    with pytest.raises(UnsupportedArchitecture, match="mm_input_projection_weight.*Prune a text-only gemma3_text"):
        get_adapter(config)
    assert "gemma3" not in supported_model_types() and "gemma3_text" in supported_model_types()
