"""LFM2 / LFM2-MoE / LFM3 checkpoints in their Hub layouts prune into the same layout and config style,
in both prune paths, and reload with plain transformers to the in-memory pruned model's logits.

What the shared battery (test_families.py) does not see: the Hub configs' aliases of the sizes
(`block_ff_dim`, `conv_dim`, `num_heads`, ...), the auto-adjusted FFN width written exactly, LFM2-MoE's
per-expert `w1`/`w3` keys that transformers stacks and concatenates into `experts.gate_up_proj`, and
LFM3's `self_attn.gate_proj` (loaded as `g_proj`)."""

from __future__ import annotations

import json

import pytest
import torch

from hub_layouts import LFM2_HUB, LFM2_MOE_HUB, LFM3_HUB, check_round_trip, hub_checkpoint, prune_both_ways, read_all
from hybridprune.checkpoint.files import CheckpointFiles, CheckpointFormatError, KeyMap
from hybridprune.checkpoint.fingerprint import checkpoint_fingerprint, model_fingerprint


def _config(out):
    return json.loads((out / "config.json").read_text())


def test_lfm2_hub_layout_round_trips_with_the_ffn_width_written_exactly(tmp_path, tokens):
    """The source builds an FFN of int(2 * 96 / 3) = 64 from intermediate_size 96; pruned to 40, the
    output says 40 with the adjustment off, under every alias the source uses."""
    hub_checkpoint(tmp_path / "source", LFM2_HUB)
    plan = "hidden_size=32,ffn_hidden_size=40,num_attention_heads=4,drop_layers=1"
    pruned, memory, stream, ours = prune_both_ways(tmp_path, tmp_path / "source", tokens, plan)
    assert ours == []
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    assert tensors["model.layers.0.conv.in_proj.weight"].shape == (96, 32)  # B, C, x: 3 x 32 rows
    assert tensors["model.layers.0.conv.conv.weight"].shape == (32, 1, 3)
    assert tensors["model.layers.0.feed_forward.w1.weight"].shape == (40, 32)
    assert tensors["model.layers.2.self_attn.q_proj.weight"].shape == (32, 32)
    for out in (memory, stream):
        config = _config(out)
        assert sorted(config) == sorted(LFM2_HUB)  # the source's names only
        assert config["full_attn_idxs"] == [2] and config["num_hidden_layers"] == 3
        ffn = (config["intermediate_size"], config["block_ff_dim"], config["block_auto_adjust_ff_dim"])
        assert ffn == (40, 40, False)
        assert [config[k] for k in ("hidden_size", "block_dim", "conv_dim", "conv_dim_out")] == [32] * 4
        assert config["num_attention_heads"] == config["num_heads"] == 4


def test_an_unpruned_ffn_keeps_the_auto_adjusted_config(tmp_path, tokens):
    hub_checkpoint(tmp_path / "source", LFM2_HUB)
    pruned, memory, stream, ours = prune_both_ways(tmp_path, tmp_path / "source", tokens, "hidden_size=40")
    check_round_trip(pruned, (memory, stream), tokens)
    for out in (memory, stream):
        config = _config(out)
        ffn = (config["intermediate_size"], config["block_ff_dim"], config["block_auto_adjust_ff_dim"])
        assert ffn == (96, 96, True)


def test_lfm2_moe_hub_layout_with_per_expert_w1_w3_keys_round_trips(tmp_path, tokens):
    """Per-expert w1 (gate) and w3 (up) are the two halves of the stacked gate_up_proj: each is cut by
    its own half of the kept expert neurons, the experts renumbered 0..E'-1, the router rows and the
    fp32 expert_bias cut with them; the dense first layer keeps its FFN axis."""
    model = hub_checkpoint(tmp_path / "source", LFM2_MOE_HUB)
    src = tmp_path / "source"
    assert checkpoint_fingerprint(CheckpointFiles(src), model.config) == model_fingerprint(model)
    plan = "hidden_size=32,num_moe_experts=6,moe_ffn_hidden_size=8,ffn_hidden_size=40,drop_layers=2"
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, plan)
    assert ours == []
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    experts = sorted(k for k in tensors if ".experts." in k)
    assert experts == sorted(f"model.layers.{i}.feed_forward.experts.{j}.{w}.weight"
                             for i in (1, 2) for j in range(6) for w in ("w1", "w2", "w3"))
    assert tensors["model.layers.2.feed_forward.experts.5.w1.weight"].shape == (8, 32)
    assert tensors["model.layers.2.feed_forward.experts.5.w2.weight"].shape == (32, 8)
    assert tensors["model.layers.2.feed_forward.gate.weight"].shape == (6, 32)
    assert tensors["model.layers.2.feed_forward.expert_bias"].shape == (6,)
    assert tensors["model.layers.0.feed_forward.w1.weight"].shape == (40, 32)
    for out in (memory, stream):
        config = _config(out)
        # 6 heads of 8 no longer equal hidden_size 32: head_dim is added, as the attention would derive 5
        assert sorted(config) == sorted([*LFM2_MOE_HUB, "head_dim"]) and config["head_dim"] == 8
        assert (config["num_experts"], config["moe_intermediate_size"], config["intermediate_size"]) == (6, 8, 40)
        assert config["layer_types"] == ["conv", "full_attention", "conv"] and config["num_dense_layers"] == 1


def test_kept_lfm2_experts_keep_their_gate_and_up_halves(tmp_path, tokens):
    """Cutting experts only: output expert p is source expert kept[p], its w1, w2, w3 unchanged."""
    from hybridprune.importance.calibrate import calibrate
    from hybridprune.pruning.streaming import stream_prune

    model = hub_checkpoint(tmp_path / "source", LFM2_MOE_HUB)
    scores = calibrate(model, tokens, batch_size=2, progress=False)
    out = stream_prune(tmp_path / "source", scores, "num_moe_experts=4", tmp_path / "out")
    source, got = read_all(tmp_path / "source"), read_all(out)
    kept = json.loads((out / "hybridprune.json").read_text())["kept_experts"]
    for layer in (1, 2, 3):
        prefix = f"model.layers.{layer}.feed_forward."
        for p, j in enumerate(kept[str(layer)]):
            for w in ("w1", "w2", "w3"):
                assert torch.equal(got[f"{prefix}experts.{p}.{w}.weight"], source[f"{prefix}experts.{j}.{w}.weight"])
        assert torch.equal(got[f"{prefix}expert_bias"], source[f"{prefix}expert_bias"][kept[str(layer)]])


def test_dropping_the_dense_layer_leaves_no_dense_layers(tmp_path, tokens):
    hub_checkpoint(tmp_path / "source", LFM2_MOE_HUB)
    pruned, memory, stream, ours = prune_both_ways(tmp_path, tmp_path / "source", tokens, "drop_layers=0")
    check_round_trip(pruned, (memory, stream), tokens)
    for out in (memory, stream):
        config = _config(out)
        assert config["num_dense_layers"] == 0 and config["layer_types"] == ["full_attention", "conv", "conv"]


def test_lfm3_hub_layout_keeps_the_gate_proj_name(tmp_path, tokens):
    """LFM3's per-head output gate is `self_attn.gate_proj` on the Hub: one row per query head, cut
    with its head, and written back under the Hub's name."""
    hub_checkpoint(tmp_path / "source", LFM3_HUB)
    plan = "hidden_size=40,ffn_hidden_size=32,num_attention_heads=4,drop_layers=3"
    pruned, memory, stream, ours = prune_both_ways(tmp_path, tmp_path / "source", tokens, plan)
    assert ours == []
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    assert tensors["model.layers.1.self_attn.gate_proj.weight"].shape == (4, 40)
    assert not [k for k in tensors if ".g_proj." in k]
    assert tensors["model.layers.1.post_operator_norm.weight"].shape == (40,)
    for out in (memory, stream):
        config = _config(out)
        assert sorted(config) == sorted(LFM3_HUB)
        assert config["layer_types"] == ["conv", "sliding_attention", "full_attention"]


def test_concatenated_per_expert_keys_are_understood_from_the_conversion_mapping():
    """transformers stacks LFM2-MoE's w1 and w3 per expert and concatenates the stacks (gate over up):
    w1 of expert j is rows [0, F) of gate_up_proj[j], w3 rows [F, 2F)."""
    keymap = KeyMap("lfm2_moe")
    w3 = keymap.stacked("model.layers.4.feed_forward.experts.13.w3.weight")
    assert (w3.target, w3.index, w3.dim, w3.segment, w3.segments, w3.segment_dim) == (
        "model.layers.4.feed_forward.experts.gate_up_proj", 13, 0, 1, 2, 1)
    assert w3.region((16, 48)) == [(13, 14), (16, 32), None]
    w2 = keymap.stacked("model.layers.4.feed_forward.experts.13.w2.weight")
    assert (w2.target, w2.segments, w2.segment_dim) == ("model.layers.4.feed_forward.experts.down_proj", 1, None)
    shapes = {f"model.layers.1.feed_forward.experts.{j}.{w}.weight": (16, 48) for j in range(4) for w in ("w1", "w3")}
    assert keymap.model_shapes(shapes) == {"model.layers.1.feed_forward.experts.gate_up_proj": (4, 32, 48)}


@pytest.mark.parametrize("missing", ["model.layers.1.feed_forward.experts.2.w3.weight",
                                     "model.layers.1.feed_forward.experts.3.w1.weight"])
def test_a_missing_half_of_an_expert_is_named(missing):
    shapes = {f"model.layers.1.feed_forward.experts.{j}.{w}.weight": (16, 48) for j in range(4) for w in ("w1", "w3")}
    del shapes[missing]
    with pytest.raises(CheckpointFormatError, match=f"lacks {missing.replace('.', '[.]')}: transformers merges these tensors "
                       r"into model[.]layers[.]1[.]feed_forward[.]experts[.]gate_up_proj"):
        KeyMap("lfm2_moe").model_shapes(shapes, {"model.layers.1.feed_forward.experts.gate_up_proj": (4, 32, 48)})


def test_a_missing_part_of_every_expert_is_named():
    shapes = {f"model.layers.1.feed_forward.experts.{j}.w1.weight": (16, 48) for j in range(2)}
    missing = r"lacks model[.]layers[.]1[.]feed_forward[.]experts[.]0[.]w3[.]weight"
    with pytest.raises(CheckpointFormatError, match=missing):
        KeyMap("lfm2_moe").model_shapes(shapes)


# ---- what the serving engines read of LFM2 configs (architectures/engine_rules.py) -------------------
_VLLM_HEADS = "vllm/model_executor/models/lfm2.py:124 and lfm2_moe.py:205"
_VLLM_FFN = "vllm/model_executor/layers/linear.py:499 (MergedColumnParallelLinear)"


@pytest.mark.parametrize("family, changes, engine, tp, source", [
    ("lfm2", {}, "vllm", 1, None),  # 6 heads x 8 == hidden 48
    ("lfm2", {"num_attention_heads": 4}, "vllm", 1, _VLLM_HEADS),  # vLLM ignores head_dim
    # llama.cpp builds q/o hidden_size wide whatever head_dim says (seen in the serving matrix, docs/serving.md)
    ("lfm2", {"num_attention_heads": 4}, "llama.cpp", 1, "src/models/lfm2.cpp:74-76 and lfm2moe.cpp:63-65"),
    ("lfm2", {}, "llama.cpp", 1, None),
    ("lfm2_moe", {"hidden_size": 32}, "vllm", 1, _VLLM_HEADS),
    ("lfm2_moe", {"moe_ffn_hidden_size": 12}, "vllm", 8, "vllm/model_executor/layers/fused_moe/config.py:1341"),
    ("lfm2", {"ffn_hidden_size": 66}, "vllm", 4, _VLLM_FFN),
    ("lfm3", {}, "vllm", 1, "vllm/model_executor/models/registry.py (no Lfm3ForCausalLM entry)"),
    ("lfm3", {}, "llama.cpp", 1, "conversion/lfm2.py (registers Lfm2ForCausalLM and Lfm2MoeForCausalLM only)"),
])
def test_engine_rules_of_lfm2_families(family, changes, engine, tp, source):
    from serving_helpers import dims_of, sources

    adapter, _, dims = dims_of(family, **changes)
    found = sources(adapter.model_type, dims, (engine,), tp)
    assert found == [] if source is None else source in found


def test_parameter_counts_with_conv_bias_and_without_lfm3_extras():
    from conftest import build, tiny_config
    from hybridprune.architectures import get_adapter

    for config in (tiny_config("lfm2", conv_bias=True), tiny_config("lfm3", use_sandwich_norm=False,
                                                                      use_attention_gate=False, attention_bias=False)):
        model = build(config)
        adapter = get_adapter(model)
        assert adapter.num_parameters(adapter.dims(config)) == sum(p.numel() for p in model.parameters())


# ---- the command line: the whole recipe on an LFM2-MoE checkpoint -----------------------------------------
def test_cli_recipe_on_an_lfm2_moe_checkpoint(tmp_path):
    """calibrate, search under an active-parameter budget, prune the best plan both ways (the same
    tensors), distil and evaluate: every command takes the checkpoint."""
    from ckpt_helpers import invoke, small_corpus
    from conftest import build, tiny_config
    from hybridprune.architectures import get_adapter
    from hybridprune.data import tokenizer_path
    from hybridprune.pruning.export import copy_tokenizer_files
    from transformers import AutoConfig

    model = build(tiny_config("lfm2_moe", vocab_size=4096))
    model.save_pretrained(tmp_path / "model")
    copy_tokenizer_files(tokenizer_path(), tmp_path / "model")
    data = small_corpus(tmp_path / "corpus.jsonl")
    result = invoke("calibrate", "--model", tmp_path / "model", "--data", data, "--samples", "4", "--seq-len", "16",
                    "--batch-size", "2", "--depth-samples", "2", "--out", tmp_path / "scores")
    assert result.exit_code == 0, result.output
    result = invoke("search", "--model", tmp_path / "model", "--data", data, "--active-params", "0.9x",
                    "--scores", tmp_path / "scores", "--eval-samples", "2", "--eval-seq-len", "16",
                    "--max-candidates", "2", "--top-k", "1", "--kd-steps", "1", "--kd-batch", "2", "--no-speed",
                    "--out", tmp_path / "search")
    assert result.exit_code == 0, result.output
    adapter = get_adapter(model)
    limit = 0.9 * adapter.num_active_parameters(adapter.dims(model.config))
    outputs = []
    for how in ((), ("--in-memory",)):
        out = tmp_path / f"pruned{len(how)}"
        result = invoke("prune", "--model", tmp_path / "model", "--scores", tmp_path / "scores",
                        "--plan", tmp_path / "search" / "best.yaml", *how, "--out", out)
        assert result.exit_code == 0, result.output
        config = AutoConfig.from_pretrained(out)
        assert adapter.num_active_parameters(adapter.dims(config)) <= limit
        outputs.append(read_all(out))
    assert sorted(outputs[0]) == sorted(outputs[1])
    assert all(torch.equal(outputs[0][k], outputs[1][k]) for k in outputs[0])
    result = invoke("distill", "--teacher", tmp_path / "model", "--student", tmp_path / "pruned0", "--data", data,
                    "--steps", "1", "--seq-len", "16", "--global-batch", "2", "--micro-batch", "2",
                    "--val-samples", "0", "--no-progress", "--out", tmp_path / "student")
    assert result.exit_code == 0, result.output
    result = invoke("eval", tmp_path / "model", tmp_path / "pruned0", "--data", data, "--samples", "2",
                    "--seq-len", "16", "--batch-size", "2", "--out", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "eval" / "eval.json").read_text())["models"]) == 2


def test_depth_by_num_layers_keeps_an_attention_and_a_convolution_layer(tokens):
    from conftest import build, tiny_config
    from hybridprune import calibrate, prune
    from hybridprune.pruning.plan import PlanError

    model = build(tiny_config("lfm2"))  # conv, attention, conv, attention
    scores = calibrate(model, tokens, progress=False, depth_samples=2)
    pruned = prune(model, scores, "num_layers=2")
    assert sorted(pruned.config.layer_types) == ["conv", "full_attention"]
    with pytest.raises(PlanError, match=r"num_layers=1 is too few: 2 layers must stay .*Valid values: 2..4"):
        prune(model, scores, "num_layers=1")
