"""Streaming prune (shard by shard, no model built) gives the same tensors as the in-memory prune."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import build, tiny_mamba2_config, tiny_nemotron_config
from hybridprune.checkpoint.files import CheckpointFiles
from hybridprune.checkpoint.fingerprint import checkpoint_fingerprint, model_fingerprint
from hybridprune.importance.calibrate import calibrate
from hybridprune.pruning.apply import prune
from hybridprune.pruning.export import export
from hybridprune.pruning.streaming import stream_prune

PLANS = {
    "nemotron": "hidden_size=32,ffn_hidden_size=40,mamba_num_heads=6,mamba_head_dim=6,num_attention_heads=4,num_layers=5",
    "mamba2": "hidden_size=24,mamba_num_heads=6,num_layers=2",
}


def all_tensors(directory):
    out = {}
    for path in sorted(directory.glob("*.safetensors")):
        out.update(load_file(str(path)))
    return out


def source_checkpoint(tmp_path, name, tied):
    config = tiny_nemotron_config() if name == "nemotron" else tiny_mamba2_config(tie_word_embeddings=tied)
    model = build(config)
    src = tmp_path / "source"
    model.save_pretrained(src, max_shard_size="20KB")  # several shards with an index
    (src / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    return model, src


@pytest.mark.parametrize("name, tied", [("nemotron", False), ("mamba2", True), ("mamba2", False)])
def test_streaming_equals_in_memory(tmp_path, tokens, name, tied):
    model, src = source_checkpoint(tmp_path, name, tied)
    files = CheckpointFiles(src)
    assert len(files.shards) > 2
    scores = calibrate(model, tokens, batch_size=2, progress=False, depth_samples=2)
    in_memory = prune(model, scores, PLANS[name])
    export(in_memory, tmp_path / "memory")  # the in-memory path's writer: the config as engines read it
    out = stream_prune(src, scores, PLANS[name], tmp_path / "stream", max_shard_bytes=30_000)

    expected, got = all_tensors(tmp_path / "memory"), all_tensors(out)
    assert sorted(got) == sorted(expected)  # the same keys, in the source's layout
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    assert (out / "model.safetensors.index.json").is_file()
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [2, 7]
    assert json.loads((out / "config.json").read_text()) == json.loads((tmp_path / "memory" / "config.json").read_text())
    info = json.loads((out / "hybridprune.json").read_text())
    assert info["method"] == "streaming" and info["parameters"]["after"] == sum(t.numel() for t in got.values())


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_streaming_in_small_blocks_from_many_threads_equals_in_memory(tmp_path, tokens, monkeypatch, dtype):
    """Tensors are split into blocks of rows (here ~300 bytes of source) that are cut, cast and written in
    pieces (~100 bytes), several blocks at once."""
    from hybridprune.pruning import stream_tensors, streaming

    monkeypatch.setattr(stream_tensors, "PIECE_BYTES", 100)
    monkeypatch.setattr(stream_tensors, "BLOCK_BYTES", 300)
    monkeypatch.setattr(streaming, "WORKERS", 3)
    model, src = source_checkpoint(tmp_path, "nemotron", False)
    scores = calibrate(model, tokens, batch_size=2, progress=False, depth_samples=2)
    prune(model, scores, PLANS["nemotron"]).save_pretrained(tmp_path / "memory")
    out = stream_prune(src, scores, PLANS["nemotron"], tmp_path / "stream", max_shard_bytes=30_000, dtype=dtype)
    expected, got = all_tensors(tmp_path / "memory"), all_tensors(out)
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key].to(dtype or expected[key].dtype)), key


def test_nemotron_keeps_the_hub_key_layout(tmp_path, tokens):
    model, src = source_checkpoint(tmp_path, "nemotron", False)
    scores = calibrate(model, tokens, batch_size=2, progress=False, depth_samples=2)
    out = stream_prune(src, scores, PLANS["nemotron"], tmp_path / "stream")
    keys = list(all_tensors(out))
    assert all(k.startswith(("backbone.", "lm_head.")) for k in keys)
    assert "backbone.layers.4.norm.weight" in keys and "backbone.layers.5.norm.weight" not in keys


def test_a_checkpoint_fingerprint_equals_the_loaded_models(tmp_path):
    for name, tied in (("nemotron", False), ("mamba2", True)):
        model, src = source_checkpoint(tmp_path / name, name, tied)
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(src)
        assert checkpoint_fingerprint(CheckpointFiles(src), loaded.config) == model_fingerprint(loaded) == model_fingerprint(model)
        with torch.no_grad():
            next(model.parameters()).view(-1)[0] += 1.0
        assert model_fingerprint(model) != model_fingerprint(loaded)


def test_a_bfloat16_checkpoint_loaded_in_float32_keeps_its_fingerprint(tmp_path):
    from transformers import AutoModelForCausalLM

    model = build(tiny_nemotron_config()).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype=torch.float32)
    assert checkpoint_fingerprint(CheckpointFiles(tmp_path / "bf16"), loaded.config) == model_fingerprint(loaded)


def test_cli_streams_by_default_and_smoke_tests_on_request(tmp_path, tokens):
    from typer.testing import CliRunner

    from hybridprune.cli import app

    model, src = source_checkpoint(tmp_path, "nemotron", False)
    calibrate(model, tokens, batch_size=2, progress=False, depth_samples=2).save(tmp_path / "scores")
    args = ["prune", "--model", str(src), "--scores", str(tmp_path / "scores"), "--plan", PLANS["nemotron"]]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a"), "--smoke-test"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "a" / "hybridprune.json").read_text())["method"] == "streaming"
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b"), "--in-memory"])
    assert result.exit_code == 0, result.output
    a, b = all_tensors(tmp_path / "a"), all_tensors(tmp_path / "b")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_calibration_offloaded_to_cpu_and_disk_equals_unsplit(tmp_path, tokens):
    """accelerate's big-model dispatch (`device_map` with disk offload): the hooks see the same
    activations wherever a layer lives, so the scores are the same."""
    from transformers import AutoModelForCausalLM

    model, src = source_checkpoint(tmp_path, "nemotron", False)
    reference = calibrate(model, tokens, batch_size=2, progress=False, depth_samples=2)
    device_map = {"model.embeddings": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                  "model.layers.2": "cpu", "model.layers.3": "disk", "model.layers.4": "disk",
                  "model.layers.5": "cpu", "model.norm_f": "cpu", "lm_head": "disk"}
    offloaded = AutoModelForCausalLM.from_pretrained(src, device_map=device_map, offload_folder=tmp_path / "offload")
    assert any(p.is_meta for p in offloaded.parameters())
    scores = calibrate(offloaded, tokens, batch_size=2, progress=False, depth_samples=2)
    for name in ("mamba", "ffn", "attention"):
        for i, t in getattr(reference, name).items():
            torch.testing.assert_close(getattr(scores, name)[i], t, rtol=1e-5, atol=1e-6)
    for name in ("hidden", "depth_kld", "depth_bi"):
        torch.testing.assert_close(getattr(scores, name), getattr(reference, name), rtol=1e-5, atol=1e-6)
    assert scores.meta["fingerprint"] == reference.meta["fingerprint"]


def test_calibrate_cli_with_a_device_map_gives_the_same_scores(tmp_path):
    from typer.testing import CliRunner

    from ckpt_helpers import save_checkpoint, small_corpus
    from hybridprune.cli import app
    from hybridprune.importance.scores import Scores

    src = save_checkpoint(tmp_path / "model")
    data = small_corpus(tmp_path / "corpus.jsonl")
    args = ["calibrate", "--model", str(src), "--data", str(data), "--samples", "4", "--seq-len", "16",
            "--depth-samples", "2", "--dtype", "float32"]
    for name, extra in (("plain", []), ("mapped", ["--device-map", "auto"])):
        result = CliRunner().invoke(app, [*args, *extra, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    plain, mapped = Scores.load(tmp_path / "plain"), Scores.load(tmp_path / "mapped")
    for key, t in plain.tensors().items():
        torch.testing.assert_close(mapped.tensors()[key], t)
    assert mapped.meta["fingerprint"] == plain.meta["fingerprint"]


def test_scores_of_another_model_are_a_one_line_warning(tmp_path, tokens):
    """Not Python's `file:line: UserWarning` with a source excerpt: one line the user can read."""
    from typer.testing import CliRunner

    from hybridprune.cli import app

    model, src = source_checkpoint(tmp_path, "nemotron", False)
    other = build(tiny_nemotron_config(), seed=5)
    calibrate(other, tokens, batch_size=2, progress=False, depth_samples=2).save(tmp_path / "scores")
    result = CliRunner().invoke(app, ["prune", "--model", str(src), "--scores", str(tmp_path / "scores"),
                                      "--plan", "mamba_num_heads=6", "--out", str(tmp_path / "pruned")])
    text = " ".join(result.output.split())
    assert result.exit_code == 0, text
    assert "warning: the scores were computed on a different model (fingerprint mismatch)" in text
    assert "UserWarning" not in text
    result = CliRunner().invoke(app, ["prune", "--model", str(src), "--scores", str(tmp_path / "scores"),
                                      "--plan", "mamba_num_heads=6", "--out", str(tmp_path / "strict"),
                                      "--strict-fingerprint"])
    assert result.exit_code == 2 and "fingerprint mismatch" in result.output
    assert not (tmp_path / "strict").exists()
