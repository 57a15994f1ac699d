"""gpt-oss beyond the shared battery: removing an expert is masking its router logit (the softmax runs over the
top-k logits only), a pruned head takes its sink logit, the expert scores follow the clamped SwiGLU over
interleaved gate/up columns, depth pruning slices `layer_types`; the Hub's bf16 layout prunes both ways, and its
MXFP4 layout prunes in memory (transformers dequantises) to a bf16 checkpoint that says so, the streaming prune
refusing it with that remedy."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import build, sliced
from families import tiny_config
from hub_layouts import (
    GPT_OSS_HUB, GPT_OSS_MXFP4_HUB, check_round_trip, hub_checkpoint, logits, mxfp4_experts, prune_both_ways, read_all,
)
from moe_helpers import check_expert_scores, routed_inputs
from hybridprune.architectures import get_adapter
from hybridprune.pruning.selection import Selection


def _loud(**overrides):
    """A tiny gpt-oss whose experts matter (random experts barely move the logits) and whose router biases and
    sinks are far from zero."""
    model = build(tiny_config("gpt_oss", **overrides))
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("experts.down_proj"):
                p.mul_(100.0)
            if name.endswith(("router.bias", "sinks", "_proj_bias")):
                p.copy_(torch.randn(p.shape, generator=g))
    return model


def _masked_router(router, removed: list[int]):
    """gpt-oss's routing written out, with the logits of `removed` experts at -inf: biased logits, top-k, a
    softmax over the k picked logits alone."""
    def forward(hidden_states):
        logits_ = F.linear(hidden_states, router.weight, router.bias)
        masked = logits_.clone()
        masked[:, removed] = float("-inf")
        top, index = torch.topk(masked, router.top_k, dim=-1)
        return logits_, torch.softmax(top, dim=-1), index

    return forward


def test_removing_experts_equals_masking_their_router_logits(tokens):
    """Every token, picked experts or not: the pruned model (router rows and biases cut with their experts)
    equals the source whose routers see the removed experts' logits as -inf. The top-k weights are a softmax
    over the picked logits only, so no removed expert's share leaks into the kept ones'."""
    model = _loud()
    removed = [1, 6]
    sel = Selection(kept_blocks=list(range(4)))
    for i in range(4):
        sel.moe_experts[i] = torch.tensor([e for e in range(8) if e not in removed])
    pruned = sliced(model, sel, num_moe_experts=6)
    for layer in model.model.layers:
        layer.mlp.router.forward = _masked_router(layer.mlp.router, removed)
    torch.testing.assert_close(logits(pruned, tokens), logits(model, tokens), atol=1e-4, rtol=1e-4)


def test_a_removed_head_takes_its_sink_logit(tokens):
    """Heads 1 and 4 removed (one in each KV group): the pruned model equals the source with those heads' o_proj
    columns zeroed, and its sinks are the kept heads' own; with the sinks of other heads in their place, the
    output differs (the sinks matter)."""
    model = _loud()
    kept = torch.tensor([0, 2, 3, 5])
    sel = Selection(kept_blocks=list(range(4)))
    for i in range(4):
        sel.attention_heads[i] = kept
    pruned = sliced(model, sel, num_attention_heads=4)
    zeroed = build(model.config)
    zeroed.load_state_dict(model.state_dict())
    with torch.no_grad():
        for layer in zeroed.model.layers:
            for head in (1, 4):
                layer.self_attn.o_proj.weight[:, head * 8:(head + 1) * 8] = 0.0
    torch.testing.assert_close(logits(pruned, tokens), logits(zeroed, tokens), atol=1e-5, rtol=1e-5)
    for source, layer in zip(model.model.layers, pruned.model.layers):
        assert torch.equal(layer.self_attn.sinks, source.self_attn.sinks[kept])
    with torch.no_grad():
        for source, layer in zip(model.model.layers, pruned.model.layers):
            layer.self_attn.sinks.copy_(source.self_attn.sinks[:4])
    assert (logits(pruned, tokens) - logits(zeroed, tokens)).abs().max() > 1e-3


def test_removing_expert_neurons_cuts_interleaved_gate_up_columns():
    """Expert neuron j is columns 2j (gate) and 2j + 1 (up) of `gate_up_proj` [E, H, 2F] and of its bias, and row
    j of the transposed `down_proj` [E, F, H]."""
    model = build(tiny_config("gpt_oss"))
    kept = torch.tensor([1, 2, 6, 7, 8, 11, 13, 14])
    sel = Selection(kept_blocks=list(range(4)))
    for i in range(4):
        sel.moe_ffn[i] = kept
    pruned = sliced(model, sel, moe_ffn_hidden_size=8)
    columns = torch.stack([2 * kept, 2 * kept + 1], dim=1).reshape(-1)
    source, got = model.model.layers[2].mlp.experts, pruned.model.layers[2].mlp.experts
    assert columns[:4].tolist() == [2, 3, 4, 5]
    assert torch.equal(got.gate_up_proj, source.gate_up_proj[:, :, columns])
    assert torch.equal(got.gate_up_proj_bias, source.gate_up_proj_bias[:, columns])
    assert torch.equal(got.down_proj, source.down_proj[:, kept, :])
    assert torch.equal(got.down_proj_bias, source.down_proj_bias)


def test_expert_scores_match_a_direct_computation():
    """Output norm, router-weighted norm and frequency of each expert and the expert-neuron statistic, recomputed
    from gpt-oss's routing and its clamped SwiGLU (gate clamped above at 7, up within ±7, (up + 1) · gate ·
    σ(1.702 · gate), biases); each expert importance then prunes."""
    from hybridprune import calibrate, prune

    model = _loud()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.experts.gate_up_proj.mul_(50.0)  # pre-activations of about ±7: the clamps bite
    ids = torch.randint(3, 96, (3, 10), generator=torch.Generator().manual_seed(2))
    routed = routed_inputs(model, ids)
    scores = calibrate(model, ids, progress=False)
    clamped = 0
    for i, (x, index, weights), _ in routed:
        experts = model.model.layers[i].mlp.experts

        def expert(e, h, experts=experts):
            nonlocal clamped
            pre = h @ experts.gate_up_proj[e] + experts.gate_up_proj_bias[e]
            gate, up = pre[0::2], pre[1::2]
            clamped += int((gate > 7).sum() + (up.abs() > 7).sum())
            gate, up = torch.minimum(gate, torch.tensor(7.0)), up.clamp(-7.0, 7.0)
            a = (up + 1) * gate * torch.sigmoid(1.702 * gate)
            return a, a @ experts.down_proj[e] + experts.down_proj_bias[e]

        check_expert_scores(scores, i, x, index, weights, expert, num_experts=8, width=16, samples=3,
                            close=dict(rtol=1e-4, atol=1e-6))
    assert clamped > 0  # the clamps were exercised
    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    per_expert = 3 * 16 * 48 + 2 * 16 + 48
    for importance in ("output_norm", "router_weighted", "frequency"):
        pruned = prune(model, scores, "num_moe_experts=6", expert_importance=importance)
        new = adapter.dims(pruned.config)
        assert new.num_moe_experts == 6 and pruned.config.num_local_experts == 6
        assert adapter.num_parameters(dims) - adapter.num_parameters(new) == 2 * 4 * (48 + 1 + per_expert)
        # a token still uses 2 experts: only the removed experts' router rows and biases leave the active count
        assert adapter.num_active_parameters(dims) - adapter.num_active_parameters(new) == 2 * 4 * (48 + 1)


def test_depth_pruning_slices_layer_types():
    config = tiny_config("gpt_oss")
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    kept = [0, 2, 3]
    new = adapter.make_config(config, dims.replace(block_kinds=tuple(dims.block_kinds[i] for i in kept)))
    assert new.layer_types == ["sliding_attention", "sliding_attention", "full_attention"]
    assert new.num_hidden_layers == 3 and adapter.dims(new).block_kinds == tuple(dims.block_kinds[i] for i in kept)


# ---- the Hub layouts --------------------------------------------------------------------------------------
def test_gpt_oss_bf16_hub_layout_round_trips(tmp_path, tokens):
    """gpt-oss's unquantized layout (keys as the model's): heads with their sinks, experts with router rows and
    biases, interleaved expert neurons, a layer dropped with its `layer_types` entry; head_dim 16 kept."""
    src = tmp_path / "source"
    hub_checkpoint(src, GPT_OSS_HUB)
    plan = "hidden_size=32,num_moe_experts=6,moe_ffn_hidden_size=8,num_attention_heads=4,drop_layers=1"
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, plan)
    assert ours == []
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    assert tensors["model.layers.0.self_attn.sinks"].shape == (4,)
    assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (64, 32)
    assert tensors["model.layers.0.self_attn.o_proj.bias"].shape == (32,)
    assert tensors["model.layers.2.mlp.router.weight"].shape == (6, 32)
    assert tensors["model.layers.2.mlp.router.bias"].shape == (6,)
    assert tensors["model.layers.2.mlp.experts.gate_up_proj"].shape == (6, 32, 16)
    assert tensors["model.layers.2.mlp.experts.gate_up_proj_bias"].shape == (6, 16)
    assert tensors["model.layers.2.mlp.experts.down_proj"].shape == (6, 8, 32)
    for out in (memory, stream):
        config = json.loads((out / "config.json").read_text())
        assert sorted(config) == sorted(GPT_OSS_HUB)  # the source's fields, no more
        assert (config["hidden_size"], config["num_local_experts"], config["intermediate_size"], config["head_dim"],
                config["num_attention_heads"], config["num_hidden_layers"]) == (32, 6, 8, 16, 4, 3)
        assert config["layer_types"] == ["sliding_attention", "sliding_attention", "full_attention"]


E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]  # the OCP MX spec's FP4 (E2M1) magnitudes, codes 0..7


def _mxfp4_reference(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """MXFP4 as the OCP Microscaling spec defines it, written out per element: byte b of a block holds elements
    2b (low nibble) and 2b + 1 (high nibble), each sign (bit 3) and E2M1 magnitude (bits 0-2), times the block's
    scale 2^(byte - 127); [E, out, in / 32, 16] -> [E, out, in], transposed to the model's [E, in, out]."""
    e, rows, groups, _ = blocks.shape
    out = torch.empty(e, rows, groups * 32, dtype=torch.float64)
    for x in range(e):
        for r in range(rows):
            for g in range(groups):
                scale = 2.0 ** (int(scales[x, r, g]) - 127)
                for b in range(16):
                    byte = int(blocks[x, r, g, b])
                    for half, code in enumerate((byte & 0xF, byte >> 4)):
                        sign = -1.0 if code & 0x8 else 1.0
                        out[x, r, g * 32 + 2 * b + half] = sign * E2M1[code & 0x7] * scale
    return out.transpose(1, 2)


def test_gpt_oss_mxfp4_hub_layout_prunes_in_memory_to_bf16_and_says_so(tmp_path, tokens):
    """The Hub's MXFP4 experts: our load path gets transformers' dequantisation, which equals the format's
    definition; the in-memory prune writes bf16 experts, no quantization_config, and hybridprune.json (and a
    warning) states the dequantisation and the sizes; the streaming prune refuses, naming the in-memory prune."""
    from hybridprune.checkpoint.load import load_model
    from hybridprune.importance.calibrate import calibrate
    from hybridprune.pruning.apply import NotStreamable, prune
    from hybridprune.pruning.export import export
    from hybridprune.pruning.streaming import stream_prune

    src = tmp_path / "source"
    hub_checkpoint(src, GPT_OSS_MXFP4_HUB, edit=mxfp4_experts)
    stored = read_all(src)
    assert "model.layers.1.mlp.experts.gate_up_proj_blocks" in stored and not any(
        k.endswith(("experts.gate_up_proj", "experts.down_proj")) for k in stored)
    model = load_model(src)
    for i in (0, 3):
        experts = model.model.layers[i].mlp.experts
        for w in ("gate_up_proj", "down_proj"):
            want = _mxfp4_reference(stored[f"model.layers.{i}.mlp.experts.{w}_blocks"],
                                    stored[f"model.layers.{i}.mlp.experts.{w}_scales"])
            got = getattr(experts, w)
            assert got.dtype == torch.bfloat16 and got.shape == want.shape
            assert torch.equal(got.double(), want)  # every MXFP4 value is exact in bf16
    assert getattr(model.config, "quantization_config", None) is None
    scores = calibrate(model, tokens, batch_size=2, progress=False, depth_samples=2)
    plan = "hidden_size=48,num_moe_experts=6,moe_ffn_hidden_size=16,num_attention_heads=6,drop_layers=3"
    with pytest.raises(NotStreamable, match=r"quant_method 'mxfp4'.*--in-memory"):
        stream_prune(src, scores, plan, tmp_path / "stream")
    assert not (tmp_path / "stream").exists()
    pruned = prune(model, scores, plan)
    with pytest.warns(UserWarning, match="dequantised by transformers on load and are written unquantized in bfloat16"):
        out = export(pruned, tmp_path / "memory", source=str(src))
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["torch_dtype"] == "bfloat16"
    assert sorted(config) == sorted(GPT_OSS_MXFP4_HUB.keys() - {"quantization_config"})
    written = read_all(out)
    assert written["model.layers.0.mlp.experts.gate_up_proj"].shape == (6, 48, 32)
    assert written["model.layers.0.mlp.experts.gate_up_proj"].dtype == torch.bfloat16
    assert not any("_blocks" in k or "_scales" in k for k in written)
    info = json.loads((out / "hybridprune.json").read_text())["dequantized"]
    size = lambda d: sum(p.stat().st_size for p in d.glob("*.safetensors"))  # noqa: E731
    assert info["quant_method"] == "mxfp4" and info["written_as"] == "bfloat16"
    assert (info["source_weight_bytes"], info["output_weight_bytes"]) == (size(src), size(out))
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False).eval()
    torch.testing.assert_close(logits(reloaded, tokens), logits(pruned, tokens), rtol=0, atol=0)


# ---- serving-engine rules ----------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, tp, source", [
    ({"num_attention_heads": 4}, 1, None),  # vLLM reads head_dim (gpt_oss.py OAIAttention)
    ({"hidden_size": 40, "num_attention_heads": 4}, 1, None),
    ({}, 4, "vllm/model_executor/layers/linear.py:1052 (QKVParallelLinear)"),  # 6 heads (and their sinks)
    ({"moe_ffn_hidden_size": 8}, 16, "vllm/model_executor/layers/fused_moe/config.py:1341"),
    ({}, 2, None),
    # 4 heads split 4 ways, but 2 KV heads: Llama-style replication would pass, gpt-oss divides them (2 // 4 = 0)
    ({"num_attention_heads": 4}, 4, "vllm/model_executor/models/gpt_oss.py:157"),
    ({"num_attention_heads": 4, "num_key_value_heads": 4}, 4, None),
])
def test_engine_rules_of_gpt_oss(changes, tp, source):
    from serving_helpers import dims_of, sources

    adapter, _, dims = dims_of("gpt_oss", **changes)
    found = sources(adapter.model_type, dims, ("vllm",), tp)
    assert found == [] if source is None else any(source in f for f in found), found


def test_the_serving_matrix_source_builds():
    """The matrix's gpt-oss source (bf16, 4 experts of 64, heads of 32) builds with the layout's exact count."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "serving"))
    from serving_matrix import FAMILIES

    fam = FAMILIES["gpt_oss"]
    config = tiny_config(fam.model_type, **fam.config)
    model = build(config)
    adapter = get_adapter(model)
    assert adapter.num_parameters(adapter.dims(config)) == sum(p.numel() for p in model.parameters())
    assert config.layer_types == ["sliding_attention", "full_attention", "sliding_attention"]
