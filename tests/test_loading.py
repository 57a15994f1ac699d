"""The one load path: a checkpoint that does not fill the model exactly, has non-finite weights, ships
only pickle weights or its own code is refused by every command, with a message that names it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ckpt_helpers import PLAN, invoke, no_traceback, rewrite_weights, siblings, small_corpus
from hybridprune.checkpoint import load as checkpoints


def _data(root):
    return small_corpus(root / "corpus.jsonl")


@pytest.fixture
def good(calibrated_checkpoint):
    """The session's calibrated checkpoint (conftest.py): read only."""
    return calibrated_checkpoint


def _damaged(good, tmp_path, edit):
    path = tmp_path / "damaged"
    shutil.copytree(good / "model", path)
    rewrite_weights(path, edit)
    return path


KEY = "backbone.layers.0.mixer.D"


def _drop(sd):
    del sd[KEY]


def _extra(sd):
    sd["backbone.layers.0.mixer.surprise"] = torch.zeros(3)


def _nan(sd):
    sd[KEY] = sd[KEY].clone()
    sd[KEY][:2] = float("nan")
    sd["backbone.norm_f.weight"] = torch.full_like(sd["backbone.norm_f.weight"], float("inf"))


def _reshape(sd):
    sd[KEY] = torch.zeros(sd[KEY].numel() + 1)


def _commands(good, model, out):
    return {
        "calibrate": ["calibrate", "--model", model, "--data", _data(good), "--samples", "4", "--seq-len", "32",
                      "--depth-samples", "0", "--out", out],
        "prune": ["prune", "--model", model, "--scores", good / "scores", "--plan", PLAN, "--out", out],
        "eval": ["eval", model, "--data", _data(good), "--samples", "2", "--seq-len", "32", "--no-speed"],
        "search": ["search", "--model", model, "--data", _data(good), "--params", "0.7x", "--scores",
                   good / "scores", "--eval-samples", "2", "--eval-seq-len", "32", "--no-speed", "--out", out],
        "distill-teacher": ["distill", "--teacher", model, "--student", good / "model", "--data", _data(good),
                            "--steps", "1", "--seq-len", "32", "--global-batch", "2", "--micro-batch", "2",
                            "--no-progress", "--out", out],
        "distill-student": ["distill", "--teacher", good / "model", "--student", model, "--data", _data(good),
                            "--steps", "1", "--seq-len", "32", "--global-batch", "2", "--micro-batch", "2",
                            "--no-progress", "--out", out],
        "demo": ["demo", "--teacher", model, "--out", out],
    }


COMMANDS = ["calibrate", "prune", "eval", "search", "distill-teacher", "distill-student", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("edit, message", [
    (_drop, f"missing tensors (would be random): {KEY.replace('backbone', 'model')}"),
    (_extra, "unexpected tensors (would be ignored): model.layers.0.mixer.surprise"),
    (_nan, "has NaN or infinite weights: model.layers.0.mixer.D (2 values), model.norm_f.weight (48 values)"),
])
def test_every_command_refuses_a_broken_checkpoint(good, tmp_path, command, edit, message):
    model = _damaged(good, tmp_path, edit)
    out = tmp_path / "out"
    result = invoke(*_commands(good, model, out)[command])
    assert result.exit_code == 2, result.output
    assert no_traceback(result)
    text = " ".join(result.output.split())
    assert message in text, text
    assert str(model) in text
    if command.startswith("distill"):
        assert f"(the {command.split('-')[1]})" in text
        assert "resume" not in text
    assert not out.exists() and not siblings(out)


def test_a_misshapen_tensor_is_refused(good, tmp_path):
    model = _damaged(good, tmp_path, _reshape)
    with pytest.raises(checkpoints.CheckpointLoadError, match=r"tensors of the wrong shape: model.layers.0.mixer.D"):
        checkpoints.load_model(model)


def test_pickle_only_checkpoints_are_refused_with_the_conversion(good, tmp_path):
    from safetensors.torch import load_file

    model = tmp_path / "pickled"
    shutil.copytree(good / "model", model)
    torch.save(load_file(str(model / "model.safetensors")), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    for command in ("demo", "prune"):
        result = invoke(*_commands(good, model, tmp_path / "out")[command])
        assert result.exit_code == 2 and no_traceback(result), result.output
        text = " ".join(result.output.split())
        assert "has only pickle weights (pytorch_model.bin)" in text and "save_pretrained" in text
        assert not (tmp_path / "out").exists()


def test_remote_code_never_runs_and_never_prompts(good, tmp_path):
    """A tokenizer whose class lives in the checkpoint's own file: without --trust-remote-code the
    file is never imported (it would write a marker) and there is no prompt (stdin is closed)."""
    model = tmp_path / "custom"
    shutil.copytree(good / "model", model)
    marker = tmp_path / "ran"
    (model / "tokenization_custom.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "class CustomTokenizer(PreTrainedTokenizerFast):\n    pass\n")
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "CustomTokenizer"
    cfg["auto_map"] = {"AutoTokenizer": [None, "tokenization_custom.CustomTokenizer"]}
    (model / "tokenizer_config.json").write_text(json.dumps(cfg))
    for command in ("demo", "calibrate"):
        result = invoke(*_commands(good, model, tmp_path / "out")[command])
        assert result.exit_code == 2 and no_traceback(result), result.output
        assert "--trust-remote-code" in result.output or "tokenizer" in result.output
        assert not marker.exists() and not (tmp_path / "out").exists()


def test_hub_ids_resolve_through_the_resolver_list(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(checkpoints.CheckpointLoadError, match="org/name: not in the local Hugging Face cache"):
        checkpoints.resolve("org/name")
    monkeypatch.setattr(checkpoints, "RESOLVERS", [lambda ref: tmp_path if ref == "org/name" else None])
    with pytest.raises(checkpoints.CheckpointLoadError, match="has no config.json"):
        checkpoints.resolve("org/name")


def test_the_loaded_model_is_whole_and_in_eval_mode(good):
    model = checkpoints.load_model(good / "model", role="teacher")
    assert not model.training and checkpoints.non_finite_tensors(model) == []


def test_dtype_auto_is_bfloat16_on_a_gpu_in_the_one_load_path(monkeypatch):
    """The rule lives in `checkpoint` (the load path every door uses), not in the command line: a GPU
    target, or a device map on a machine with one, loads "auto" as bfloat16; the CPU keeps the stored dtype."""
    from hybridprune.checkpoint.devices import load_dtype

    assert load_dtype("auto", torch.device("cuda:0")) is torch.bfloat16
    assert load_dtype("auto", torch.device("cpu")) == "auto"
    assert load_dtype("fp32", torch.device("cuda:0")) is torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert load_dtype("auto", None, "auto") is torch.bfloat16


def test_the_load_path_takes_dtypes_and_devices_as_the_commands_name_them():
    from hybridprune.data.assets import teacher_path

    source = teacher_path("tiny-qwen3-5")  # stored as bfloat16
    assert next(checkpoints.load_model(source, dtype="auto", device="cpu").parameters()).dtype is torch.bfloat16
    model = checkpoints.load_model(source, dtype="fp32", device="auto")  # auto: the CPU here
    assert next(model.parameters()).dtype is torch.float32
