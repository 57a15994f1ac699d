"""Gated DeltaNet checkpoints in their Hub layouts prune streaming and in memory to the same model.

Qwen3-Next: per-expert `experts.{j}.gate_proj/up_proj/down_proj` (fused into `gate_up_proj` on load),
a multi-token-prediction layer (left out), eight shards. OLMo Hybrid: `q_conv1d`/`k_conv1d`/`v_conv1d`
at their own sizes (transformers' own save splits `conv1d` into equal thirds instead; both are cut by
their stored sizes) and the Hub's layer-norm names."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM

from hub_layouts import (
    OLMO_HYBRID_HUB, QWEN3_NEXT_HUB, check_round_trip, hub_checkpoint, logits, mtp_tensors, prune_both_ways, read_all,
)


def test_qwen3_next_hub_layout_with_per_expert_keys_and_mtp_round_trips(tmp_path, tokens):
    src = tmp_path / "src"
    hub_checkpoint(src, QWEN3_NEXT_HUB, extra=mtp_tensors(48))
    plan = ("hidden_size=32,ffn_hidden_size=32,num_moe_experts=4,moe_ffn_hidden_size=8,linear_num_value_heads=4,"
            "linear_key_head_dim=4,num_attention_heads=4,drop_layers=2")
    pruned, memory, stream, warned = prune_both_ways(tmp_path, src, tokens, plan)
    written = check_round_trip(pruned, (memory, stream), tokens)
    assert not any(k.startswith("mtp.") for k in written)
    assert any("multi-token-prediction" in w for w in warned)
    assert written["model.layers.0.mlp.experts.3.gate_proj.weight"].shape == (8, 32)
    # the dense layer 2 is dropped: the MoE layer 3 is now layer 2
    assert "model.layers.2.mlp.experts.0.up_proj.weight" in written and "model.layers.2.mlp.up_proj.weight" not in written
    config = json.loads((stream / "config.json").read_text())
    assert config["mtp_num_hidden_layers"] == 0 and config["mlp_only_layers"] == []
    assert config["layer_types"] == ["linear_attention", "linear_attention", "full_attention"]


def test_olmo_hybrid_hub_layout_with_separate_convolutions_round_trips(tmp_path, tokens):
    src = tmp_path / "src"
    hub_checkpoint(src, OLMO_HYBRID_HUB)
    source = read_all(src)
    assert source["model.layers.0.linear_attn.v_conv1d.weight"].shape == (48, 1, 4)
    plan = ("hidden_size=32,num_attention_heads=4,ffn_hidden_size=32,linear_num_value_heads=4,"
            "linear_value_head_dim=4,linear_key_head_dim=4,drop_layers=2")
    pruned, memory, stream, _ = prune_both_ways(tmp_path, src, tokens, plan)
    written = read_all(stream)
    assert written["model.layers.0.linear_attn.q_conv1d.weight"].shape == (8, 1, 4)  # 2 key heads x 4 channels
    assert written["model.layers.0.linear_attn.v_conv1d.weight"].shape == (16, 1, 4)  # 4 value heads x 4
    assert "model.layers.0.attention_layer_norm.weight" in written
    expected = logits(pruned, tokens)
    for out in (memory, stream):
        reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
        torch.testing.assert_close(logits(reloaded, tokens), expected, rtol=0, atol=0)
