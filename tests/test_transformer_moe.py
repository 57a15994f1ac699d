"""Transformer MoE families (`qwen3_moe`, `qwen2_moe`, `mixtral`) beyond the shared battery: removing an
expert is masking its router logit, depth pruning rewrites which layers are MoE, and the Hub layouts (per-expert
keys; Mixtral's `block_sparse_moe` with w1/w2/w3) prune in both paths to checkpoints plain transformers reloads."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import build, sliced
from families import tiny_config
from hub_layouts import (
    MIXTRAL_HUB, QWEN2_MOE_HUB, QWEN3_MOE_HUB, check_round_trip, hub_checkpoint, prune_both_ways, read_all,
)
from moe_helpers import check_expert_scores, routed_inputs, silu_gated
from hybridprune.architectures import get_adapter
from hybridprune.pruning.selection import Selection

FAMILIES = ("qwen3_moe", "qwen2_moe", "mixtral")


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _masked_router(gate, removed: list[int], renormalise: bool):
    """The router's forward with the logits of `removed` experts at -inf: softmax over every expert, top-k,
    the top-k weights renormalised or not (the routing of transformers' Qwen and Mixtral routers, written out)."""
    def forward(hidden_states):
        x = hidden_states.reshape(-1, gate.weight.shape[1])
        logits = F.linear(x, gate.weight)
        masked = logits.float().clone()
        masked[:, removed] = float("-inf")
        top, index = torch.topk(torch.softmax(masked, dim=-1), gate.top_k, dim=-1)
        if renormalise:
            top = top / top.sum(dim=-1, keepdim=True)
        return logits, top.to(logits.dtype), index

    return forward


def _without_experts(model, removed: list[int]):
    """`model` with experts `removed` cut from every MoE layer (router rows with them)."""
    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    for i in dims.layers_of("moe"):
        sel.moe_experts[i] = torch.tensor([e for e in range(dims.num_moe_experts) if e not in removed])
    return sliced(model, sel, num_moe_experts=dims.num_moe_experts - len(removed))


def _loud(family: str, **overrides):
    model = build(tiny_config(family, **overrides))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("experts.down_proj"):
                p.mul_(100.0)  # random experts barely move the logits; make them matter
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_removing_experts_equals_masking_their_router_logits(family, tokens):
    """Every token's output, picked experts or not: the pruned model equals the source whose routers see
    the removed experts' logits as -inf, whether or not the top-k weights are renormalised."""
    model = _loud(family)
    removed = [1, 6]
    pruned = _without_experts(model, removed)
    renormalise = family == "mixtral" or bool(model.config.norm_topk_prob)
    for layer in model.model.layers:
        if hasattr(layer.mlp, "gate") and hasattr(layer.mlp.gate, "top_k"):
            layer.mlp.gate.forward = _masked_router(layer.mlp.gate, removed, renormalise)
    torch.testing.assert_close(_logits(pruned, tokens), _logits(model, tokens), atol=1e-4, rtol=1e-4)


def test_without_renormalised_weights_removing_an_unpicked_expert_changes_the_output(tokens):
    """Why the battery's "never selected" check does not hold for Qwen2-MoE's default norm_topk_prob=False:
    the kept experts' weights are their share of a softmax over all experts, so removing an expert no token
    picks still raises them. With renormalisation the same removal changes nothing."""
    probe = tokens[:1, :2]
    for norm, changes in ((False, True), (True, False)):
        model = _loud("qwen2_moe", norm_topk_prob=norm)
        picked = set()
        hooks = [layer.mlp.experts.register_forward_hook(lambda m, args, out: picked.update(args[1].flatten().tolist()))
                 for layer in model.model.layers if hasattr(layer.mlp, "experts")]
        before = _logits(model, probe)
        for h in hooks:
            h.remove()
        unpicked = [e for e in range(8) if e not in picked]
        assert unpicked, "the probe picks every expert: use a shorter probe"
        diff = (_logits(_without_experts(model, unpicked[:1]), probe) - before).abs().max()
        assert (diff > 1e-4) == changes, (norm, float(diff))


def test_depth_pruning_rewrites_which_layers_are_moe_and_the_attention_types():
    """Dropping layer 1 of [sliding+MoE, full+MoE, sliding+MLP, full+MoE]: the dense layer is now layer 1,
    written as `mlp_only_layers=[1]` with `decoder_sparse_step=1`, and `layer_types` follows."""
    config = tiny_config("qwen2_moe")
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    kept = [0, 2, 3]
    new = adapter.make_config(config, dims.replace(block_kinds=tuple(dims.block_kinds[i] for i in kept)))
    assert new.mlp_only_layers == [1] and new.decoder_sparse_step == 1 and new.num_hidden_layers == 3
    assert new.layer_types == ["sliding_attention", "sliding_attention", "full_attention"]
    assert adapter.dims(new).block_kinds == tuple(dims.block_kinds[i] for i in kept)


def test_a_sparse_step_picks_the_moe_layers_as_transformers_does():
    """decoder_sparse_step=2 (MoE in every second layer): the adapter's layer kinds are the modules
    transformers builds, and the written config keeps them after depth pruning."""
    config = tiny_config("qwen3_moe", decoder_sparse_step=2, mlp_only_layers=[])
    model = build(config)
    adapter = get_adapter(model)
    dims = adapter.dims(config)
    built = tuple("attention+moe" if hasattr(layer.mlp, "experts") else "attention+mlp" for layer in model.model.layers)
    assert dims.block_kinds == built == ("attention+mlp", "attention+moe") * 2
    assert adapter.num_parameters(dims) == sum(p.numel() for p in model.parameters())
    new = adapter.make_config(config, dims.replace(block_kinds=dims.block_kinds[1:]))
    assert new.mlp_only_layers == [1] and adapter.dims(new).block_kinds == dims.block_kinds[1:]


@pytest.mark.parametrize("family", FAMILIES)
def test_expert_scores_match_a_direct_computation(family):
    """Output norm, router-weighted norm and frequency of each expert, the expert-neuron statistic and (Qwen2-MoE)
    the shared expert's, recomputed from the routing and the weights of SiLU-gated experts; each expert
    importance then prunes, and the active parameters drop by the removed experts' router rows only."""
    from hybridprune import calibrate, prune

    model = build(tiny_config(family))
    ids = torch.randint(3, 96, (3, 10), generator=torch.Generator().manual_seed(2))
    routed = routed_inputs(model, ids, shared="shared_expert" if family == "qwen2_moe" else None)
    scores = calibrate(model, ids, progress=False)
    close = dict(rtol=1e-4, atol=1e-6)
    for i, (x, index, weights), shared_in in routed:
        experts = silu_gated(model.model.layers[i].mlp.experts)
        check_expert_scores(scores, i, x, index, weights, experts, num_experts=8, width=16, samples=3, close=close)
        if shared_in is not None:
            shared = shared_in.reshape(3, 10, -1).abs().mean(dim=1).pow(2).sum(0).sqrt()
            torch.testing.assert_close(scores.moe_shared_ffn[i], shared, **close)
    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    for importance in ("output_norm", "router_weighted", "frequency"):
        pruned = prune(model, scores, "num_moe_experts=6", expert_importance=importance)
        new = adapter.dims(pruned.config)
        assert new.num_moe_experts == 6
        assert adapter.num_active_parameters(new) == adapter.num_active_parameters(dims) - 2 * len(routed) * 48


# ---- the Hub layouts, both prune paths -----------------------------------------------------------
def _config(out):
    return json.loads((out / "config.json").read_text())


def test_qwen3_moe_hub_layout_with_per_expert_keys_round_trips(tmp_path, tokens):
    """Qwen3-30B-A3B's layout: query heads of 16 channels over a hidden size of 48 (head_dim kept and
    written), per-expert keys cut and renumbered, the router rows cut with their experts."""
    src = tmp_path / "source"
    hub_checkpoint(src, QWEN3_MOE_HUB)
    plan = "hidden_size=32,num_moe_experts=6,moe_ffn_hidden_size=8,num_attention_heads=4,drop_layers=2"
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, plan)
    assert ours == []
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    assert sorted(k for k in tensors if ".experts." in k) == sorted(
        f"model.layers.{i}.mlp.experts.{j}.{w}.weight" for i in range(3) for j in range(6)
        for w in ("gate_proj", "up_proj", "down_proj"))
    assert tensors["model.layers.2.mlp.experts.5.gate_proj.weight"].shape == (8, 32)
    assert tensors["model.layers.2.mlp.experts.5.down_proj.weight"].shape == (32, 8)
    assert tensors["model.layers.2.mlp.gate.weight"].shape == (6, 32)
    assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (64, 32)  # 4 heads x 16
    assert tensors["model.layers.0.self_attn.q_norm.weight"].shape == (16,)
    for out in (memory, stream):
        config = _config(out)
        assert sorted(config) == sorted(QWEN3_MOE_HUB)  # the source's fields, no more
        assert (config["hidden_size"], config["num_experts"], config["moe_intermediate_size"], config["head_dim"],
                config["num_attention_heads"], config["num_hidden_layers"]) == (32, 6, 8, 16, 4, 3)
        assert config["mlp_only_layers"] == [] and config["decoder_sparse_step"] == 1


def test_kept_qwen3_moe_experts_keep_their_weights_under_new_numbers(tmp_path, tokens):
    from hybridprune.importance.calibrate import calibrate
    from hybridprune.pruning.streaming import stream_prune

    model = hub_checkpoint(tmp_path / "source", QWEN3_MOE_HUB)
    scores = calibrate(model, tokens, batch_size=2, progress=False)
    out = stream_prune(tmp_path / "source", scores, "num_moe_experts=4", tmp_path / "out")
    source, got = read_all(tmp_path / "source"), read_all(out)
    kept = json.loads((out / "hybridprune.json").read_text())["kept_experts"]
    for layer in range(4):
        prefix = f"model.layers.{layer}.mlp."
        assert kept[str(layer)] == sorted(kept[str(layer)]) and len(kept[str(layer)]) == 4
        for p, j in enumerate(kept[str(layer)]):
            for w in ("gate_proj", "up_proj", "down_proj"):
                assert torch.equal(got[f"{prefix}experts.{p}.{w}.weight"], source[f"{prefix}experts.{j}.{w}.weight"])
        assert torch.equal(got[f"{prefix}gate.weight"], source[f"{prefix}gate.weight"][kept[str(layer)]])


def test_qwen2_moe_hub_layout_with_a_shared_expert_round_trips(tmp_path, tokens):
    """Qwen1.5-MoE's layout: the shared expert's neurons and its gate's hidden columns cut, q/k/v biases
    with their heads; 4 heads of 8 no longer fill hidden_size 40, so head_dim is written."""
    src = tmp_path / "source"
    hub_checkpoint(src, QWEN2_MOE_HUB)
    plan = ("hidden_size=40,num_moe_experts=6,moe_ffn_hidden_size=8,moe_shared_expert_intermediate_size=16,"
            "num_attention_heads=4,drop_layers=1")
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, plan)
    assert ours == []
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    assert tensors["model.layers.0.mlp.shared_expert.gate_proj.weight"].shape == (16, 40)
    assert tensors["model.layers.0.mlp.shared_expert.down_proj.weight"].shape == (40, 16)
    assert tensors["model.layers.0.mlp.shared_expert_gate.weight"].shape == (1, 40)
    assert tensors["model.layers.0.mlp.experts.5.up_proj.weight"].shape == (8, 40)
    assert tensors["model.layers.0.self_attn.q_proj.bias"].shape == (32,)
    assert "model.layers.0.self_attn.o_proj.bias" not in tensors
    for out in (memory, stream):
        config = _config(out)
        assert config["head_dim"] == 8 and config["num_attention_heads"] == 4 and config["hidden_size"] == 40
        assert (config["num_experts"], config["moe_intermediate_size"], config["shared_expert_intermediate_size"],
                config["num_hidden_layers"]) == (6, 8, 16, 3)


def test_mixtral_hub_layout_with_block_sparse_moe_w1_w2_w3_round_trips(tmp_path, tokens):
    """Mixtral's layout: `block_sparse_moe.gate` and per-expert w1 (gate) / w3 (up) / w2 (down), loaded by
    transformers as `mlp.experts.gate_up_proj` / `down_proj`, written back under the Hub's names."""
    src = tmp_path / "source"
    model = hub_checkpoint(src, MIXTRAL_HUB)
    assert "model.layers.0.block_sparse_moe.experts.7.w3.weight" in read_all(src)
    plan = "hidden_size=32,num_moe_experts=6,moe_ffn_hidden_size=8,num_attention_heads=4,drop_layers=1"
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, plan)
    assert ours == []
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    assert not any(".mlp." in k for k in tensors)
    assert sorted(k for k in tensors if ".experts." in k) == sorted(
        f"model.layers.{i}.block_sparse_moe.experts.{j}.{w}.weight" for i in range(2) for j in range(6)
        for w in ("w1", "w2", "w3"))
    assert tensors["model.layers.1.block_sparse_moe.experts.5.w1.weight"].shape == (8, 32)
    assert tensors["model.layers.1.block_sparse_moe.experts.5.w2.weight"].shape == (32, 8)
    assert tensors["model.layers.1.block_sparse_moe.gate.weight"].shape == (6, 32)
    for out in (memory, stream):
        config = _config(out)
        assert sorted(config) == sorted(MIXTRAL_HUB)  # 4 heads x 8 fill hidden_size 32: no head_dim needed
        assert (config["hidden_size"], config["num_local_experts"], config["intermediate_size"],
                config["num_attention_heads"], config["num_hidden_layers"]) == (32, 6, 8, 4, 2)
    assert model.config.model_type == "mixtral"


# ---- serving-engine rules ------------------------------------------------------------------------------
_VLLM_QWEN2_MOE_HEADS = "vllm/model_executor/models/qwen2_moe.py:225"
_VLLM_EXPERTS = "vllm/model_executor/models/qwen3_moe.py:154 and qwen2_moe.py:136"


@pytest.mark.parametrize("family, changes, engine, tp, source", [
    ("qwen2_moe", {}, "vllm", 1, None),  # 6 heads x 8 == hidden 48
    ("qwen2_moe", {"num_attention_heads": 4}, "vllm", 1, _VLLM_QWEN2_MOE_HEADS),  # vLLM ignores head_dim
    ("qwen2_moe", {"hidden_size": 40}, "vllm", 1, _VLLM_QWEN2_MOE_HEADS),
    ("qwen3_moe", {"num_attention_heads": 4}, "vllm", 1, None),  # Qwen3-MoE reads head_dim
    ("mixtral", {"num_attention_heads": 4, "hidden_size": 40}, "vllm", 1, None),  # so does Mixtral
    ("qwen3_moe", {"num_moe_experts": 4}, "vllm", 8, _VLLM_EXPERTS),
    ("qwen2_moe", {"num_moe_experts": 4}, "vllm", 8, _VLLM_EXPERTS),
    ("qwen2_moe", {"moe_shared_expert_intermediate_size": 20}, "vllm", 8, "qwen2_moe.py:157-160 (Qwen2MoeMLP"),
    ("mixtral", {"moe_ffn_hidden_size": 12}, "vllm", 8, "vllm/model_executor/layers/fused_moe/config.py:1341"),
    ("qwen3_moe", {"ffn_hidden_size": 60}, "vllm", 8, "vllm/model_executor/layers/linear.py:499"),
    ("mixtral", {}, "vllm", 4, "vllm/model_executor/layers/linear.py:1052 (QKVParallelLinear)"),  # 6 heads
    ("qwen3_moe", {}, "vllm", 2, None),
    # llama.cpp builds Qwen2-MoE's query hidden_size wide: 4 heads x 8 = 32 != 48; Qwen3-MoE reads the key length
    ("qwen2_moe", {"num_attention_heads": 4}, "llama.cpp", 1, "src/models/qwen2moe.cpp:30-31"),
    ("qwen2_moe", {"num_attention_heads": 4, "hidden_size": 32}, "llama.cpp", 1, None),
    ("qwen3_moe", {"num_attention_heads": 4}, "llama.cpp", 1, None),
])
def test_engine_rules_of_transformer_moe_families(family, changes, engine, tp, source):
    from serving_helpers import dims_of, sources

    adapter, _, dims = dims_of(family, **changes)
    found = sources(adapter.model_type, dims, (engine,), tp)
    assert found == [] if source is None else any(source in f for f in found), found
