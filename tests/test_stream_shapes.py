"""The streaming prune checks its output against the shapes the adapters' layouts give for the new config
(`Adapter.expected_shapes`), without building a model: for every family of the shared battery, and the
configs of its plans, those shapes are exactly the state dict of a model built from the config."""

from __future__ import annotations

import pytest
import torch

from families import FAMILIES, tiny_config
from hybridprune.architectures import get_adapter
from hybridprune.pruning.plan import Plan


def built_shapes(adapter, config):
    """The independent truth: a model built on the meta device, less the keys tied to another."""
    with torch.device("meta"):
        model = adapter.build_model(config)
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in tied}, tied


def configs(name):
    """The family's tiny config and the config of each of its plans."""
    config = tiny_config(name)
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    yield "source", config
    for raw in FAMILIES[name].plans:
        plan = Plan.parse(dict(raw))
        kept = [i for i in range(dims.num_layers) if i not in (raw.get("drop_layers") or ())]
        yield str(raw), adapter.make_config(config, plan.target_dims(dims, kept))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_layout_shapes_equal_a_built_model(name):
    for label, config in configs(name):
        adapter = get_adapter(config)
        expected, tied = adapter.expected_shapes(config)
        built, built_tied = built_shapes(adapter, config)
        assert sorted(set(built) - set(expected)) == [], (label, "missing from the layouts")
        assert sorted(set(expected) - set(built)) == [], (label, "not in the model")
        assert {k: s for k, s in expected.items() if s != built[k]} == {}, label
        assert tied == built_tied, label


@pytest.mark.parametrize("attention_adapters", [True, False])
def test_zamba2_shared_blocks_and_their_call_sites_adapters(attention_adapters):
    """Two shared blocks called by three layers: each block's tensors under its first caller, with the
    adapters of every call site that uses it; the later caller's names are tied."""
    config = tiny_config("zamba2", num_mem_blocks=2, use_shared_attention_adapter=attention_adapters,
                         add_bias_linear=not attention_adapters,
                         layers_block_type=["hybrid", "mamba", "hybrid", "hybrid", "mamba"])
    adapter = get_adapter(config)
    expected, tied = adapter.expected_shapes(config)
    assert (expected, tied) == built_shapes(adapter, config)


def output_digest(directory) -> str:
    """One hash of the files that carry the weights and the config (the provenance files name paths)."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        if path.suffix == ".safetensors" or path.name in ("model.safetensors.index.json", "config.json"):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


#: the streamed output's bytes, as the streaming prune wrote them when its check still built a model
PINNED = {
    "nemotron_h_moe-keep": "b3d9f4f282cff7d04667fd4c334dc5cd868c73d2f2b71db5d780b1bc34a50a50",
    "nemotron_h_moe-bfloat16": "8a423b2f40aec26436087730ae4fd0d6083100052236347155d989fdfc198d5e",
}


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_streamed_bytes_are_pinned(tmp_path, dtype):
    """A streaming prune of a MoE hybrid in the Hub's layout (per-expert tensors), over several shards,
    writes exactly the bytes it wrote before its output check stopped building a model."""
    from conftest import build
    from hybridprune.importance.calibrate import calibrate
    from hybridprune.pruning.streaming import stream_prune

    model = build(tiny_config("nemotron_h_moe"))
    model.save_pretrained(tmp_path / "source", max_shard_size="20KB")
    tokens = torch.randint(3, 96, (4, 12), generator=torch.Generator().manual_seed(1))
    scores = calibrate(model, tokens, batch_size=2, progress=False, depth_samples=2)
    plan = dict(num_moe_experts=6, moe_ffn_hidden_size=8, hidden_size=32, mamba_num_heads=6, drop_layers=[4])
    out = stream_prune(tmp_path / "source", scores, plan, tmp_path / "out", max_shard_bytes=30_000, dtype=dtype)
    assert len(list(out.glob("*.safetensors"))) > 2
    digest = output_digest(out)
    assert digest == PINNED[f"nemotron_h_moe-{'keep' if dtype is None else 'bfloat16'}"]


#: config switches that add or remove tensors, beyond the battery's configs
VARIANTS = [
    ("nemotron_h", dict(use_bias=True, use_conv_bias=False, mlp_bias=True)),
    ("mamba2", dict(use_bias=True, use_conv_bias=False, tie_word_embeddings=True)),
    ("bamba", dict(attention_bias=True, mlp_bias=True, mamba_proj_bias=True, mamba_conv_bias=False)),
    ("falcon_h1", dict(mamba_rms_norm=False, projectors_bias=True, attention_bias=True, mlp_bias=True)),
    ("kimi_linear", dict(q_lora_rank=12, attention_bias=True)),
    ("lfm2", dict(conv_bias=True, tie_word_embeddings=False)),
    ("qwen3", dict(attention_bias=True, tie_word_embeddings=True)),
    ("granitemoehybrid", dict(attention_bias=True, mlp_bias=True, mamba_proj_bias=True)),
]


@pytest.mark.parametrize("name, overrides", VARIANTS, ids=[name for name, _ in VARIANTS])
def test_layout_shapes_follow_the_configs_switches(name, overrides):
    config = tiny_config(name, **overrides)
    adapter = get_adapter(config)
    assert adapter.expected_shapes(config) == built_shapes(adapter, config)
