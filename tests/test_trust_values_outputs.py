"""No export writes NaN or infinite weights; training stops at the first non-finite step; a config
whose divisor or step is impossible is refused naming config.json's key; a model card names no local
path."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from huggingface_hub import ModelCard

from clean_errors import assert_refused
from ckpt_helpers import PLAN, invoke, save_checkpoint, small_corpus
from conftest import build, tiny_config
from distill_helpers import random_tokens, tiny_nemotron_h
from hybridprune.data import teacher_path
from hybridprune.distillation import DistillConfig, NonFiniteLoss
from hybridprune.pruning.export import NonFiniteWeights


def _poisoned(model, value=float("nan")):
    name, param = next((n, p) for n, p in model.named_parameters() if p.dim() == 2)
    with torch.no_grad():
        param[0, 0] = value
    return model, name


# ---- exports ------------------------------------------------------------------------------------

def test_the_distilled_student_is_not_exported_with_nan_weights(tmp_path):
    from hybridprune.distillation.export import export_student

    out = tmp_path / "student"
    export_student(tiny_nemotron_h(hidden=48, seed=1), out)  # an earlier, good export
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    student, name = _poisoned(tiny_nemotron_h(hidden=48, seed=2))
    with pytest.raises(NonFiniteWeights, match=rf"the distilled student was not written: its tensor {name} holds 1 "
                                               r"NaN or infinite value\(s\); the training went non-finite by step 7 "
                                               r"\(the learning rate or the loss overflowed\)"):
        export_student(student, out, summary={"steps": 7})
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # the earlier one is kept
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_an_in_memory_prune_is_not_exported_with_infinite_weights(tmp_path):
    from hybridprune.pruning.export import export

    model, name = _poisoned(tiny_nemotron_h(hidden=48, seed=1), float("inf"))
    with pytest.raises(NonFiniteWeights, match=rf"the pruned checkpoint was not written: its tensor {name} holds 1 "):
        export(model, tmp_path / "pruned")
    assert not (tmp_path / "pruned").exists()


def test_training_stops_at_a_non_finite_learning_rate(tmp_path):
    """An infinite learning rate would make every weight NaN with a finite loss: the step is not taken."""
    from hybridprune.distillation.trainer import Distiller

    teacher, student = tiny_nemotron_h(hidden=64, seed=0), tiny_nemotron_h(hidden=48, seed=1)
    cfg = DistillConfig(steps=2, global_batch=4, micro_batch=2, lr=1e-3, min_lr=1e-4, warmup=0, progress=False,
                        precision="fp32", chunk_size=40, out_dir=str(tmp_path / "run"))
    d = Distiller(teacher, student, random_tokens(n=8, seq_len=32), cfg)
    for group in d.optimizer.param_groups:
        group["lr"] = float("inf")
    with pytest.raises(NonFiniteLoss, match=r"the learning rate became inf at step 1 .*no checkpoint was written "
                                            r"yet. Lower the learning rate"):
        d.run()
    assert d.step == 0 and all(torch.isfinite(p).all() for p in student.parameters())
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_streaming_prune_writes_no_nan(tmp_path):
    """The streaming prune counts NaN/Inf per block as it writes: a source holding them leaves no output."""
    src = save_checkpoint(tmp_path / "model")
    data = small_corpus(tmp_path / "corpus.jsonl")
    assert invoke("calibrate", "--model", src, "--data", data, "--samples", "2", "--seq-len", "16",
                  "--depth-samples", "0", "--out", tmp_path / "scores").exit_code == 0
    from safetensors.torch import load_file, save_file

    sd = load_file(str(src / "model.safetensors"))
    key = next(k for k in sd if k.endswith("layers.0.mixer.in_proj.weight"))
    sd[key][0, 0] = float("nan")
    save_file(sd, str(src / "model.safetensors"), metadata={"format": "pt"})
    before = (src / "model.safetensors").read_bytes()
    result = invoke("prune", "--model", src, "--scores", tmp_path / "scores", "--plan", PLAN, "--out", tmp_path / "o")
    assert_refused(result, r"NaN or infinite weights: \S*layers.0.mixer.in_proj.weight \(1 values\)", out=tmp_path / "o")
    assert (src / "model.safetensors").read_bytes() == before


# ---- configs ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def qwen3_next(tmp_path_factory):
    path = tmp_path_factory.mktemp("q3n") / "model"
    build(tiny_config("qwen3_next")).save_pretrained(path)
    return path


def _broken_copy(src, tmp_path, **values):
    dest = tmp_path / "broken"
    shutil.copytree(src, dest)
    doc = json.loads((dest / "config.json").read_text())
    doc.update(values)
    (dest / "config.json").write_text(json.dumps(doc))
    return dest


@pytest.mark.parametrize("command", ["prune", "calibrate", "eval", "distill"])
def test_a_zero_decoder_sparse_step_is_refused_naming_the_key(tmp_path, qwen3_next, command):
    """decoder_sparse_step: 0 was a ZeroDivisionError."""
    model = _broken_copy(qwen3_next, tmp_path, decoder_sparse_step=0)
    before = (model / "config.json").read_bytes()
    out = tmp_path / "out"
    args = {"prune": ["prune", "--model", model, "--scores", tmp_path, "--plan", "hidden_size=32", "--out", out],
            "calibrate": ["calibrate", "--model", model, "--data", "shakespeare", "--out", out],
            "eval": ["eval", model, "--data", "shakespeare", "--out", out],
            "distill": ["distill", "--teacher", model, "--student", model, "--data", "shakespeare", "--steps", "1",
                        "--out", out]}[command]
    assert_refused(invoke(*args), r"config.json: decoder_sparse_step is 0, but it is the step between MoE layers "
                                  r"\(every Nth layer\), so it must be a whole number >= 1", out=out,
                   untouched={model / "config.json": before})


@pytest.mark.parametrize("key, value, use", [
    ("num_attention_heads", 0, "it splits hidden_size into attention heads"),
    ("num_key_value_heads", -2, "it splits the attention heads into key/value groups"),
    ("n_groups", 0, "it splits the Mamba heads into groups"),
])
def test_other_divisors_of_a_config_are_refused_naming_the_key(tmp_path, key, value, use):
    model = _broken_copy(teacher_path("tiny-nemotron-h"), tmp_path, **{key: value})
    out = tmp_path / "out"
    result = invoke("calibrate", "--model", model, "--data", "shakespeare", "--out", out)
    assert_refused(result, rf"config.json: {key} is {value}, but {use}", out=out)


def test_a_text_config_divisor_is_named_with_its_path():
    from hybridprune.architectures.config_values import ConfigValueError, check_config_values

    class Config:
        text_config = type("Text", (), {"decoder_sparse_step": 0})()

    with pytest.raises(ConfigValueError, match=r"config.json: text_config.decoder_sparse_step is 0"):
        check_config_values(Config())


# ---- model cards --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pruned_from(tmp_path_factory):
    """prune the tiny model from a directory laid out as `where` (a local folder, or a Hub cache snapshot)."""
    root = tmp_path_factory.mktemp("cards")
    data = small_corpus(root / "corpus.jsonl")

    def prune(where: str):
        src = save_checkpoint(root / where)
        scores = root / f"{where.replace('/', '_')}-scores"
        assert invoke("calibrate", "--model", src, "--data", data, "--samples", "2", "--seq-len", "16",
                      "--depth-samples", "0", "--out", scores).exit_code == 0
        out = root / f"{where.replace('/', '_')}-pruned"
        result = invoke("prune", "--model", src, "--scores", scores, "--plan", PLAN, "--out", out)
        assert result.exit_code == 0, result.output
        return root, out

    return prune


def test_a_local_source_leaves_base_model_out_and_no_path(pruned_from):
    root, out = pruned_from("home-of-alice/my-hybrid")
    card = ModelCard.load(out / "README.md")
    assert "base_model" not in card.data.to_dict()
    assert "version of `my-hybrid`" in card.text and "# my-hybrid (pruned)" in card.text
    assert str(root) not in (out / "README.md").read_text() and "home-of-alice" not in card.text
    assert json.loads((out / "hybridprune.json").read_text())["source"] == "my-hybrid"
    _no_local_path_in_any_text_file(out, root)


def _no_local_path_in_any_text_file(out, root):
    """Every file of the output travels with it (an upload): none names the user's directories."""
    for path in out.iterdir():
        if path.suffix in (".json", ".md", ".txt", ".yaml", ".jinja"):
            assert str(root) not in path.read_text(), path.name


def test_a_hub_snapshot_source_is_named_by_its_hub_id(pruned_from):
    root, out = pruned_from("models--acme--Hybrid-Tiny/snapshots/0123abcd")
    card = ModelCard.load(out / "README.md")
    assert card.data.to_dict()["base_model"] == "acme/Hybrid-Tiny"
    assert "version of `acme/Hybrid-Tiny`" in card.text and str(root) not in card.text
    assert json.loads((out / "hybridprune.json").read_text())["source"] == "acme/Hybrid-Tiny"
    _no_local_path_in_any_text_file(out, root)


def test_a_shipped_teacher_is_named_by_its_shipped_name(tmp_path):
    from hybridprune.pruning.model_card import write_model_card

    out = tmp_path / "out"
    out.mkdir()
    write_model_card(out, teacher_path("tiny-qwen3-5"), {"plan": {"hidden_size": 8}})
    card = ModelCard.load(out / "README.md")
    assert "base_model" not in card.data.to_dict()
    assert "version of the shipped teacher `tiny-qwen3-5`" in card.text
    assert str(teacher_path("tiny-qwen3-5").parent) not in (out / "README.md").read_text()


def test_an_older_cards_local_base_model_is_not_passed_on(tmp_path):
    """A source that is an export of ours whose card (an older version's, or someone else's) holds a path."""
    from hybridprune.pruning.model_card import write_model_card

    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    (src / "README.md").write_text("---\nbase_model: /home/alice/models/secret-8b\ntags: [hybridprune]\n---\n"
                                   "A structurally pruned version of `/home/alice/models/secret-8b`, made with "
                                   "hybridprune 0.0.1\n")
    write_model_card(out, src, {"plan": {"hidden_size": 8}})
    card = ModelCard.load(out / "README.md")
    assert "base_model" not in card.data.to_dict() and "/home/alice" not in card.text
    assert "version of `secret-8b`" in card.text
