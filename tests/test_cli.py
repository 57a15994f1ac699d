"""The command line end to end on a tiny checkpoint saved to disk, and its refusals."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from conftest import build, tiny_nemotron_config
from hybridprune.cli import app
from hybridprune.data import tokenizer_path
from hybridprune.pruning.export import copy_tokenizer_files

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random Nemotron-H with the shipped tokenizer, calibrated once for the module."""
    root = tmp_path_factory.mktemp("cli")
    model = build(tiny_nemotron_config(vocab_size=4096))
    model.save_pretrained(root / "model")
    copy_tokenizer_files(tokenizer_path(), root / "model")
    result = runner.invoke(app, [
        "calibrate", "--model", str(root / "model"), "--data", "shakespeare", "--samples", "6",
        "--seq-len", "32", "--batch-size", "3", "--depth-samples", "2", "--out", str(root / "scores"),
    ])
    assert result.exit_code == 0, result.output
    return root


def test_calibrate_writes_scores_and_plot(checkpoint):
    scores = checkpoint / "scores"
    assert {p.name for p in scores.iterdir()} >= {"scores.safetensors", "scores.json", "layer_importance.png"}
    meta = json.loads((scores / "scores.json").read_text())
    assert meta["num_samples"] == 6 and meta["seq_len"] == 32 and meta["depth_samples"] == 2


def test_prune_writes_a_plain_checkpoint(checkpoint):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = checkpoint / "pruned"
    result = runner.invoke(app, [
        "prune", "--model", str(checkpoint / "model"), "--scores", str(checkpoint / "scores"),
        "--plan", "hidden_size=32,ffn_hidden_size=32,mamba_num_heads=6,num_attention_heads=4,num_layers=5",
        "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "parameters" in result.output
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.hidden_size == 32 and len(model.config.layers_block_type) == 5
    assert AutoTokenizer.from_pretrained(out).vocab_size == 4096
    info = json.loads((out / "hybridprune.json").read_text())
    assert info["plan"]["mamba_num_heads"] == 6 and len(info["dropped_blocks"]) == 1


def test_prune_accepts_a_yaml_plan(checkpoint, tmp_path):
    (tmp_path / "plan.yaml").write_text("mamba_num_heads: 9\nmamba_head_dim: 4\n")
    result = runner.invoke(app, [
        "prune", "--model", str(checkpoint / "model"), "--scores", str(checkpoint / "scores"),
        "--plan", str(tmp_path / "plan.yaml"), "--out", str(tmp_path / "out"),
    ])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "plan, message",
    [
        ("mamba_num_heads=8", "not a multiple of n_groups=3"),
        ("ffn_hidden_size=1000", "larger than the current size"),
        ("hidden_size=0", "must be positive"),
        ("hidden=32", "unknown plan field"),
    ],
)
def test_impossible_plans_fail_clearly_and_write_nothing(checkpoint, tmp_path, plan, message):
    out = tmp_path / "never"
    result = runner.invoke(app, [
        "prune", "--model", str(checkpoint / "model"), "--scores", str(checkpoint / "scores"),
        "--plan", plan, "--out", str(out),
    ])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_unsupported_architecture_fails_clearly(checkpoint, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    gpt2 = AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2", n_layer=1, n_embd=16, n_head=2, vocab_size=32))
    gpt2.save_pretrained(tmp_path / "gpt2")
    result = runner.invoke(app, [
        "prune", "--model", str(tmp_path / "gpt2"), "--scores", str(checkpoint / "scores"),
        "--plan", "hidden_size=8", "--out", str(tmp_path / "out"),
    ])
    assert result.exit_code == 2 and "not supported" in result.output
    assert not (tmp_path / "out").exists()


def test_missing_or_corrupt_checkpoint_and_existing_output(checkpoint, tmp_path):
    args = ["--scores", str(checkpoint / "scores"), "--plan", "mamba_num_heads=6"]
    result = runner.invoke(app, ["prune", "--model", str(tmp_path / "nope"), *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "does not exist" in result.output
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint / "model", broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    result = runner.invoke(app, ["prune", "--model", str(broken), *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "cannot load the model" in result.output
    assert not (tmp_path / "o").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("precious")
    result = runner.invoke(app, ["prune", "--model", str(checkpoint / "model"), *args, "--out", str(taken)])
    assert result.exit_code == 2 and "already exists" in result.output
    assert (taken / "keep.txt").read_text() == "precious"


def test_eval_compares_checkpoints_on_the_same_tokens(checkpoint):
    from hybridprune.data import teacher_path

    result = runner.invoke(app, [
        "eval", str(teacher_path()), str(checkpoint / "model"), "--data", "shakespeare", "--samples", "4",
        "--seq-len", "32", "--batch-size", "2", "--no-speed", "--dtype", "float32",
    ])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "5,776,496" in out  # the shipped teacher's parameter count
    result = runner.invoke(app, ["eval", str(checkpoint / "nope"), "--data", "shakespeare"])
    assert result.exit_code == 2 and "does not exist" in result.output
