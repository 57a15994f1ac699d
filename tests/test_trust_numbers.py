"""Issue 21, the numbers: eval scores each model on its own tokens of the same text (bits per byte
compares tokenizers), and refusals of bad devices, empty lists and unroutable MoE configs before loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from hybridprune.cli import app
from hybridprune.data import teacher_path

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _permuted_teacher(dst: Path, seed: int = 0) -> Path:
    """The shipped teacher with its vocabulary permuted (ids >= 2; the special tokens stay): embedding rows,
    lm_head rows and the tokenizer's vocab moved together, so it is the same function of text."""
    src = teacher_path()
    shutil.copytree(src, dst)
    tok = json.loads((src / "tokenizer.json").read_text())
    n = len(tok["model"]["vocab"])
    perm = torch.cat([torch.arange(2), 2 + torch.randperm(n - 2, generator=torch.Generator().manual_seed(seed))])
    tok["model"]["vocab"] = {t: int(perm[i]) for t, i in tok["model"]["vocab"].items()}
    (dst / "tokenizer.json").write_text(json.dumps(tok))
    weights = load_file(src / "model.safetensors")
    for key in ("backbone.embeddings.weight", "lm_head.weight"):
        moved = torch.empty_like(weights[key])
        moved[perm] = weights[key]
        weights[key] = moved
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def permuted(tmp_path_factory) -> Path:
    return _permuted_teacher(tmp_path_factory.mktemp("perm") / "teacher-permuted")


def test_eval_scores_a_permuted_vocabulary_like_the_teacher(permuted, tmp_path):
    out = tmp_path / "eval"
    result = _invoke("eval", teacher_path(), permuted, "--data", "shakespeare", "--samples", "3", "--seq-len", "64",
                     "--batch-size", "3", "--device", "cpu", "--dtype", "float32", "--out", out)
    assert result.exit_code == 0, result.output
    assert "do not share one tokenizer" in result.output
    evaluation = json.loads((out / "eval.json").read_text())
    teacher, other = evaluation["models"]
    assert teacher["tokenizer"] == "A" and other["tokenizer"] == "B"
    assert evaluation["tokenizers"] == {"A": [teacher["name"]], "B": [other["name"]]}
    assert other["bits_per_byte"] == pytest.approx(teacher["bits_per_byte"], abs=1e-5)
    assert other["loss"] == pytest.approx(teacher["loss"], abs=1e-5)
    assert other["bytes"] == teacher["bytes"] and other["tokens"] == teacher["tokens"]
    md = (out / "eval.md").read_text()
    assert "| tokenizer |" in md and "bits per byte compares them all" in md
    assert md.count("n/a (other tokenizer)") == 4  # loss and perplexity of both: neither shares its tokenizer


def test_eval_of_models_sharing_a_tokenizer_shows_their_loss(tmp_path):
    out = tmp_path / "eval"
    result = _invoke("eval", teacher_path(), teacher_path(), "--data", "shakespeare", "--samples", "2",
                     "--seq-len", "32", "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    evaluation = json.loads((out / "eval.json").read_text())
    a, b = evaluation["models"]
    assert a["loss"] == b["loss"] and a["tokenizer"] == b["tokenizer"] == "A"
    assert "n/a" not in (out / "eval.md").read_text()
