"""The streaming prune checks its output against the shapes the adapters' layouts give for the new config
(`Adapter.expected_shapes`), without building a model: for every family of the shared battery, and the
configs of its plans, those shapes are exactly the state dict of a model built from the config."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from test_families import FAMILIES
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
    for raw in FAMILIES[name][0]:
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
