"""Qwen3.5's vision-language wrapper through the command line: calibrate (on the language model, as
`AutoModelForCausalLM` loads it), prune streaming and in memory, and the output is again the wrapper:
the same class, the vision tower carried (its merger's last projection cut to the kept hidden
channels), the processor and chat-template files carried byte for byte, and the language model's
logits those of the in-memory pruned model. A text-only checkpoint stays text-only."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import build, tiny_config
from hybridprune.cli import app

PLAN = "linear_num_value_heads=4,linear_key_head_dim=4,num_attention_heads=4,hidden_size=32,drop_layers=3"
CARRIED = {"preprocessor_config.json": '{"image_processor_type": "Qwen2VLImageProcessor"}\n',
           "chat_template.jinja": "{% for m in messages %}{{ m.content }}{% endfor %}\n"}


@pytest.fixture(scope="module")
def wrapped(tmp_path_factory):
    from hybridprune.data import tokenizer_path
    from hybridprune.pruning.export import copy_tokenizer_files

    root = tmp_path_factory.mktemp("vl")
    model = build(tiny_config("qwen3_5", vocab_size=4096))
    model.save_pretrained(root / "model")
    copy_tokenizer_files(tokenizer_path(), root / "model")
    for name, text in CARRIED.items():
        (root / "model" / name).write_text(text)
    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", "--model", str(root / "model"), "--data", "shakespeare", "--samples", "4",
                                 "--seq-len", "16", "--batch-size", "2", "--out", str(root / "scores")])
    assert result.exit_code == 0, result.output
    return root, model


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.mark.parametrize("mode", ["streaming", "in-memory"])
def test_a_pruned_wrapper_is_the_wrapper_with_its_vision_tower(wrapped, mode):
    from transformers import AutoModelForCausalLM, Qwen3_5ForConditionalGeneration

    root, model = wrapped
    out = root / f"pruned-{mode}"
    args = ["prune", "--model", str(root / "model"), "--scores", str(root / "scores"), "--plan", PLAN, "--out", str(out)]
    result = CliRunner().invoke(app, args + (["--in-memory"] if mode == "in-memory" else []))
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "qwen3_5" and config["architectures"] == ["Qwen3_5ForConditionalGeneration"]
    assert config["vision_config"]["out_hidden_size"] == 32 and config["text_config"]["hidden_size"] == 32
    assert config["text_config"]["layer_types"] == ["linear_attention", "full_attention", "linear_attention"]
    for name, text in CARRIED.items():
        assert (out / name).read_text() == text
    source = load_file(str(root / "model" / "model.safetensors"))
    written = {}
    for shard in out.glob("*.safetensors"):
        written.update(load_file(str(shard)))
    kept = torch.tensor(json.loads((out / "hybridprune.json").read_text())["dims_after"]["hidden_size"])
    assert int(kept) == 32
    visual = sorted(k for k in source if k.startswith("model.visual."))
    assert visual == sorted(k for k in written if k.startswith("model.visual."))
    for key in visual:
        if "merger.linear_fc2" in key:
            assert written[key].shape[0] == 32
        else:
            assert torch.equal(written[key], source[key]), key
    reloaded = Qwen3_5ForConditionalGeneration.from_pretrained(out).eval()
    ids = torch.randint(3, 4000, (2, 7), generator=torch.Generator().manual_seed(2))
    text_only = AutoModelForCausalLM.from_pretrained(out).eval()  # the language model alone, as transformers loads it
    torch.testing.assert_close(_logits(reloaded, ids), _logits(text_only, ids), atol=1e-5, rtol=1e-5)
    # the vision tower still runs into the pruned language model: an image's features have the new width
    pixels = torch.randn(16, 3 * 2 * 4 * 4)
    with torch.no_grad():
        features = reloaded.model.visual(pixels, grid_thw=torch.tensor([[1, 4, 4]]))
    assert features.pooler_output.shape == (4, 32)


def test_streaming_and_in_memory_write_the_same_wrapper(wrapped):
    root, _ = wrapped
    a = root / "pruned-streaming"
    b = root / "pruned-in-memory"
    if not (a / "config.json").is_file() or not (b / "config.json").is_file():
        pytest.skip("needs both prunes (run the whole file)")
    left = {}
    for shard in a.glob("*.safetensors"):
        left.update(load_file(str(shard)))
    right = {}
    for shard in b.glob("*.safetensors"):
        right.update(load_file(str(shard)))
    assert sorted(left) == sorted(right)
    for key in left:
        torch.testing.assert_close(left[key], right[key], atol=0, rtol=0, msg=key)


def test_a_text_only_checkpoint_stays_text_only(tmp_path):
    from hybridprune import calibrate, prune
    from hybridprune.pruning.export import export

    model = build(tiny_config("qwen3_5_text"))
    ids = torch.randint(3, 96, (2, 8), generator=torch.Generator().manual_seed(1))
    pruned = prune(model, calibrate(model, ids, progress=False), dict(linear_num_value_heads=4))
    out = export(pruned, tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "qwen3_5_text" and "vision_config" not in config
    assert not any(k.startswith("model.visual") for k in load_file(str(out / "model.safetensors")))


def _held(path) -> int:
    """The parameters a checkpoint's weight files hold."""
    return sum(t.numel() for f in path.glob("*.safetensors") for t in load_file(f).values())


def test_a_params_budget_counts_the_wrapper_checkpoint_vision_tower_included(wrapped, tmp_path):
    """`search --params` on a wrapper counts what the checkpoint `prune` writes holds: the vision tower it
    carries too (a memory budget must include it), and says so; the winner's counted parameters are
    exactly those of its pruned checkpoint, and a relative budget is relative to the whole source."""
    root, _ = wrapped
    out, pruned = tmp_path / "search", tmp_path / "pruned"
    result = CliRunner().invoke(app, [
        "search", "--model", str(root / "model"), "--data", "shakespeare", "--params", "0.8x", "--scores",
        str(root / "scores"), "--eval-samples", "2", "--eval-seq-len", "16", "--max-candidates", "1", "--top-k", "1",
        "--no-speed", "--max-depth-pruning", "0", "--out", str(out)], terminal_width=400)
    assert result.exit_code == 0, result.output
    source = _held(root / "model")
    assert f"parameters counted: the whole qwen3_5 checkpoint, {source:,}, with the" in result.output
    summary = json.loads((out / "summary.json").read_text())
    result = CliRunner().invoke(app, ["prune", "--model", str(root / "model"), "--scores", str(root / "scores"),
                                      "--plan", str(out / "best.yaml"), "--out", str(pruned)])
    assert result.exit_code == 0, result.output
    assert summary["filter"]["param_limit"] == int(0.8 * source)
    assert summary["candidates"][0]["params"] == _held(pruned) <= int(0.8 * source)
