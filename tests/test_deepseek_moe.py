"""DeepSeek-V3-style MoE transformers (`glm4_moe`, `deepseek_v3`, `glm4_moe_lite`) beyond the shared battery:
removing experts is masking their scores for the choice in the sigmoid grouped router, an expert moved to another
routing group changes the output, MLA heads' negative control, the expert scores against a direct computation,
depth pruning rewriting the dense prefix, and the Hub layouts (per-expert keys, a multi-token-prediction layer
left out) in both prune paths."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig

from conftest import build, sliced
from families import tiny_config
from hub_layouts import (
    DEEPSEEK_V3_HUB, GLM4_MOE_HUB, GLM4_MOE_LITE_HUB, check_round_trip, hub_checkpoint, mtp_layer, prune_both_ways,
    read_all,
)
from moe_helpers import check_expert_scores, routed_inputs, silu_gated
from hybridprune.architectures import get_adapter
from hybridprune.checkpoint.files import CheckpointFiles
from hybridprune.checkpoint.fingerprint import checkpoint_fingerprint, model_fingerprint
from hybridprune.checkpoint.load import load_model
from hybridprune.pruning.selection import Selection

FAMILIES = ("glm4_moe", "deepseek_v3", "glm4_moe_lite")


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _loud(family: str, **overrides):
    """The tiny model with experts that matter (random experts barely move the logits) and a random correction
    bias (zero at initialisation), so that routing depends on it."""
    model = build(tiny_config(family, **overrides))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("experts.down_proj"):
                p.mul_(100.0)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(torch.rand(b.shape, generator=g) * 0.2)
    return model


def _masked_router(gate, removed: list[int]):
    """DeepSeek-V3's router written out, with the removed experts' scores for the choice at -inf: sigmoid
    scores, plus the correction bias for the choice only; each routing group scored by its best two; the
    best `topk_group` groups; top-k inside them; the picked experts' sigmoid scores, renormalised where
    `norm_topk_prob`, times `routed_scaling_factor`."""
    def forward(hidden_states):
        x = hidden_states.reshape(-1, gate.weight.shape[1]).float()
        logits = F.linear(x, gate.weight.float())
        scores = logits.sigmoid()
        choice = scores + gate.e_score_correction_bias
        choice[:, removed] = float("-inf")
        groups = choice.view(len(x), gate.num_group, -1)
        best = groups.topk(2, dim=-1)[0].sum(-1).topk(gate.topk_group, dim=-1)[1]
        allowed = torch.zeros_like(groups[..., 0]).scatter_(1, best, 1).bool()
        choice = groups.masked_fill(~allowed[..., None], float("-inf")).reshape(len(x), -1)
        index = choice.topk(gate.top_k, dim=-1)[1]
        weights = scores.gather(1, index)
        if gate.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return logits, weights * gate.routed_scaling_factor, index

    return forward


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("norm", [True, False])
def test_removing_experts_equals_masking_their_choice_scores(family, norm, tokens):
    """Every token's output: the pruned model (experts 1 and 6 gone with their router rows and correction bias,
    one from each routing group) equals the source whose routers see those experts' scores for the choice as
    -inf, with the top-k weights renormalised or not (sigmoid scores are per expert: nothing else moves)."""
    model = _loud(family, norm_topk_prob=norm)
    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    removed = [1, 6]
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    for i in dims.layers_of("moe"):
        sel.moe_experts[i] = torch.tensor([e for e in range(dims.num_moe_experts) if e not in removed])
    pruned = sliced(model, sel, num_moe_experts=dims.num_moe_experts - len(removed))
    reference = _logits(model, tokens)
    for i in dims.layers_of("moe"):
        model.model.layers[i].mlp.gate.forward = _masked_router(model.model.layers[i].mlp.gate, removed)
    masked = _logits(model, tokens)
    assert (masked - reference).abs().max() > 1e-3, "the removed experts are never picked: the check proves nothing"
    torch.testing.assert_close(_logits(pruned, tokens), masked, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["glm4_moe", "deepseek_v3"])
def test_an_expert_moved_to_another_routing_group_changes_the_output(family, tokens):
    """The negative control of the battery's within-group permutation: experts 0 and 4 (of groups 0 and 1)
    trade places with their router rows and biases, so each now competes in the other group."""
    model = _loud(family)
    dims = get_adapter(model).dims(model.config)
    swap = torch.arange(dims.num_moe_experts)
    swap[0], swap[4] = 4, 0
    sel = Selection(kept_blocks=list(range(dims.num_layers)), moe_experts={i: swap for i in dims.layers_of("moe")})
    assert (_logits(sliced(model, sel), tokens) - _logits(model, tokens)).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["deepseek_v3", "glm4_moe_lite"])
def test_mla_heads_permuted_everywhere_but_the_output_projection_change_the_logits(family, tokens):
    """MLA heads are independent (one group each): the battery's permutation keeps the logits, and leaving
    o_proj unpermuted does not."""
    model = build(tiny_config(family))
    dims = get_adapter(model).dims(model.config)
    swap = torch.arange(dims.num_attention_heads)
    swap[0], swap[1] = 1, 0
    layers = dims.layers_of("attention")
    permuted = sliced(model, Selection(kept_blocks=list(range(dims.num_layers)),
                                        attention_heads={i: swap for i in layers}))
    torch.testing.assert_close(_logits(permuted, tokens), _logits(model, tokens), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        for i in layers:
            permuted.model.layers[i].self_attn.o_proj.weight.copy_(model.model.layers[i].self_attn.o_proj.weight)
    assert (_logits(permuted, tokens) - _logits(model, tokens)).abs().max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_depth_pruning_rewrites_the_dense_layers(family):
    """Dropping layer 0 (dense): the first MoE layer is now layer 0 (`first_k_dense_replace=0`, GLM-4.7-Flash's
    `mlp_layer_types` sliced); the written config builds the same layer kinds."""
    config = tiny_config(family)
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    new = adapter.make_config(config, dims.replace(block_kinds=dims.block_kinds[1:]))
    assert adapter.dims(new).block_kinds == dims.block_kinds[1:] and new.num_hidden_layers == 3
    if family == "glm4_moe_lite":
        assert new.mlp_layer_types == ["sparse", "dense", "sparse"]
    else:
        assert new.first_k_dense_replace == 0
        kept = adapter.make_config(config, dims.replace(block_kinds=dims.block_kinds[:3]))
        assert kept.first_k_dense_replace == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_expert_scores_match_a_direct_computation(family):
    """Output norm, router-weighted norm and frequency of each expert, the expert-neuron statistic and the
    shared expert's, recomputed from the routing and the weights of SiLU-gated experts; each expert
    importance then prunes, and the active parameters drop by the removed experts' router rows only."""
    from hybridprune import calibrate, prune

    model = _loud(family)
    ids = torch.randint(3, 96, (3, 10), generator=torch.Generator().manual_seed(2))
    routed = routed_inputs(model, ids, shared="shared_experts")
    scores = calibrate(model, ids, progress=False)
    close = dict(rtol=1e-4, atol=1e-5)
    for i, (x, index, weights), shared_in in routed:
        experts = silu_gated(model.model.layers[i].mlp.experts)
        check_expert_scores(scores, i, x, index, weights, experts, num_experts=8, width=16, samples=3, close=close)
        shared = shared_in.reshape(3, 10, -1).abs().mean(dim=1).pow(2).sum(0).sqrt()
        torch.testing.assert_close(scores.moe_shared_ffn[i], shared, **close)
    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    for importance in ("output_norm", "router_weighted", "frequency"):
        pruned = prune(model, scores, "num_moe_experts=6", expert_importance=importance)
        new = adapter.dims(pruned.config)
        assert new.num_moe_experts == 6
        assert adapter.num_active_parameters(new) == adapter.num_active_parameters(dims) - 2 * len(routed) * 48


# ---- the Hub layouts, both prune paths, the MTP layer left out -------------------------------------------------
def _left_out(layer: int) -> str:
    return (f"the multi-token-prediction layers (num_nextn_predict_layers=1, model.layers.{layer}.* tensors), which "
            "transformers does not load, so they are neither scored nor pruned; the output has "
            "num_nextn_predict_layers=0")


def _hub_round_trip(tmp_path, tokens, raw, plan):
    src = tmp_path / "source"
    hub_checkpoint(src, raw, extra=mtp_layer(4, 48))
    loaded = load_model(src)  # the load path (calibrate, eval) leaves the MTP layer out as transformers does
    assert checkpoint_fingerprint(CheckpointFiles(src), loaded.config) == model_fingerprint(loaded)
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, plan)
    assert ours == [f"left out of the pruned checkpoint: {_left_out(4)}"] * 2  # one from each prune path
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    n = pruned.config.num_hidden_layers
    assert not [k for k in tensors if k.startswith(f"model.layers.{n}.") or "eh_proj" in k or "shared_head" in k]
    configs = []
    for out in (memory, stream):
        config = json.loads((out / "config.json").read_text())
        assert config["num_nextn_predict_layers"] == 0
        assert json.loads((out / "hybridprune.json").read_text())["left_out"] == [_left_out(4)]
        configs.append(config)
    assert configs[0] == configs[1]
    return tensors, configs[0], read_all(src)


def test_glm4_moe_hub_layout_round_trips_without_its_mtp_layer(tmp_path, tokens):
    """GLM-4.5-Air's layout: 6 heads of 16 over a hidden size of 48 (head_dim kept and written), q/k/v biases cut
    with their heads, per-expert keys cut and renumbered, the router rows and correction bias cut with them, the
    shared expert's neurons, the dense first layer's FFN; layer 2 dropped."""
    plan = ("hidden_size=32,num_attention_heads=4,ffn_hidden_size=32,num_moe_experts=6,moe_ffn_hidden_size=8,"
            "moe_shared_expert_intermediate_size=8,drop_layers=2")
    tensors, config, source = _hub_round_trip(tmp_path, tokens, GLM4_MOE_HUB, plan)
    assert sorted(k for k in tensors if ".experts." in k) == sorted(
        f"model.layers.{i}.mlp.experts.{j}.{w}.weight" for i in (1, 2) for j in range(6)
        for w in ("gate_proj", "up_proj", "down_proj"))
    assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (64, 32)  # 4 heads x 16
    assert tensors["model.layers.0.self_attn.q_proj.bias"].shape == (64,)
    assert tensors["model.layers.0.self_attn.k_proj.bias"].shape == (32,)
    assert "model.layers.0.self_attn.o_proj.bias" not in tensors and "model.layers.0.self_attn.q_norm.weight" not in tensors
    assert tensors["model.layers.0.mlp.gate_proj.weight"].shape == (32, 32)
    assert tensors["model.layers.2.mlp.gate.weight"].shape == (6, 32)
    assert tensors["model.layers.2.mlp.gate.e_score_correction_bias"].shape == (6,)
    assert tensors["model.layers.2.mlp.shared_experts.down_proj.weight"].shape == (32, 8)
    assert tensors["model.layers.2.mlp.experts.5.down_proj.weight"].shape == (32, 8)
    assert sorted(config) == sorted(GLM4_MOE_HUB)  # the source's fields, no more
    assert (config["hidden_size"], config["num_attention_heads"], config["head_dim"], config["n_routed_experts"],
            config["moe_intermediate_size"], config["n_shared_experts"], config["num_hidden_layers"],
            config["first_k_dense_replace"]) == (32, 4, 16, 6, 8, 1, 3, 1)


def test_deepseek_v3_hub_layout_round_trips_without_its_mtp_layer(tmp_path, tokens):
    """DeepSeek-V3's layout: MLA heads cut in q_b_proj, kv_b_proj and o_proj (the q LoRA and the kv latent
    kept), experts cut inside their 2 routing groups with their correction bias; the dense layer dropped, so
    `first_k_dense_replace` becomes 0; the kept experts keep their weights under new numbers."""
    plan = ("hidden_size=32,num_attention_heads=2,num_moe_experts=6,moe_ffn_hidden_size=8,"
            "moe_shared_expert_intermediate_size=8,drop_layers=0")
    tensors, config, source = _hub_round_trip(tmp_path, tokens, DEEPSEEK_V3_HUB, plan)
    attn = "model.layers.0.self_attn."
    assert tensors[attn + "q_a_proj.weight"].shape == (24, 32) and tensors[attn + "q_b_proj.weight"].shape == (32, 24)
    assert tensors[attn + "kv_a_proj_with_mqa.weight"].shape == (24, 32)  # kv latent 16 + rope 8, kept
    assert tensors[attn + "kv_b_proj.weight"].shape == (2 * 20, 16) and tensors[attn + "o_proj.weight"].shape == (32, 24)
    assert config["first_k_dense_replace"] == 0 and config["num_key_value_heads"] == 2
    assert (config["n_routed_experts"], config["n_group"], config["num_hidden_layers"]) == (6, 2, 3)
    assert sorted(config) == sorted(DEEPSEEK_V3_HUB)
    # the kept experts stay in their routing groups (3 of 4 in each), each with its correction bias
    kept = json.loads((tmp_path / "stream" / "hybridprune.json").read_text())["kept_experts"]
    for new, old in enumerate((1, 2, 3)):
        experts = kept[str(old)]  # by source layer
        assert [j // 4 for j in experts] == [0, 0, 0, 1, 1, 1], experts
        assert torch.equal(tensors[f"model.layers.{new}.mlp.gate.e_score_correction_bias"],
                           source[f"model.layers.{old}.mlp.gate.e_score_correction_bias"][experts])


def test_glm4_moe_lite_hub_layout_round_trips_without_its_mtp_layer(tmp_path, tokens):
    """GLM-4.7-Flash's layout: MLA heads with a q LoRA, one routing group, the dense layers from
    `first_k_dense_replace` alone; both written back consistently after depth pruning."""
    plan = "hidden_size=40,num_attention_heads=3,ffn_hidden_size=32,num_moe_experts=5,moe_ffn_hidden_size=8,drop_layers=1"
    tensors, config, _ = _hub_round_trip(tmp_path, tokens, GLM4_MOE_LITE_HUB, plan)
    assert tensors["model.layers.0.self_attn.q_b_proj.weight"].shape == (3 * 16, 24)
    assert tensors["model.layers.1.mlp.gate.weight"].shape == (5, 40)
    assert config["first_k_dense_replace"] == 1
    # the layer list transformers derives from the depth (one dense layer first) is left to it, as in the source
    assert "mlp_layer_types" not in config
    assert AutoConfig.from_pretrained(tmp_path / "stream").mlp_layer_types == ["dense", "sparse", "sparse"]
    assert (config["n_routed_experts"], config["num_attention_heads"], config["num_key_value_heads"]) == (5, 3, 3)


# ---- serving-engine rules ------------------------------------------------------------------------------
_VLLM_MLA = "vllm/model_executor/models/deepseek_v2.py:484 and 1041"
_VLLM_SHARED = "deepseek_v2.py:362 and glm4_moe.py:173"


@pytest.mark.parametrize("family, changes, tp, source", [
    ("glm4_moe", {}, 2, None),
    ("glm4_moe", {"num_attention_heads": 4}, 4, None),  # GLM-4.5 reads head_dim
    ("glm4_moe", {}, 4, "vllm/model_executor/layers/linear.py:1052 (QKVParallelLinear)"),  # 6 heads
    ("glm4_moe", {"ffn_hidden_size": 60}, 8, "vllm/model_executor/layers/linear.py:499"),
    ("deepseek_v3", {"num_attention_heads": 3}, 2, _VLLM_MLA),
    ("glm4_moe_lite", {}, 4, None),  # 4 MLA heads; no KV-head split
    ("deepseek_v3", {"moe_shared_expert_intermediate_size": 16, "moe_ffn_hidden_size": 8}, 32, _VLLM_SHARED),
    ("glm4_moe", {"moe_ffn_hidden_size": 8}, 16, "vllm/model_executor/layers/fused_moe/config.py:1341"),
])
def test_engine_rules_of_deepseek_moe_families(family, changes, tp, source):
    from serving_helpers import dims_of, sources

    adapter, _, dims = dims_of(family, **changes)
    found = sources(adapter.model_type, dims, ("vllm",), tp)
    assert found == [] if source is None else any(source in f for f in found), found
