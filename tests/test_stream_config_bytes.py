"""The streaming prune writes the same files whether it reads the config without transformers or with it.

The view (`architectures.config_view`) stands for transformers' config class in the streaming prune: it
reads the source, `make_config` changes it and `config_style` writes it. The truth is the same prune with
the config read by `AutoConfig`: every file of the two outputs, config.json first, is the same byte for
byte, for Nemotron-H checkpoints as `save_pretrained` writes them and in the Hub's legacy layout (pattern
string, remote-code field names, bare Infinity, `torch_dtype`, multi-token-prediction layers), with and
without a cast, for Mamba2, and for a family the view does not read (both ways then go through
transformers).
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build, tiny_mamba2_config, tiny_nemotron_config
from hub_layouts import (
    GRANITE_HUB,
    NEMOTRON_HUB,
    NEMOTRON_MOE_HUB,
    hub_checkpoint,
    mtp_tensors,
)

from hybridprune.architectures.config_view import ConfigView
from hybridprune.importance.calibrate import calibrate
from hybridprune.pruning import streaming

NEMOTRON = "hidden_size=32,ffn_hidden_size=40,mamba_num_heads=6,mamba_head_dim=6,num_attention_heads=4,num_layers=5"
NEMOTRON_MOE = ("hidden_size=32,num_moe_experts=4,moe_ffn_hidden_size=8,moe_shared_expert_intermediate_size=16,"
                "mamba_num_heads=6,num_layers=5")
GRANITE = "hidden_size=24,ffn_hidden_size=40,mamba_num_heads=6,num_attention_heads=4,drop_layers=3"
MAMBA2 = "hidden_size=24,mamba_num_heads=6,num_layers=2"


def _saved(tmp_path, config):
    model = build(config)
    model.save_pretrained(tmp_path / "source", max_shard_size="20KB")
    return model


CASES = {
    "nemotron_saved": (lambda p: _saved(p, tiny_nemotron_config()), NEMOTRON, True),
    "nemotron_hub": (lambda p: hub_checkpoint(p / "source", dict(NEMOTRON_HUB)), NEMOTRON, True),
    "nemotron_moe_hub_mtp": (lambda p: hub_checkpoint(
        p / "source", dict(NEMOTRON_MOE_HUB, num_nextn_predict_layers=1, mtp_hybrid_override_pattern="*E"),
        extra=mtp_tensors(48)), NEMOTRON_MOE, True),
    "nemotron_dtype_field": (lambda p: _saved(p, tiny_nemotron_config(dtype="float32")), NEMOTRON, True),
    "granite_hub": (lambda p: hub_checkpoint(p / "source", dict(GRANITE_HUB)), GRANITE, False),
    "mamba2_saved": (lambda p: _saved(p, tiny_mamba2_config()), MAMBA2, True),
    "mamba2_tied_rank": (lambda p: _saved(p, tiny_mamba2_config(tie_word_embeddings=True, time_step_rank=5)), MAMBA2,
                         True),
}


def _files(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_streaming_prune_writes_the_same_bytes_with_the_view_as_with_transformers(case, dtype, tmp_path, tokens,
                                                                                   monkeypatch):
    from transformers import AutoConfig

    make, plan, viewed = CASES[case]
    model = make(tmp_path)
    scores = calibrate(model, tokens, batch_size=2, progress=False, depth_samples=2)
    read = []
    real_read = streaming.read_config
    monkeypatch.setattr(streaming, "read_config", lambda s: read.append(real_read(s)) or read[-1])
    view = streaming.stream_prune(tmp_path / "source", scores, plan, tmp_path / "view", dtype=dtype)
    assert isinstance(read[0], ConfigView) == viewed
    monkeypatch.setattr(streaming, "read_config", lambda s: AutoConfig.from_pretrained(s, trust_remote_code=False))
    plain = streaming.stream_prune(tmp_path / "source", scores, plan, tmp_path / "transformers", dtype=dtype)
    got, expected = _files(view), _files(plain)
    assert got["config.json"].decode() == expected["config.json"].decode()
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name] == expected[name], name
    config = json.loads(got["config.json"])
    assert config.get("dtype", config.get("torch_dtype")) == ("bfloat16" if dtype else "float32")
