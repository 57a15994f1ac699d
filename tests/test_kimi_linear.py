"""Kimi Linear beyond the shared battery: KDA head removal equals zeroing, negative controls for its
independent heads, the `q_lora_rank` MLA variant, the layer layout rewritten in the source's style, and
the Hub layout (per-expert w1/w2/w3, q/k/v short convs) in both prune paths."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig

from conftest import build, sliced, tiny_config
from families import KIMI_KW
from hub_layouts import KIMI_HUB, hub_checkpoint, read_all
from hybridprune import calibrate, prune
from hybridprune.architectures import get_adapter
from hybridprune.checkpoint.files import CheckpointFiles
from hybridprune.checkpoint.fingerprint import checkpoint_fingerprint, model_fingerprint
from hybridprune.pruning.selection import Selection


@pytest.fixture(scope="module")
def kimi():
    return build(tiny_config("kimi_linear"))


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, 96, (4, 12), generator=torch.Generator().manual_seed(1))


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def test_removing_kda_heads_equals_zeroing_their_output_columns(kimi, ids):
    """KDA heads are independent (per-head l2-normalised q/k, per-head recurrence, per-head gated norm):
    removing heads 1 and 4 of every KDA layer equals zeroing their o_proj columns."""
    adapter = get_adapter(kimi)
    dims = adapter.dims(kimi.config)
    hd, removed = dims.mamba_head_dim, [1, 4]
    kept = torch.tensor([h for h in range(dims.mamba_num_heads) if h not in removed])
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    zeroed = build(kimi.config)
    zeroed.load_state_dict(kimi.state_dict())
    with torch.no_grad():
        for i in dims.layers_of("mamba"):
            sel.mamba_heads[i] = kept
            zeroed.model.layers[i].self_attn.o_proj.weight[:, [h * hd + d for h in removed for d in range(hd)]] = 0
    torch.testing.assert_close(logits(sliced(kimi, sel, mamba_num_heads=len(kept)), ids), logits(zeroed, ids),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mixer", ["kda", "mla"])
def test_heads_permuted_everywhere_but_the_output_projection_change_the_logits(kimi, ids, mixer):
    """The negative control of the battery's permutation test (there is no cross-group swap: every head
    is its own group): the same head permutation keeps the logits (battery), but leaving o_proj
    unpermuted does not."""
    adapter = get_adapter(kimi)
    dims = adapter.dims(kimi.config)
    n = dims.mamba_num_heads if mixer == "kda" else dims.num_attention_heads
    swap = torch.arange(n)
    swap[0], swap[1] = 1, 0
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    layers = dims.layers_of("mamba" if mixer == "kda" else "attention")
    for i in layers:
        (sel.mamba_heads if mixer == "kda" else sel.attention_heads)[i] = swap
    permuted = sliced(kimi, sel)
    torch.testing.assert_close(logits(permuted, ids), logits(kimi, ids), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        for i in layers:
            permuted.model.layers[i].self_attn.o_proj.weight.copy_(kimi.model.layers[i].self_attn.o_proj.weight)
    assert (logits(permuted, ids) - logits(kimi, ids)).abs().max() > 1e-3


def test_mla_with_a_query_lora_counts_permutes_and_prunes_exactly(ids):
    """`q_lora_rank` set: q_a_proj -> q_a_layernorm -> q_b_proj, whose rows are cut per head (the rank kept)."""
    model = build(tiny_config("kimi_linear", q_lora_rank=12, attention_bias=True))
    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    assert adapter.num_parameters(dims) == sum(p.numel() for p in model.parameters())
    sel = Selection(kept_blocks=list(range(dims.num_layers)), attention_heads={1: torch.tensor([2, 0, 3, 1])})
    torch.testing.assert_close(logits(sliced(model, sel), ids), logits(model, ids), atol=1e-5, rtol=1e-5)
    pruned = prune(model, calibrate(model, ids, progress=False), "num_attention_heads=2,hidden_size=40")
    assert sum(p.numel() for p in pruned.parameters()) == adapter.num_parameters(adapter.dims(pruned.config))
    attn = pruned.model.layers[1].self_attn
    assert (attn.q_a_proj.weight.shape, attn.q_b_proj.weight.shape, attn.kv_b_proj.weight.shape) == (
        (12, 40), (2 * 16, 12), (2 * 20, 16))
    assert pruned.config.num_key_value_heads == 2


def test_depth_pruning_rewrites_the_layer_layout_in_the_sources_words(kimi, ids):
    """`linear_attn_config` (1-based `kda_layers`/`full_attn_layers`, `num_heads`) and
    `first_k_dense_replace` follow the kept layers; a source described by `layer_types` alone stays so."""
    scores = calibrate(kimi, ids, progress=False)
    pruned = prune(kimi, scores, "drop_layers=0+2,mamba_num_heads=4")
    c = pruned.config
    assert c.linear_attn_config == {"num_heads": 4, "head_dim": 8, "short_conv_kernel_size": 4,
                                    "full_attn_layers": [1], "kda_layers": [2]}
    assert (c.layer_types, c.mlp_layer_types, c.first_k_dense_replace) == (
        ["full_attention", "linear_attention"], ["sparse", "sparse"], 0)
    kw = {k: v for k, v in KIMI_KW.items() if k not in ("linear_attn_config", "first_k_dense_replace")}
    plain = build(AutoConfig.for_model("kimi_linear", **kw, linear_num_heads=6, linear_head_dim=8,
                                       layer_types=["linear_attention", "full_attention", "linear_attention",
                                                    "linear_attention"]))
    out = prune(plain, calibrate(plain, ids, progress=False), "drop_layers=3")
    assert out.config.layer_types == ["linear_attention", "full_attention", "linear_attention"]
    assert getattr(out.config, "linear_attn_config", None) is None
    assert getattr(out.config, "first_k_dense_replace", None) is None
    assert out.config.mlp_layer_types == ["dense", "sparse", "sparse"]


def test_hub_layout_prunes_the_same_both_ways_and_reloads(tmp_path, ids):
    """Kimi's Hub layout: q/k/v short convs that transformers concatenates, per-expert w1/w3 (concatenated
    into gate_up_proj) and w2, MoE layers under `block_sparse_moe`. The streaming output keeps these names
    (kept experts renumbered), holds the in-memory prune's tensors, keeps the config's style, and both
    outputs reload with plain transformers to the pruned model's logits."""
    from transformers import AutoModelForCausalLM

    from hybridprune.checkpoint.load import load_model
    from hybridprune.pruning.export import export
    from hybridprune.pruning.streaming import stream_prune

    src = tmp_path / "source"
    hub_checkpoint(src, KIMI_HUB)
    model = load_model(src)
    assert checkpoint_fingerprint(CheckpointFiles(src), model.config) == model_fingerprint(model)
    scores = calibrate(model, ids, batch_size=2, progress=False, depth_samples=2)
    plan = ("hidden_size=32,mamba_num_heads=4,num_attention_heads=2,ffn_hidden_size=40,num_moe_experts=6,"
            "moe_ffn_hidden_size=8,moe_shared_expert_intermediate_size=8,drop_layers=2")
    pruned = prune(model, scores, plan)
    memory = export(pruned, tmp_path / "memory", source=str(src))
    stream = stream_prune(src, scores, plan, tmp_path / "stream")
    got = read_all(stream)
    in_memory = read_all(memory)
    assert sorted(in_memory) == sorted(got) and all(torch.equal(in_memory[k], v) for k, v in got.items())
    # the dense first layer as the Hub names it (transformers' writer alone would call it block_sparse_moe)
    assert "model.layers.0.mlp.gate_proj.weight" in got
    assert got["model.layers.2.self_attn.q_conv1d.weight"].shape == (32, 1, 4)
    assert sorted(k for k in got if k.startswith("model.layers.2.block_sparse_moe.experts.")) == sorted(
        f"model.layers.2.block_sparse_moe.experts.{j}.w{w}.weight" for j in range(6) for w in (1, 2, 3))
    assert got["model.layers.2.block_sparse_moe.experts.5.w1.weight"].shape == (8, 32)
    assert not [k for k in got if "forget_gate" in k or "gate_up_proj" in k or ".conv1d." in k]
    for out in (memory, stream):
        reloaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False).eval()
        torch.testing.assert_close(logits(reloaded, ids), logits(pruned, ids), rtol=0, atol=0)
        torch.testing.assert_close(logits(load_model(out), ids), logits(pruned, ids), rtol=0, atol=0)
    config = json.loads((stream / "config.json").read_text())
    assert sorted(config) == sorted(KIMI_HUB)  # no layer_types, mlp_layer_types: the Hub's fields only
    assert config["linear_attn_config"] == {"kda_layers": [1, 3], "full_attn_layers": [2], "num_heads": 4,
                                            "head_dim": 8, "short_conv_kernel_size": 4}
    assert (config["num_experts"], config["moe_intermediate_size"], config["num_shared_experts"],
            config["first_k_dense_replace"], config["num_hidden_layers"]) == (6, 8, 1, 1, 3)
    assert json.loads((memory / "config.json").read_text()) == config


def test_a_missing_short_conv_is_named(tmp_path, ids):
    from hybridprune.checkpoint.load import CheckpointLoadError, load_model

    def drop(tensors):
        del tensors["model.layers.2.self_attn.k_conv1d.weight"]

    hub_checkpoint(tmp_path / "source", KIMI_HUB, edit=drop)
    with pytest.raises(CheckpointLoadError, match=r"lacks model\.layers\.2\.self_attn\.k_conv1d\.weight: transformers "
                                                  r"merges these tensors into model\.layers\.2\.self_attn\.conv1d"):
        load_model(tmp_path / "source")


@pytest.mark.slow  # transformers' KDA runs in plain torch on CPU: each forward costs seconds
def test_cli_calibrate_search_with_active_params_prune_eval_distill(tmp_path):
    """The commands on a saved Kimi Linear checkpoint (transformers' Hub layout): search under an
    active-parameter budget, the streaming prune of its best plan, eval of both, one distillation step."""
    from typer.testing import CliRunner

    from hybridprune.cli import app
    from hybridprune.data import tokenizer_path
    from hybridprune.pruning.export import copy_tokenizer_files

    runner = CliRunner()
    model, scores, pruned = tmp_path / "model", tmp_path / "scores", tmp_path / "pruned"
    build(tiny_config("kimi_linear", vocab_size=4096)).save_pretrained(model)
    copy_tokenizer_files(tokenizer_path(), model)
    data = ["--data", "shakespeare", "--seq-len", "16"]

    def ok(*args):
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    ok("calibrate", "--model", str(model), *data, "--samples", "2", "--batch-size", "2", "--depth-samples", "0",
       "--out", str(scores))
    ok("search", "--model", str(model), "--data", "shakespeare", "--active-params", "0.9x", "--scores", str(scores),
       "--eval-samples", "2", "--eval-seq-len", "16", "--max-candidates", "1", "--top-k", "1", "--no-speed",
       "--max-depth-pruning", "0", "--out", str(tmp_path / "search"))
    assert json.loads((tmp_path / "search" / "summary.json").read_text())["plan"]["mamba_head_dim"] == 8
    assert "active parameters" in ok("prune", "--model", str(model), "--scores", str(scores), "--plan",
                                     str(tmp_path / "search" / "best.yaml"), "--out", str(pruned))
    assert json.loads((pruned / "hybridprune.json").read_text())["method"] == "streaming"
    ok("eval", str(model), str(pruned), *data, "--samples", "2", "--batch-size", "2", "--no-speed")
    ok("distill", "--teacher", str(model), "--student", str(pruned), *data, "--steps", "1", "--global-batch", "2",
       "--micro-batch", "2", "--warmup", "0", "--val-samples", "2", "--no-progress", "--out", str(tmp_path / "student"))
    assert (tmp_path / "student" / "config.json").is_file()


def test_the_search_space_proposes_only_axes_the_adapter_allows():
    """Kimi's KDA head size cannot be pruned (`fixed_axes`): the search space keeps it at its size rather
    than proposing candidates the adapter refuses, and the fixed axis is really refused."""
    from hybridprune.architectures import Unrepresentable
    from hybridprune.archsearch import SearchSpace
    from hybridprune.archsearch.space import build_grid

    config = tiny_config("kimi_linear")
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    assert adapter.fixed_axes == ("mamba_head_dim",)
    grid, choices = build_grid(dims, SearchSpace(max_width_pruning=0.5), None, adapter.required_kinds,
                               adapter.fixed_axes)
    assert choices["mamba_head_dim"] == [dims.mamba_head_dim] and len(choices["mamba_num_heads"]) > 1
    assert grid and all(c.dims.mamba_head_dim == dims.mamba_head_dim for c in grid)
    for c in grid:  # none is refused for an axis the family cannot prune
        try:
            adapter.check_representable(c.dims, original=dims)
        except Unrepresentable as e:
            assert "linear_head_dim" not in str(e), c.key
    for axis in adapter.fixed_axes:  # the declaration says what check_representable does
        with pytest.raises(Unrepresentable):
            adapter.check_representable(dims.replace(**{axis: getattr(dims, axis) // 2}), original=dims)
