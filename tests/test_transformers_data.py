"""The data read instead of importing transformers is the pinned transformers' own.

`scripts/transformers_data.py --check` regenerates `checkpoint/conversions.json` and
`architectures/config_defaults.json` from the installed transformers: a version that gives other data
fails here (rerun the script). The key renamings applied from the data rename every key as transformers'
own objects do.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from hybridprune.architectures import ADAPTERS
from hybridprune.checkpoint.conversions import Transform, conversions
from hybridprune.checkpoint.keymap import KeyMap

ROOT = Path(__file__).resolve().parents[1]
TYPES = sorted({t for a in ADAPTERS for t in a.model_types})


def _script():
    spec = importlib.util.spec_from_file_location("transformers_data", ROOT / "scripts" / "transformers_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_data_files_are_what_the_installed_transformers_gives(capsys):
    assert _script().main(["--check"]) == 0, capsys.readouterr().out


def _sample_keys(patterns: list[str]) -> list[str]:
    """Keys a pattern matches, and near misses, in the places checkpoints have them."""
    out = []
    for p in patterns:
        plain = re.sub(r"\(\?:.*?\)|\(\.\+\)|\^", "", p).replace("\\.", ".").replace("*", "3").replace("\\1", "x")
        for stem in (plain, plain.rstrip(".") + ".weight", plain + "_scale"):
            out += [stem, f"model.layers.1.{stem}", f"backbone.layers.0.{stem}", f"model.language_model.{stem}"]
    return out + ["model.embed_tokens.weight", "lm_head.weight", "backbone.embeddings.weight"]


@pytest.mark.parametrize("model_type", TYPES)
def test_renamings_from_the_data_rename_as_transformers_does(model_type):
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming

    data = conversions(model_type)
    mapping = get_checkpoint_conversion_mapping(model_type) or []
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    live = {"renamings": renamings, "reverse": [m.reverse_transform() for m in renamings[::-1]],
            "converters": [m for m in mapping if isinstance(m, WeightConverter)]}
    for part, theirs in live.items():
        ours = getattr(data, part)
        assert len(ours) == len(theirs)
        for mine, their in zip(ours, theirs):
            assert isinstance(mine, Transform)
            keys = _sample_keys([*their.source_patterns, *their.target_patterns])
            for key in keys:
                assert mine.rename_source_key(key) == their.rename_source_key(key), (part, key)
            assert any(mine.rename_source_key(key)[1] is not None for key in keys), (part, mine)  # it was tried
    if data.converters:
        assert [op for c in data.converters for op in c.operations] == [
            (type(op).__name__, getattr(op, "dim", None)) for c in live["converters"] for op in c.operations]


def test_a_model_type_without_data_is_read_from_transformers():
    keymap = KeyMap("hrm_text")  # not a supported type: no data, transformers' own mapping
    assert keymap.needs_conversion("model.layers.1.mlp.gate_up_proj.weight")


def test_another_transformers_version_reads_everything_from_transformers(monkeypatch):
    """Data written for another version is not used: the config is read, and keys renamed, by transformers."""
    from hub_layouts import NEMOTRON_HUB

    from hybridprune.architectures import config_data, config_view
    from hybridprune.architectures.config_read import view_config
    from hybridprune.architectures.config_view import legacy_layer_type
    from hybridprune.checkpoint import conversions as conversions_module

    for module in (config_data, config_view):  # what `data()` gives when the pinned version is not installed
        monkeypatch.setattr(module, "data", lambda: config_data._EMPTY)
    monkeypatch.setattr(conversions_module, "transformers_version", lambda: "0.0.0")
    assert view_config(dict(NEMOTRON_HUB)) is None
    assert legacy_layer_type("mamba") == "linear_attention"
    keymap = KeyMap("nemotron_h")
    assert keymap.model_key("backbone.layers.1.mixer.in_proj.weight") == "model.layers.1.mixer.in_proj.weight"
    assert keymap.stacked("backbone.layers.1.mixer.experts.3.up_proj.weight").index == 3
