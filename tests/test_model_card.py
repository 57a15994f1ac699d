"""Every export carries its own model card (README.md, the Hub's format) that huggingface_hub's parser
accepts: base_model, library_name, tags, the source's licence and datasets, what was done; the source's
card is kept beside it as BASE_MODEL_README.md, never passed off as the child's."""

from __future__ import annotations

import json
import shutil

import pytest
from huggingface_hub import ModelCard

from ckpt_helpers import PLAN, invoke
from hybridprune.pruning.model_card import BASE_CARD, source_id

SOURCE_CARD = """---
license: other
license_name: tiny-open-model-license
license_link: LICENSE
datasets:
- example/shakespeare
tags: [base]
---
# tiny base

It scores 99.9 on everything (about the base model only).
"""


@pytest.fixture(scope="module")
def source(calibrated_checkpoint, tmp_path_factory):
    """The session's calibrated checkpoint, its model copied to hold a card of its own (the shared one is
    read only): root/model with README.md, root/scores and root/corpus.jsonl."""
    root = tmp_path_factory.mktemp("card")
    shutil.copytree(calibrated_checkpoint / "model", root / "model")
    (root / "model" / "README.md").write_text(SOURCE_CARD)
    shutil.copytree(calibrated_checkpoint / "scores", root / "scores")
    shutil.copy(calibrated_checkpoint / "corpus.jsonl", root / "corpus.jsonl")
    return root


def _card(path):
    card = ModelCard.load(path / "README.md")  # the Hub's own metadata parser
    return card, card.data.to_dict()


def _check_pruned(out, source):
    card, meta = _card(out)
    assert "base_model" not in meta  # a local source: no Hub id, and its path never goes into the card
    assert str(source) not in card.text and "version of `model`" in card.text
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert {"pruned", "hybridprune"} <= set(meta["tags"]) and "base" not in meta["tags"]
    assert meta["license"] == "other" and meta["license_name"] == "tiny-open-model-license"
    assert meta["datasets"] == ["example/shakespeare"]
    info = json.loads((out / "hybridprune.json").read_text())
    assert f"{info['parameters']['before']:,}" in card.text and f"{info['parameters']['after']:,}" in card.text
    assert "hidden_size=32" in card.text and "99.9" not in card.text
    assert (out / BASE_CARD).read_text() == SOURCE_CARD
    return meta


@pytest.mark.parametrize("how", ["streaming", "in-memory"])
def test_prune_writes_a_card_the_hub_parses(source, tmp_path, how):
    out = tmp_path / "pruned"
    extra = ["--in-memory"] if how == "in-memory" else []
    result = invoke("prune", "--model", source / "model", "--scores", source / "scores", "--plan", PLAN,
                    "--out", out, *extra)
    assert result.exit_code == 0, result.output
    meta = _check_pruned(out, source)
    assert "distilled" not in meta["tags"]


def test_distilled_and_pruned_again_name_the_original(source, tmp_path):
    pruned = tmp_path / "pruned"
    assert invoke("prune", "--model", source / "model", "--scores", source / "scores", "--plan", PLAN,
                  "--out", pruned).exit_code == 0
    student = tmp_path / "student"
    result = invoke("distill", "--teacher", source / "model", "--student", pruned, "--data",
                    source / "corpus.jsonl", "--steps", "1", "--seq-len", "32", "--global-batch", "2",
                    "--micro-batch", "2", "--val-samples", "0", "--no-progress", "--out", student)
    assert result.exit_code == 0, result.output
    card, meta = _card(student)
    assert "base_model" not in meta and str(source) not in card.text
    assert "version of `model`" in card.text  # the original, not the pruned intermediate
    assert {"pruned", "distilled", "hybridprune"} <= set(meta["tags"])
    assert meta["license_name"] == "tiny-open-model-license"
    assert "64 tokens" in card.text  # 1 step of 2 x 32
    assert (student / BASE_CARD).read_text() == SOURCE_CARD
    # a second round: its source is one of our exports; the card still names the original
    scores = tmp_path / "scores2"
    assert invoke("calibrate", "--model", student, "--data", source / "corpus.jsonl", "--samples", "4",
                  "--seq-len", "32", "--depth-samples", "0", "--out", scores).exit_code == 0
    again = tmp_path / "again"
    result = invoke("prune", "--model", student, "--scores", scores, "--plan", "ffn_hidden_size=16", "--out", again)
    assert result.exit_code == 0, result.output
    card, meta = _card(again)
    assert "base_model" not in meta and "version of `model`" in card.text and str(source) not in card.text
    assert (again / BASE_CARD).read_text() == SOURCE_CARD
    # ... and compares with the original model, listing both rounds (it compared with round one's model)
    first = json.loads((pruned / "hybridprune.json").read_text())
    second = json.loads((again / "hybridprune.json").read_text())
    original, final = first["parameters"]["before"], second["parameters"]["after"]
    assert second["parameters"]["before"] == first["parameters"]["after"]  # this round's own record is kept
    assert f"| parameters | {original:,} | {final:,} ({final / original:.1%} of the base) |" in card.text
    assert f"**Round 1**: plan `hidden_size=32" in card.text and "**Round 2**: `ffn_hidden_size=16`" in card.text
    assert f"| `hidden_size` | {first['dims_before']['hidden_size']} | 32 |" in card.text


def test_a_source_without_a_card_still_gets_one(tmp_path):
    from hybridprune.pruning.model_card import write_model_card

    (tmp_path / "src").mkdir()
    (tmp_path / "out").mkdir()
    write_model_card(tmp_path / "out", tmp_path / "src", {"plan": {"hidden_size": 8},
                                                         "parameters": {"before": 100, "after": 50}})
    _, meta = _card(tmp_path / "out")
    assert "base_model" not in meta and "license" not in meta
    assert not (tmp_path / "out" / BASE_CARD).exists()


def test_a_hub_snapshot_is_named_by_its_repository(tmp_path):
    snap = tmp_path / "models--acme--Hybrid-8B" / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    assert source_id(snap) == "acme/Hybrid-8B"
    assert source_id(tmp_path) is None  # a local directory has no Hub id
