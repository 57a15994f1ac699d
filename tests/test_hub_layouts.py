"""Checkpoints laid out as on the Hub prune into the same layout and config style, in both prune paths.

The sources are written file by file (tests/hub_layouts.py): legacy config fields, Hub key names,
several shards with an index, an `auto_map` whose code must never run. Each output must keep the
source's key names and config style, and reload with plain transformers to the in-memory pruned
model's logits.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from hub_layouts import (
    GRANITE_HUB, GRANITE_MOE_HUB, NEMOTRON_HUB, NEMOTRON_LATENT_HUB, NEMOTRON_MOE_HUB, REMOTE_CODE, check_round_trip,
    hub_checkpoint, mtp_tensors, prune_both_ways, read_all,
)
from hybridprune.checkpoint.files import CheckpointFiles, CheckpointFormatError, KeyMap
from hybridprune.checkpoint.load import CheckpointLoadError, load_model
from hybridprune.checkpoint.config_style import styled_config
from hybridprune.checkpoint.fingerprint import checkpoint_fingerprint, model_fingerprint
from hybridprune.importance.calibrate import calibrate
from hybridprune.pruning.streaming import stream_prune

PLANS = {
    "nemotron_h": "hidden_size=32,ffn_hidden_size=40,mamba_num_heads=6,mamba_head_dim=6,num_attention_heads=4,"
                  "drop_layers=3",
    # Granite ties the Mamba width to hidden_size (mamba_expand=2): 6 heads x 8 = 2 x 24
    "granitemoehybrid": "hidden_size=24,ffn_hidden_size=40,mamba_num_heads=6,num_attention_heads=4,drop_layers=3",
}


def test_nemotron_legacy_hub_layout_round_trips(tmp_path, tokens):
    hub_checkpoint(tmp_path / "source", NEMOTRON_HUB)
    src = tmp_path / "source"
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, PLANS["nemotron_h"])
    assert ours == []  # the fingerprint of the Hub files equals the loaded model's; the style is kept
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    assert all(k.startswith(("backbone.", "lm_head.")) for k in tensors)
    assert "backbone.layers.3.mixer.in_proj.weight" in tensors and "backbone.layers.4.mixer.up_proj.weight" in tensors
    assert "backbone.layers.5.norm.weight" not in tensors
    for out in (memory, stream):
        text = (out / "config.json").read_text()
        config = json.loads(text)
        assert sorted(config) == sorted(NEMOTRON_HUB)  # no field renamed or added
        assert config["hybrid_override_pattern"] == "M-*M-"  # layer 3 (an MLP) dropped
        assert config["num_hidden_layers"] == 5
        assert (config["hidden_size"], config["intermediate_size"], config["mamba_num_heads"],
                config["mamba_head_dim"], config["num_attention_heads"]) == (32, 40, 6, 6, 4)
        assert config["mamba_n_groups"] == 3 and config["torch_dtype"] == "float32"
        assert config["auto_map"] == NEMOTRON_HUB["auto_map"] and config["architectures"] == ["NemotronHForCausalLM"]
        assert config["transformers_version"] == "4.48.0.dev0"
        assert "Infinity" in text and "__float__" not in text  # infinities as the source wrote them
        assert (out / "configuration_nemotron_h.py").read_text() == REMOTE_CODE  # carried, never run
        assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [2, 7]
        assert json.loads((out / "hybridprune.json").read_text())["left_out"] == []


def test_granite_hub_layout_round_trips(tmp_path, tokens):
    hub_checkpoint(tmp_path / "source", GRANITE_HUB)
    src = tmp_path / "source"
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, PLANS["granitemoehybrid"])
    assert ours == []
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    assert all(k.startswith("model.") for k in tensors)  # tied embeddings: no lm_head stored
    assert tensors["model.layers.0.shared_mlp.input_linear.weight"].shape == (80, 24)
    for out in (memory, stream):
        config = json.loads((out / "config.json").read_text())
        assert config["layer_types"] == ["mamba", "attention", "mamba"]  # legacy names kept
        assert config["num_hidden_layers"] == 3 and config["hidden_size"] == 24
        assert (config["mamba_n_heads"], config["mamba_d_head"], config["mamba_expand"]) == (6, 8, 2)
        assert config["shared_intermediate_size"] == 40 and config["num_attention_heads"] == 4
        assert config["intermediate_size"] == 40  # dense: what llama.cpp sizes the FFN by (the source's was stale)
        assert set(config) - set(GRANITE_HUB) <= {"head_dim"}  # written only where it is needed


NEMOTRON_MOE_PLAN = ("hidden_size=32,num_moe_experts=4,moe_ffn_hidden_size=8,moe_shared_expert_intermediate_size=16,"
                     "mamba_num_heads=6,drop_layers=1")


@pytest.mark.parametrize("raw", [NEMOTRON_MOE_HUB, NEMOTRON_LATENT_HUB], ids=["moe", "latent"])
def test_nemotron_moe_hub_layout_with_per_expert_keys_round_trips(tmp_path, tokens, raw):
    """Nemotron 3 Nano's Hub layout: per-expert `experts.{j}.up_proj.weight` keys, which transformers
    stacks on load. The output keeps one key per kept expert, renumbered 0..E'-1, in both paths."""
    hub_checkpoint(tmp_path / "source", raw)
    src = tmp_path / "source"
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, NEMOTRON_MOE_PLAN)
    assert ours == []
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    experts = sorted(k for k in tensors if ".mixer.experts." in k)
    # layer 1 (MoE) dropped: the MoE layer 3 is now layer 2, with experts 0..3 of 8 x (32 or latent 32)
    assert experts == [f"backbone.layers.2.mixer.experts.{j}.{p}_proj.weight" for j in range(4) for p in ("down", "up")]
    assert tensors["backbone.layers.2.mixer.experts.3.up_proj.weight"].shape == (8, 32)
    assert tensors["backbone.layers.2.mixer.gate.weight"].shape == (4, 32)
    assert tensors["backbone.layers.2.mixer.gate.e_score_correction_bias"].shape == (4,)
    for out in (memory, stream):
        config = json.loads((out / "config.json").read_text())
        assert sorted(config) == sorted(raw)
        assert config["hybrid_override_pattern"] == "M*EM-" and config["num_hidden_layers"] == 5
        assert (config["n_routed_experts"], config["moe_intermediate_size"],
                config["moe_shared_expert_intermediate_size"]) == (4, 8, 16)
        assert config["n_group"] == 2 and config["num_experts_per_tok"] == 2


def test_kept_experts_keep_their_weights_under_new_numbers(tmp_path, tokens):
    """Cutting experts only: output expert p is source expert kept[p], unchanged, with its router row
    and correction bias."""
    model = hub_checkpoint(tmp_path / "source", NEMOTRON_MOE_HUB)
    scores = calibrate(model, tokens, batch_size=2, progress=False, depth_samples=2)
    out = stream_prune(tmp_path / "source", scores, "num_moe_experts=4", tmp_path / "out")
    source, got = read_all(tmp_path / "source"), read_all(out)
    kept = json.loads((out / "hybridprune.json").read_text())["kept_experts"]
    for layer in (1, 3):
        assert len(kept[str(layer)]) == 4
        prefix = f"backbone.layers.{layer}.mixer."
        for p, j in enumerate(kept[str(layer)]):
            for proj in ("up", "down"):
                assert torch.equal(got[f"{prefix}experts.{p}.{proj}_proj.weight"],
                                   source[f"{prefix}experts.{j}.{proj}_proj.weight"])
        assert torch.equal(got[f"{prefix}gate.weight"], source[f"{prefix}gate.weight"][kept[str(layer)]])
        assert torch.equal(got[f"{prefix}gate.e_score_correction_bias"],
                           source[f"{prefix}gate.e_score_correction_bias"][kept[str(layer)]])
        assert f"{prefix}experts.4.up_proj.weight" not in got


def test_granite_moe_hub_layout_round_trips(tmp_path, tokens):
    """Granite-4.0-H Tiny's Hub names: `block_sparse_moe.input_linear.weight [E, 2F, H]`,
    `output_linear.weight [E, H, F]`, `router.layer.weight [E, H]`."""
    hub_checkpoint(tmp_path / "source", GRANITE_MOE_HUB)
    src = tmp_path / "source"
    plan = PLANS["granitemoehybrid"] + ",num_moe_experts=4,moe_ffn_hidden_size=8"
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, plan)
    assert ours == []
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    assert tensors["model.layers.2.block_sparse_moe.input_linear.weight"].shape == (4, 16, 24)
    assert tensors["model.layers.2.block_sparse_moe.output_linear.weight"].shape == (4, 24, 8)
    assert tensors["model.layers.2.block_sparse_moe.router.layer.weight"].shape == (4, 24)
    assert not [k for k in tensors if "experts" in k]
    for out in (memory, stream):
        config = json.loads((out / "config.json").read_text())
        assert (config["num_local_experts"], config["intermediate_size"]) == (4, 8)
        assert config["layer_types"] == ["mamba", "attention", "mamba"]


def test_a_missing_per_expert_tensor_is_named_and_nothing_is_written(tmp_path, tokens):
    def drop(tensors):
        del tensors["backbone.layers.3.mixer.experts.5.down_proj.weight"]

    model = hub_checkpoint(tmp_path / "source", NEMOTRON_MOE_HUB, edit=drop)
    scores = calibrate(model, tokens, batch_size=2, progress=False, depth_samples=2)
    missing = r"lacks backbone\.layers\.3\.mixer\.experts\.5\.down_proj\.weight"
    with pytest.raises(CheckpointFormatError, match=missing):
        stream_prune(tmp_path / "source", scores, NEMOTRON_MOE_PLAN, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(CheckpointLoadError, match=missing):  # the load path (calibrate, eval, --in-memory)
        load_model(tmp_path / "source")


def test_a_multi_token_prediction_checkpoint_prunes_without_its_mtp_layers(tmp_path, tokens):
    raw = dict(NEMOTRON_HUB, num_nextn_predict_layers=1, mtp_hybrid_override_pattern="*E")
    hub_checkpoint(tmp_path / "source", raw, extra=mtp_tensors(48))
    src = tmp_path / "source"
    loaded = load_model(src)  # the load path (calibrate, eval) ignores mtp.* as transformers does
    assert checkpoint_fingerprint(CheckpointFiles(src), loaded.config) == model_fingerprint(loaded)
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, PLANS["nemotron_h"])
    left_out = ("left out of the pruned checkpoint: the multi-token-prediction layers (num_nextn_predict_layers=1, "
                "mtp.* tensors), which transformers does not load, so they are neither scored nor pruned; the "
                "output has num_nextn_predict_layers=0")
    assert ours == [left_out, left_out]  # one warning from each prune path
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    assert not [k for k in tensors if k.startswith("mtp.")]
    for out in (memory, stream):
        config = json.loads((out / "config.json").read_text())
        assert config["num_nextn_predict_layers"] == 0
        assert json.loads((out / "hybridprune.json").read_text())["left_out"] == [left_out.split(": ", 1)[1]]


def test_mtp_checkpoint_from_the_cli_calibrate_prune_eval(tmp_path):
    """One yellow warning line on the CLI; calibrate and eval read the checkpoint as transformers does."""
    from ckpt_helpers import invoke, small_corpus
    from hybridprune.data import tokenizer_path
    from hybridprune.pruning.export import copy_tokenizer_files

    raw = dict(NEMOTRON_HUB, vocab_size=4096, num_nextn_predict_layers=1)
    hub_checkpoint(tmp_path / "source", raw, extra=mtp_tensors(48))
    src = tmp_path / "source"
    copy_tokenizer_files(tokenizer_path(), src)
    data = small_corpus(tmp_path / "corpus.jsonl")
    result = invoke("calibrate", "--model", src, "--data", data, "--samples", "4", "--seq-len", "16",
                    "--depth-samples", "2", "--out", tmp_path / "scores")
    assert result.exit_code == 0, result.output
    result = invoke("prune", "--model", src, "--scores", tmp_path / "scores", "--plan", PLANS["nemotron_h"],
                    "--out", tmp_path / "pruned")
    text = " ".join(result.output.split())
    assert result.exit_code == 0, text
    assert "warning: left out of the pruned checkpoint: the multi-token-prediction layers" in text
    assert "UserWarning" not in text and "fingerprint" not in text
    result = invoke("eval", src, tmp_path / "pruned", "--data", data, "--samples", "2", "--seq-len", "16",
                    "--batch-size", "2")
    assert result.exit_code == 0, result.output


def test_stacked_per_expert_keys_are_understood_from_the_conversion_mapping():
    """transformers 5 stacks Nemotron-H's per-expert Hub tensors into one [E, ...] tensor on load;
    KeyMap reads that from transformers' conversion mapping, not from a list of model names."""
    keymap = KeyMap("nemotron_h")
    key = "backbone.layers.11.mixer.experts.13.down_proj.weight"
    part = keymap.stacked(key)
    assert (part.target, part.index, part.dim) == ("model.layers.11.mixer.experts.down_proj", 13, 0)
    assert key[part.span[0]:part.span[1]] == "13"
    assert keymap.stacked("backbone.layers.11.mixer.shared_experts.down_proj.weight") is None
    assert keymap.sliceable(key) and keymap.needs_conversion(key)
    shapes = {f"backbone.layers.1.mixer.experts.{j}.up_proj.weight": (6, 5) for j in range(4)}
    shapes["backbone.layers.1.mixer.gate.weight"] = (4, 5)
    assert keymap.model_shapes(shapes) == {"model.layers.1.mixer.experts.up_proj": (4, 6, 5),
                                           "model.layers.1.mixer.gate.weight": (4, 5)}


@pytest.mark.parametrize("missing, expected", [
    (2, "backbone.layers.1.mixer.experts.2.up_proj.weight"),  # a gap
    (3, "backbone.layers.1.mixer.experts.3.up_proj.weight"),  # the last one: only the model knows E
])
def test_a_missing_per_expert_tensor_is_named(missing, expected):
    shapes = {f"backbone.layers.1.mixer.experts.{j}.up_proj.weight": (6, 5) for j in range(4) if j != missing}
    with pytest.raises(CheckpointFormatError, match=f"lacks {expected.replace('.', '[.]')}: transformers stacks"):
        KeyMap("nemotron_h").model_shapes(shapes, {"model.layers.1.mixer.experts.up_proj": (4, 6, 5)})


def test_per_expert_tensors_of_different_shapes_are_refused():
    shapes = {f"backbone.layers.1.mixer.experts.{j}.up_proj.weight": (6 + j % 2, 5) for j in range(2)}
    with pytest.raises(CheckpointFormatError, match="differ in shape"):
        KeyMap("nemotron_h").model_shapes(shapes)


def test_concatenated_parts_of_unequal_widths_are_placed_by_their_stored_sizes():
    """OLMo Hybrid's Hub q/k/v convolutions are stored at their own sizes (key 16, key 16, value 48 rows):
    transformers concatenates them into conv1d, so each starts where the ones before it end; parts that
    disagree outside the concatenation axis are refused."""
    keymap = KeyMap("olmo_hybrid")
    shapes = {f"model.layers.0.linear_attn.{p}_conv1d.weight": (n, 1, 4) for p, n in zip("qkv", (16, 16, 48))}
    assert keymap.model_shapes(shapes) == {"model.layers.0.linear_attn.conv1d.weight": (80, 1, 4)}
    assert list(keymap.segment_starts(shapes).values()) == [0, 16, 32]
    with pytest.raises(CheckpointFormatError, match="merged into model[.]layers[.]0[.]linear_attn[.]conv1d[.]weight differ"):
        keymap.model_shapes({**shapes, "model.layers.0.linear_attn.v_conv1d.weight": (48, 1, 3)})


def test_stacked_slices_are_cut_renumbered_and_equal_slicing_the_stack(tmp_path):
    """Streaming cuts a per-expert tensor as slice j of the stacked tensor: kept iff expert j is kept,
    renamed to its place among the kept experts, its other dims cut by the rest of the rule. Checked
    against slicing the stacked tensor, with a hand-built rule (the contract of the MoE layouts)."""
    from types import SimpleNamespace

    from hybridprune.architectures import ParamRule
    from hybridprune.pruning.slicing import slice_tensor
    from hybridprune.pruning.streaming import _kept_keys, _plan_entries

    g = torch.Generator().manual_seed(0)
    stack = torch.randn(4, 6, 5, generator=g)
    tensors = {f"backbone.layers.1.mixer.experts.{j}.up_proj.weight": stack[j].clone() for j in range(4)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    kept = {"moe_experts": torch.tensor([0, 3]), "moe_ffn": torch.tensor([1, 2, 5]), "hidden": torch.tensor([0, 2, 4])}

    def index(axis, layer):
        return kept[axis]

    rule = ParamRule(1, ("moe_experts", "moe_ffn", "hidden"))
    adapter = SimpleNamespace(layers_prefix="model.layers.",
                              param_rules=lambda keys, dims: {k: rule for k in keys if k.endswith("experts.up_proj")})
    files, keymap = CheckpointFiles(tmp_path), KeyMap("nemotron_h")
    entries = _plan_entries(files, _kept_keys(files, keymap, ()), keymap, adapter, None,
                            SimpleNamespace(kept_blocks=[1]), index, None)
    assert [(e.key, e.out_key, e.shape) for e in entries] == [
        ("backbone.layers.1.mixer.experts.0.up_proj.weight", "backbone.layers.0.mixer.experts.0.up_proj.weight", (3, 3)),
        ("backbone.layers.1.mixer.experts.3.up_proj.weight", "backbone.layers.0.mixer.experts.1.up_proj.weight", (3, 3)),
    ]
    whole = slice_tensor(stack, rule, index)
    for position, e in enumerate(entries):
        assert torch.equal(slice_tensor(files.read(e.key), e.rule, index), whole[position])


def test_a_config_of_another_model_type_is_not_used_as_a_style():
    from transformers import AutoConfig

    config = AutoConfig.for_model("nemotron_h", layers_block_type=["linear_attention", "full_attention"])
    assert styled_config(config, dict(GRANITE_HUB)) is None


def test_a_distilled_student_keeps_the_config_style_of_its_source(tmp_path):
    """The student of a Hub-style pruned checkpoint is written in the same style."""
    from transformers import AutoModelForCausalLM

    from hybridprune.distillation.export import export_student

    hub_checkpoint(tmp_path / "source", NEMOTRON_HUB)
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "source", trust_remote_code=False)
    out = export_student(student, tmp_path / "run", tokenizer_dir=tmp_path / "source")
    config = json.loads((out / "config.json").read_text())
    assert sorted(config) == sorted(NEMOTRON_HUB) and config["hybrid_override_pattern"] == "M-*-M-"
    assert config["auto_map"] == NEMOTRON_HUB["auto_map"]


def test_a_conversion_that_is_not_a_stack_or_concatenation_is_refused_by_streaming():
    """A checkpoint tensor that transformers splits on load (`Chunk`: HRM's fused gate_up_proj into
    gate_proj and up_proj) or transposes (Qwen3-VL-MoE's experts) is not a slice of a stack or a part of a
    concatenation the streaming prune can cut one by one, so it says to prune in memory. Stacks of parts
    concatenated on load (Jamba's and LFM2-MoE's gate and up experts: MergeModulelist, then Concatenate)
    are parts it cuts, each its share of the fused rows."""
    from types import SimpleNamespace

    from hybridprune.pruning.apply import PruneError
    from hybridprune.pruning.streaming import _kept_keys

    for model_type, converted in (("hrm_text", "model.layers.1.mlp.gate_up_proj.weight"),
                                  ("qwen3_vl_moe", "model.language_model.layers.1.mlp.experts.gate_up_proj")):
        keymap = KeyMap(model_type)
        assert keymap.needs_conversion(converted) and not keymap.sliceable(converted)
        files = SimpleNamespace(tensors={converted: None, "model.embed_tokens.weight": None})
        with pytest.raises(PruneError, match=r"converted by transformers on load .* --in-memory"):
            _kept_keys(files, keymap, ())
    jamba = KeyMap("jamba")
    assert jamba.stacked("model.layers.1.feed_forward.experts.2.down_proj.weight").index == 2
    up = jamba.stacked("model.layers.1.feed_forward.experts.2.up_proj.weight")
    assert (up.target, up.index, up.segment, up.segments, up.segment_dim) == (
        "model.layers.1.feed_forward.experts.gate_up_proj", 2, 1, 2, 1)


def test_the_styled_config_loads_as_the_pruned_config_under_the_sources_names():
    """Changed fields are written under the names the source uses (a cast to bfloat16 updates the
    legacy `torch_dtype`, no `dtype` is added), and the file loads as the pruned config."""
    from transformers import AutoConfig

    from hybridprune.architectures import get_adapter

    config = AutoConfig.for_model("nemotron_h").from_dict(dict(NEMOTRON_HUB))
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    new = adapter.make_config(config, dims.replace(hidden_size=32, block_kinds=dims.block_kinds[:5]))
    new.dtype = torch.bfloat16
    styled = styled_config(new, dict(NEMOTRON_HUB))
    changed = {k: (NEMOTRON_HUB.get(k), v) for k, v in styled.items() if NEMOTRON_HUB.get(k) != v}
    # `expand` follows the Mamba width where it is whole: 12 heads x 8 = 3 x 32
    assert changed == {"hidden_size": (48, 32), "hybrid_override_pattern": ("M-*-M-", "M-*-M"),
                       "num_hidden_layers": (6, 5), "torch_dtype": ("float32", "bfloat16"), "expand": (2, 3)}
    assert type(new).from_dict(styled).to_dict() | {"transformers_version": None} == new.to_dict() | {
        "transformers_version": None}


def test_a_config_that_cannot_keep_the_source_style_is_written_plainly_with_a_warning(tmp_path):
    """A change the source's legacy alias would override on load (here `mamba_n_groups`, which
    transformers reads over `n_groups`) cannot be written in the source's style: transformers' own
    style is written instead, and a warning says so. The file always loads as the pruned config."""
    from transformers import AutoConfig

    from hybridprune.checkpoint.config_style import write_config

    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "config.json").write_text(json.dumps(NEMOTRON_HUB))
    new = AutoConfig.from_pretrained(tmp_path / "source")
    new.n_groups = 6
    (tmp_path / "out").mkdir()
    with pytest.warns(UserWarning, match="could not be written in the style of .*config.json"):
        write_config(new, tmp_path / "out", tmp_path / "source")
    written = AutoConfig.from_pretrained(tmp_path / "out")
    raw = json.loads((tmp_path / "out" / "config.json").read_text())
    # transformers' field names (no source alias), with the layer pattern string engines read (for_engines)
    assert written.n_groups == 6 and raw["n_groups"] == 6 and "mamba_n_groups" not in raw
    assert raw["hybrid_override_pattern"] == "M-*-M-" and "layers_block_type" not in raw
