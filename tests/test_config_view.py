"""The transformers-free config view (`architectures.config_view`) against transformers' own config.

The independent truth is transformers' config class, loaded from the same config.json: for every family's
tiny configs and Hub-layout configs of the tests, and variants with optional keys left out or spelled the
Hub's legacy way, the view gives every field transformers' `to_dict` gives, every alias and computed name,
every attribute the adapter reads (recorded while the adapter reads transformers' config), and the same
`dims`, dropped parts and expected shapes. A model type the view cannot read exactly is read by transformers.
"""

from __future__ import annotations

import json

import pytest
from conftest import tiny_config
from hub_layouts import (
    GRANITE_HUB,
    KIMI_HUB,
    NEMOTRON_HUB,
    NEMOTRON_LATENT_HUB,
    NEMOTRON_MOE_HUB,
    OLMO_HYBRID_HUB,
)

from hybridprune.architectures import ADAPTERS, get_adapter
from hybridprune.architectures.config_data import entry
from hybridprune.architectures.config_read import read_config
from hybridprune.architectures.config_read import view_config as view_of
from hybridprune.architectures.config_view import ConfigView
from hybridprune.checkpoint.config_style import _fields, _normal

FAMILIES = ["nemotron_h", "nemotron_h_moe", "nemotron_h_moe_latent", "mamba2", "bamba", "granitemoehybrid",
            "granitemoehybrid_moe", "falcon_h1", "zamba2", "llama", "mistral", "qwen2", "qwen3", "lfm2", "lfm2_moe",
            "lfm3", "kimi_linear", "olmo_hybrid", "qwen3_5_text", "qwen3_5_moe_text", "qwen3_next", "qwen3_5"]
HUB = {"nemotron_hub": NEMOTRON_HUB, "nemotron_moe_hub": NEMOTRON_MOE_HUB, "nemotron_latent_hub": NEMOTRON_LATENT_HUB,
       "granite_hub": GRANITE_HUB, "kimi_hub": KIMI_HUB, "olmo_hybrid_hub": OLMO_HYBRID_HUB}
#: keys a Nemotron-H config.json may leave out (the class default applies) or spell the legacy way
_OPTIONAL = ["conv_kernel", "chunk_size", "expand", "time_step_limit", "head_dim", "num_key_value_heads",
             "use_conv_bias", "use_bias", "mlp_bias", "tie_word_embeddings", "torch_dtype", "n_groups",
             "mamba_n_groups", "hybrid_override_pattern", "num_hidden_layers", "layers_block_type"]


def _raw_of(config, tmp_path) -> dict:
    config.save_pretrained(tmp_path)
    return json.loads((tmp_path / "config.json").read_text())


def _real(raw: dict, tmp_path):
    from transformers import AutoConfig

    (tmp_path / "config.json").write_text(json.dumps(raw))
    return AutoConfig.from_pretrained(tmp_path, trust_remote_code=False)


class _Recorder:
    """A config that records the names read from it (adapters read attributes, never items)."""

    def __init__(self, config) -> None:
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "read", [])

    def __getattr__(self, name):
        self.read.append(name)
        return getattr(self._config, name)


def _value(config, name):
    """The attribute as JSON holds it (the view keeps dtypes as their names, as config.json does)."""
    try:
        return ("value", _normal(getattr(config, name)))
    except AttributeError:
        return ("missing", None)


def check_view(raw: dict, tmp_path) -> str:
    """Assert the view of `raw` reads as transformers' config does: "viewed"; or that there is no view of a
    config transformers refuses: "refused"; "unviewed" where the view leaves a config to transformers."""
    view = view_of(raw)
    try:
        real = _real(raw, tmp_path)
    except Exception:  # noqa: BLE001 - transformers refuses it: the view must not accept it
        assert view is None
        return "refused"
    if view is None:
        return "unviewed"
    assert _fields(view) == _fields(real)
    spec = entry(raw["model_type"])
    for name in [*spec["attribute_map"], *spec["properties"], "torch_dtype", "num_labels"]:
        assert _value(view, name) == _value(real, name), name
    recorder = _Recorder(real)
    adapter = get_adapter(recorder)
    adapter.dims(recorder), adapter.dropped_parts(recorder), adapter.expected_shapes(recorder)
    adapter.text_config(recorder), adapter.check_config(recorder)
    assert recorder.read
    for name in set(recorder.read):
        assert _value(view, name) == _value(real, name), name
    adapter = get_adapter(view)
    assert adapter.dims(view) == get_adapter(real).dims(real)
    assert adapter.dropped_parts(view) == adapter.dropped_parts(real)
    assert adapter.expected_shapes(view) == adapter.expected_shapes(real)
    return "viewed"


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_configs_read_as_transformers_reads_them(family, tmp_path):
    raw = _raw_of(tiny_config(family), tmp_path)
    outcome = check_view(raw, tmp_path)
    assert (outcome == "viewed") == any(raw["model_type"] in a.model_types and a.config_view_rules for a in ADAPTERS)


@pytest.mark.parametrize("name", sorted(HUB))
def test_hub_layout_configs_read_as_transformers_reads_them(name, tmp_path):
    raw = dict(HUB[name])
    outcome = check_view(raw, tmp_path)
    assert (outcome == "viewed") == (raw["model_type"] in ("nemotron_h", "mamba2"))


@pytest.mark.parametrize("key", _OPTIONAL)
def test_a_nemotron_config_without_an_optional_key_reads_as_transformers_reads_it(key, tmp_path):
    for base in (NEMOTRON_HUB, NEMOTRON_MOE_HUB, _raw_of(tiny_config("nemotron_h"), tmp_path)):
        raw = {k: v for k, v in base.items() if k != key}
        if "hybrid_override_pattern" not in raw and "layers_block_type" not in raw:
            raw["layer_types"] = ["mamba", "attention", "mlp", "moe"]  # the alias and the legacy names
        assert check_view(raw, tmp_path) == "viewed"


@pytest.mark.parametrize("key", ["time_step_rank", "expand", "n_groups", "tie_word_embeddings", "use_bias",
                                 "conv_kernel", "head_dim", "num_hidden_layers", "torch_dtype", "dtype"])
def test_a_mamba2_config_without_an_optional_key_reads_as_transformers_reads_it(key, tmp_path):
    saved = _raw_of(tiny_config("mamba2"), tmp_path)
    for base in (saved, dict(saved, time_step_rank="auto", torch_dtype="bfloat16")):
        # without head_dim (default 64), the mixer's sizes disagree: refused by both
        assert check_view({k: v for k, v in base.items() if k != key}, tmp_path) == (
            "refused" if key == "head_dim" else "viewed")
    # a computed name (no setter) in the file: transformers refuses it, so does the view
    assert check_view(dict(saved, layer_types=["mamba"] * 3), tmp_path) == "refused"


def test_legacy_names_and_mtp_fields_read_as_transformers_reads_them(tmp_path):
    raw = dict(NEMOTRON_MOE_HUB, mamba_d_conv=3, mamba_expand=4, mamba_dt_limit=[0.0, 1e9], mamba_chunk_size=16,
               mamba_conv_bias=False, num_nextn_predict_layers=1, mtp_hybrid_override_pattern="*E",
               layers_block_type=None, num_local_experts=8, temperature=0.7, id2label={"0": "a"}, num_labels=1)
    assert check_view(raw, tmp_path) == "viewed"
    assert check_view(dict(raw, mtp_layers_block_type=["attention", "moe"], torch_dtype="bfloat16",
                           dtype="float16"), tmp_path) == "viewed"


@pytest.mark.parametrize("edit", [{"hidden_size": 48.0}, {"num_key_value_heads": None}, {"use_bias": 1},
                                  {"hybrid_override_pattern": "M-X"}, {"layers_block_type": ["mamba", "ffn"]},
                                  {"time_step_limit": [0, 1]}, {"num_hidden_layers": 6, "vocab_size": "96"}])
def test_a_config_transformers_refuses_is_left_to_transformers(edit, tmp_path):
    """Wrong types (the strict dataclass's checks) and the class's own validators: no view, so the
    prune meets transformers' own error."""
    assert check_view(dict(NEMOTRON_HUB, **edit), tmp_path) == "refused"


def test_make_config_of_the_view_equals_make_config_of_transformers(tmp_path):
    for raw in (NEMOTRON_HUB, NEMOTRON_MOE_HUB, _raw_of(tiny_config("nemotron_h_moe_latent"), tmp_path)):
        view, real = view_of(dict(raw)), _real(dict(raw), tmp_path)
        adapter = get_adapter(view)
        dims = adapter.dims(view)
        new_dims = dims.replace(hidden_size=32, block_kinds=dims.block_kinds[:4],
                                mamba_num_heads=6 if dims.mamba_num_heads else None)
        new_view, new_real = adapter.make_config(view, new_dims), adapter.make_config(real, new_dims)
        assert isinstance(new_view, ConfigView)
        assert _fields(new_view) == _fields(new_real)
        assert adapter.dims(new_view) == adapter.dims(new_real)
        assert adapter.dims(new_view).block_kinds == new_dims.block_kinds


def test_types_the_view_cannot_read_exactly_are_read_by_transformers(tmp_path):
    from transformers import PreTrainedConfig

    for raw in (_raw_of(tiny_config("qwen3_5"), tmp_path), dict(NEMOTRON_HUB, rope_theta=10000.0),
                dict(NEMOTRON_HUB, _name_or_path="x"), dict(NEMOTRON_HUB, name_or_path="x"),
                dict(NEMOTRON_HUB, use_return_dict=False), {"model_type": "not_a_model"}):
        assert view_of(raw) is None
    (tmp_path / "config.json").write_text(json.dumps(_raw_of(tiny_config("qwen3_5"), tmp_path)))
    assert isinstance(read_config(tmp_path), PreTrainedConfig)
    (tmp_path / "config.json").write_text(json.dumps(NEMOTRON_HUB))
    assert isinstance(read_config(tmp_path), ConfigView)
