"""Scores that do not belong to the model are refused where they meet it: `prune` and `search` on
the command line, and `hp.prune` / `hp.search` in Python, naming the scores directory and the entry."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import hybridprune as hp
from clean_errors import assert_refused
from conftest import build, tiny_nemotron_config
from hybridprune.cli import app
from hybridprune.data import tokenizer_path
from hybridprune.importance.scores import Scores, ScoresError
from hybridprune.pruning.export import copy_tokenizer_files

runner = CliRunner()
TOKENS = torch.randint(3, 96, (4, 16), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny checkpoint on disk and its scores (with KLD depth scores)."""
    root = tmp_path_factory.mktemp("scores-validation")
    model = build(tiny_nemotron_config(vocab_size=4096))
    model.save_pretrained(root / "model")
    copy_tokenizer_files(tokenizer_path(), root / "model")
    scores = hp.calibrate(model, TOKENS, batch_size=4, progress=False)
    scores.depth_kld = hp.depth_importance(model, TOKENS[:2], progress=False)
    scores.save(root / "scores")
    return root, model


def _edited(setup, tmp_path, edit) -> "Path":
    """A copy of the good scores with `edit(tensors)` applied to the tensor file."""
    root, _ = setup
    bad = tmp_path / "bad-scores"
    shutil.copytree(root / "scores", bad)
    tensors = load_file(str(bad / "scores.safetensors"))
    edit(tensors)
    save_file(tensors, str(bad / "scores.safetensors"))
    return bad


def _prune(setup, scores_dir, tmp_path, plan="ffn_hidden_size=32"):
    root, _ = setup
    out = tmp_path / "pruned"
    result = runner.invoke(app, ["prune", "--model", str(root / "model"), "--scores", str(scores_dir),
                                 "--plan", plan, "--out", str(out)])
    return result, out


def test_ffn_scores_of_another_model_are_refused(setup, tmp_path):
    bad = _edited(setup, tmp_path, lambda t: t.update({"ffn.1": torch.rand(32)}))
    result, out = _prune(setup, bad, tmp_path)
    assert_refused(result, f"the scores in {bad}", r"entry 'ffn.1' has shape \[32\], but this model's FFN "
                   r"\[ffn_hidden_size\] is \[64\]", "calibrate", out=out)


def test_attention_scores_of_another_model_are_refused(setup, tmp_path):
    bad = _edited(setup, tmp_path, lambda t: t.update({"attention.2": torch.rand(4, 8)}))
    result, out = _prune(setup, bad, tmp_path, plan="num_attention_heads=4")
    assert_refused(result, r"entry 'attention.2' has shape \[4, 8\], but this model's attention "
                   r"\[q_heads, head_dim\] is \[8, 8\]", out=out)


def test_a_missing_or_stray_block_entry_is_refused(setup, tmp_path):
    bad = _edited(setup, tmp_path, lambda t: t.pop("mamba.4"))
    result, out = _prune(setup, bad, tmp_path)
    assert_refused(result, "no entry 'mamba.4' for mamba block 4", out=out)
    stray = _edited(setup, tmp_path / "2", lambda t: t.update({"ffn.0": torch.rand(64)}))
    result, out = _prune(setup, stray, tmp_path)
    assert_refused(result, r"entries \['ffn.0'\] name blocks that are not mlp blocks of this model "
                   r"\(its mlp blocks: \[1, 3, 5\]\)", out=out)


def test_all_nan_depth_scores_never_drop_blocks(setup, tmp_path):
    bad = _edited(setup, tmp_path, lambda t: t.update({"depth_kld": torch.full((6,), float("nan"))}))
    result, out = _prune(setup, bad, tmp_path, plan="num_layers=4")
    assert_refused(result, "entry 'depth_kld' holds 6 non-finite value", out=out)
    short = _edited(setup, tmp_path / "2", lambda t: t.update({"depth_bi": torch.rand(4)}))
    result, out = _prune(setup, short, tmp_path, plan="num_layers=4")
    assert_refused(result, r"entry 'depth_bi' has shape \[4\], but this model's depth \[blocks\] is \[6\]", out=out)


def test_inf_unit_scores_are_refused(setup, tmp_path):
    def edit(t):
        t["hidden"][3] = float("inf")

    bad = _edited(setup, tmp_path, edit)
    result, out = _prune(setup, bad, tmp_path, plan="hidden_size=32")
    assert_refused(result, "entry 'hidden' holds 1 non-finite value", out=out)


@pytest.mark.parametrize("meta, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", r"the document: expected an object, got \[1, 2\]"),
    ('{"fingerprint": 7}', "fingerprint: expected a string, got 7"),
    ('{"num_samples": "many"}', 'num_samples: expected an integer, got "many"'),
    ('{"dims": [1]}', r"dims: expected an object, got \[1\]"),
])
def test_corrupt_scores_json_names_the_file(setup, tmp_path, meta, message):
    root, _ = setup
    bad = tmp_path / "bad-scores"
    shutil.copytree(root / "scores", bad)
    (bad / "scores.json").write_text(meta)
    result, out = _prune(setup, bad, tmp_path)
    assert_refused(result, str(bad / "scores.json"), message, "re-run `hybridprune calibrate`", out=out)


def test_unknown_tensor_entries_are_refused(setup, tmp_path):
    bad = _edited(setup, tmp_path, lambda t: t.update({"meta": torch.rand(2), "ffn.x": torch.rand(2)}))
    with pytest.raises(ScoresError, match=f"scores in {bad}: unknown entry '(meta|ffn.x)'"):
        Scores.load(bad)


def test_python_prune_checks_scores_too(setup):
    _, model = setup
    scores = Scores.load(setup[0] / "scores")
    scores.ffn[3] = torch.rand(65)
    with pytest.raises(ScoresError, match=r"entry 'ffn.3' has shape \[65\]"):
        hp.prune(model, scores, hp.Plan(ffn_hidden_size=32))
    scores = Scores.load(setup[0] / "scores")
    scores.depth_kld = torch.full((6,), float("nan"))
    with pytest.raises(ScoresError, match="'depth_kld' holds 6 non-finite"):
        hp.prune(model, scores, hp.Plan(num_layers=4))
    hp.prune(model, Scores.load(setup[0] / "scores"), hp.Plan(num_layers=4))  # the good scores work


def test_search_refuses_scores_of_another_model(setup, tmp_path):
    root, _ = setup
    bad = _edited(setup, tmp_path, lambda t: t.update({"mamba.0": torch.rand(6, 8)}))
    out = tmp_path / "search"
    result = runner.invoke(app, ["search", "--model", str(root / "model"), "--data", "shakespeare", "--out", str(out),
                                 "--params", "0.8x", "--scores", str(bad)])
    assert_refused(result, r"entry 'mamba.0' has shape \[6, 8\], but this model's Mamba \[heads, head_dim\] "
                   r"is \[12, 8\]", out=out)
