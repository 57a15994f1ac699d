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
    # vLLM 0.32.0 runs OLMo 2 / 3 on its Transformers backend, which reads head_dim (registry.py:723-724)
    ("olmo2", {"num_attention_heads": 4}, 1, None),
    ("olmo3", {"hidden_size": 40}, 1, None),
    ("olmo2", {}, 4, "vllm/model_executor/layers/linear.py:1052 (QKVParallelLinear)"),  # 6 heads
    ("olmo3", {"num_attention_heads": 4, "hidden_size": 32}, 2, None),
    ("granite", {"num_attention_heads": 4}, 1, None),  # vLLM reads head_dim
    ("seed_oss", {"ffn_hidden_size": 60}, 8, "vllm/model_executor/layers/linear.py:499"),
    ("nemotron", {}, 4, "vllm/model_executor/layers/linear.py:1052 (QKVParallelLinear)"),
    ("phi3", {"hidden_size": 40}, 1, None),
])
def test_engine_rules_of_dense_families(family, changes, tp, source):
    from serving_helpers import dims_of, sources

    adapter, _, dims = dims_of(family, **changes)
    found = sources(adapter.model_type, dims, ("vllm",), tp)
    assert found == [] if source is None else any(source in f for f in found), found


@pytest.mark.parametrize("family, changes, source", [
    ("granite", {"num_attention_heads": 4}, "conversion/granite.py:33"),
    ("granite", {"num_attention_heads": 4, "hidden_size": 32}, None),
    ("phi3", {"hidden_size": 40}, "conversion/phi.py:156"),
    ("phi3", {}, None),
    ("seed_oss", {"num_attention_heads": 4}, None),
    # OLMo 2 / 3, Nemotron: query hidden_size wide (4 heads x 8 = 32 != 48; 6 x 8 != 40)
    ("olmo2", {"num_attention_heads": 4}, "src/models/olmo2.cpp:30, 41-43"),
    ("olmo3", {"hidden_size": 40}, "src/models/olmo2.cpp:30, 41-43"),
    ("olmo3", {"num_attention_heads": 4, "hidden_size": 32}, None),
    ("nemotron", {"num_attention_heads": 4}, "src/models/nemotron.cpp:28-29"),
    ("nemotron", {}, None),
])
def test_llama_cpp_head_size_rules_of_granite_and_phi3(family, changes, source):
    """llama.cpp's Granite and Phi-3 converters, and its OLMo 2 / 3 and Nemotron graphs, size heads as
    hidden_size / num_attention_heads."""
    from serving_helpers import dims_of, sources

    adapter, _, dims = dims_of(family, **changes)
    found = sources(adapter.model_type, dims, ("llama.cpp",), 1)
    assert found == [] if source is None else any(source in f for f in found), found


def test_the_gemma3_wrapper_is_refused_with_the_reason():
    from transformers import AutoConfig

    from hybridprune.architectures import UnsupportedArchitecture, supported_model_types

    config = AutoConfig.for_model("gemma3")
    with pytest.raises(UnsupportedArchitecture, match="mm_input_projection_weight.*Prune a text-only gemma3_text"):
        get_adapter(config)
    assert "gemma3" not in supported_model_types() and "gemma3_text" in supported_model_types()


# ---- Gemma 3's soft caps ---------------------------------------------------------------------------------
def test_gemma3_final_logit_softcapping_is_refused_with_the_reason():
    """The forward caps the logits (cap · tanh(z / cap)); the distillation rebuilds them as head · logit_scale, a
    linear factor that cannot say it: such a config is refused, naming the field and why."""
    from hybridprune.architectures import UnsupportedArchitecture
    from hybridprune.distillation.models import final_hidden

    config = tiny_config("gemma3_text", final_logit_softcapping=0.1)
    with pytest.raises(UnsupportedArchitecture, match="final_logit_softcapping=0.1.*LM head in chunks"):
        get_adapter(config)
    model = build(config)
    ids = torch.arange(3, 15).unsqueeze(0)
    with torch.no_grad():
        z = model.lm_head(final_hidden(model, ids, None))
    torch.testing.assert_close(_logits(model, ids), 0.1 * torch.tanh(z / 0.1))  # what the forward computes
    assert not torch.allclose(_logits(model, ids), z)  # and what a head · scale rebuild would not
    get_adapter(tiny_config("gemma3_text"))  # null, as on the Hub: accepted


def test_gemma3_attention_softcap_is_inert_and_carried(tmp_path, tokens):
    """transformers 5.24's Gemma3Attention does not pass `attn_logit_softcapping` to its attention function: the
    same weights give the same logits with and without it, so pruning has nothing to keep but the field itself."""
    from hybridprune import calibrate, prune

    model = build(tiny_config("gemma3_text", attn_logit_softcapping=0.05))
    plain = build(tiny_config("gemma3_text"))
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(_logits(model, tokens[:2]), _logits(plain, tokens[:2]))
    pruned = prune(model, calibrate(model, tokens, progress=False), "num_attention_heads=4,hidden_size=40")
    assert pruned.config.attn_logit_softcapping == 0.05


# ---- Granite, Seed-OSS, Nemotron, Phi-3 -----------------------------------------------------------------------
def test_granite_hub_layout_round_trips_with_its_multipliers(tmp_path, tokens):
    """Granite-3.3's layout: hidden, FFN, heads and depth in both paths; the µP multipliers are written unchanged
    and the logit scale the distillation applies is 1 / logits_scaling of the output."""
    from hub_layouts import GRANITE_DENSE_HUB

    src = tmp_path / "source"
    hub_checkpoint(src, GRANITE_DENSE_HUB)
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, "hidden_size=36,ffn_hidden_size=40,"
                                                                           "num_attention_heads=4,drop_layers=1")
    assert ours == []
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    assert "lm_head.weight" not in tensors and tensors["model.layers.0.self_attn.q_proj.weight"].shape == (32, 36)
    for out in (memory, stream):
        config = _config(out)
        assert (config["hidden_size"], config["num_attention_heads"], config["head_dim"]) == (36, 4, 8)
        for k in ("embedding_multiplier", "residual_multiplier", "attention_multiplier", "logits_scaling"):
            assert config[k] == GRANITE_DENSE_HUB[k]
    assert get_adapter(pruned).logit_scale(pruned.config) == 1 / 8.0


def test_seed_oss_hub_layout_round_trips(tmp_path, tokens):
    """Seed-OSS's layout: q/k/v biases cut with their heads, no o_proj bias (attention_out_bias false), head_dim
    16 kept over a hidden size of 32."""
    from hub_layouts import SEED_OSS_HUB

    src = tmp_path / "source"
    hub_checkpoint(src, SEED_OSS_HUB)
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, "hidden_size=32,ffn_hidden_size=40,"
                                                                           "num_attention_heads=4,drop_layers=2")
    assert ours == []
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    assert tensors["model.layers.0.self_attn.q_proj.bias"].shape == (64,)
    assert tensors["model.layers.0.self_attn.k_proj.bias"].shape == (32,)
    assert "model.layers.0.self_attn.o_proj.bias" not in tensors
    for out in (memory, stream):
        config = _config(out)
        assert (config["hidden_size"], config["num_attention_heads"], config["head_dim"]) == (32, 4, 16)
        assert config["attention_out_bias"] is False


def test_seed_oss_output_bias_is_its_own_flag(tokens):
    """attention_out_bias alone gives o_proj a bias (hidden-wide, cut by hidden), counted exactly."""
    from hybridprune import calibrate, prune

    model = build(tiny_config("seed_oss", attention_bias=False, attention_out_bias=True))
    assert model.model.layers[0].self_attn.o_proj.bias is not None and model.model.layers[0].self_attn.q_proj.bias is None
    pruned = prune(model, calibrate(model, tokens, progress=False), "hidden_size=40")
    assert pruned.model.layers[0].self_attn.o_proj.bias.shape == (40,)
    adapter = get_adapter(pruned)
    assert adapter.num_parameters(adapter.dims(pruned.config)) == sum(p.numel() for p in pruned.parameters())


def test_nemotron_hub_layout_round_trips_with_norm_biases(tmp_path, tokens):
    """Minitron's layout: the LayerNorm1P biases (every layer's and `model.norm.bias`) are cut with the hidden
    channels, the squared-ReLU MLP by its neurons, and partial rotary stays half of head_dim 16."""
    from hub_layouts import NEMOTRON_DENSE_HUB

    src = tmp_path / "source"
    hub_checkpoint(src, NEMOTRON_DENSE_HUB)
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, "hidden_size=40,ffn_hidden_size=40,"
                                                                           "num_attention_heads=4,drop_layers=1")
    assert ours == []
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    assert tensors["model.norm.bias"].shape == tensors["model.layers.1.input_layernorm.bias"].shape == (40,)
    assert tensors["model.layers.1.mlp.up_proj.weight"].shape == (40, 40)
    assert tensors["model.layers.1.self_attn.q_proj.weight"].shape == (64, 40)
    for out in (memory, stream):
        config = _config(out)
        assert (config["hidden_size"], config["num_attention_heads"], config["head_dim"]) == (40, 4, 16)
        assert config["partial_rotary_factor"] == 0.5 and config["hidden_act"] == "relu2"


def test_nemotron_final_norm_bias_is_kept_channelwise(tokens):
    """The pruned final norm's bias is the source's at the kept hidden channels (the same ones as its weight)."""
    from hybridprune import calibrate, prune

    model = build(tiny_config("nemotron"))
    with torch.no_grad():
        model.model.norm.bias.copy_(torch.arange(48.0))
        model.model.norm.weight.copy_(torch.arange(48.0) * 10)
    pruned = prune(model, calibrate(model, tokens, progress=False), "hidden_size=36")
    kept = pruned.model.norm.bias.long()
    assert len(set(kept.tolist())) == 36
    torch.testing.assert_close(pruned.model.norm.weight, kept.float() * 10)


def test_phi3_hub_layout_round_trips_with_longrope(tmp_path, tokens):
    """Phi-4-mini's layout: the fused qkv_proj keeps the kept query heads' rows and every K and V row, the fused
    gate_up_proj its neurons' gate and up rows; with LongRoPE, hidden and heads prune together keeping
    hidden_size // num_attention_heads = head_dim (Phi3Config checks the factors' length against it)."""
    from hub_layouts import PHI3_HUB

    src = tmp_path / "source"
    source = hub_checkpoint(src, PHI3_HUB)
    pruned, memory, stream, ours = prune_both_ways(tmp_path, src, tokens, "hidden_size=32,ffn_hidden_size=40,"
                                                                           "num_attention_heads=4,drop_layers=1")
    assert ours == []
    tensors = check_round_trip(pruned, (memory, stream), tokens)
    assert tensors["model.layers.0.self_attn.qkv_proj.weight"].shape == (32 + 2 * 16, 32)
    assert tensors["model.layers.0.mlp.gate_up_proj.weight"].shape == (80, 32)
    # the K and V rows are the source's, at the kept hidden columns
    qkv = source.model.layers[0].self_attn.qkv_proj.weight
    kept_cols = [int(i) for i in torch.nonzero(torch.isin(source.model.embed_tokens.weight[5],
                                                          pruned.model.embed_tokens.weight[5])).flatten()]
    torch.testing.assert_close(tensors["model.layers.0.self_attn.qkv_proj.weight"][32:].float(),
                               qkv[48:][:, kept_cols].float())
    for out in (memory, stream):
        config = _config(out)
        assert (config["hidden_size"], config["num_attention_heads"]) == (32, 4)
        assert config["rope_scaling"]["short_factor"] == PHI3_HUB["rope_scaling"]["short_factor"]


def test_phi3_longrope_refuses_heads_without_hidden_with_the_valid_values():
    from hybridprune.architectures import Unrepresentable
    from hub_layouts import PHI3_HUB
    from transformers import AutoConfig

    config = AutoConfig.for_model("phi3", **{k: v for k, v in PHI3_HUB.items() if k not in ("architectures",
                                                                                             "model_type")})
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    with pytest.raises(Unrepresentable, match=r"LongRoPE.*num_attention_heads in \[6\].*hidden_size in \[32, 33"):
        adapter.check_representable(dims.replace(num_attention_heads=4), dims)
    adapter.check_representable(dims.replace(num_attention_heads=4, hidden_size=32), dims)
    plain = AutoConfig.for_model("phi3", hidden_size=48, num_attention_heads=6, num_key_value_heads=2)
    get_adapter(plain).check_representable(get_adapter(plain).dims(plain).replace(num_attention_heads=4))
