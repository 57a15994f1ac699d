"""The shipped assets: bundled corpus, tokenizer and the tiny teachers (Nemotron-H, Qwen3.5 GDN) load
offline and match what their cards say."""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from hybridprune.data import (
    BUNDLED_TEACHERS,
    SPLITS,
    DataError,
    bundled_corpus,
    corpus_path,
    load_token_samples,
    read_documents,
    resolve_teacher,
    teacher_path,
    tokenizer_path,
)


def _records(split):
    with gzip.open(corpus_path(split), "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_path()))


TEACHERS = {"tiny-nemotron-h": "NemotronHForCausalLM", "tiny-qwen3-5": "Qwen3_5ForCausalLM"}


def _load(name):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(teacher_path(name)), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def teacher():
    return _load("tiny-nemotron-h")


@pytest.fixture(scope="module", params=list(TEACHERS))
def any_teacher(request):
    return request.param, _load(request.param)


# ---- corpus ------------------------------------------------------------------------------------------


def test_corpus_splits_are_fixed_and_disjoint():
    recs = {split: _records(split) for split in SPLITS}
    works = {split: {r["work"] for r in rs} for split, rs in recs.items()}
    assert works["validation"] == {"julius_caesar", "twelfth_night", "winters_tale"}
    assert works["test"] == {"macbeth", "much_ado_about_nothing", "henry_v"}
    assert len(works["train"]) == 36 and not works["train"] & (works["validation"] | works["test"])
    assert works["calibration"] <= works["train"]  # calibration is carved from the training works
    texts = {split: {r["text"] for r in rs} for split, rs in recs.items()}
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not texts[a] & texts[b], (a, b)
    total = sum(len(r["text"]) for rs in recs.values() for r in rs)
    assert 4_800_000 < total < 5_300_000  # the 42 works, about 5 MB of text
    assert (bundled_corpus() / "ATTRIBUTION.md").is_file() and (bundled_corpus() / "LICENSE").is_file()


def test_bundled_corpus_loads_by_name_and_path(tok):
    for split in SPLITS:
        assert read_documents("shakespeare", split) == [r["text"] for r in _records(split)]
    a = load_token_samples("shakespeare", tok, seq_len=128, num_samples=8, split="calibration", seed=1)
    b = load_token_samples(bundled_corpus(), tok, seq_len=128, num_samples=8, split="calibration", seed=1)
    assert torch.equal(a.input_ids, b.input_ids) and a.input_ids.shape == (8, 128)


# ---- tokenizer ---------------------------------------------------------------------------------------


def test_tokenizer(tok):
    assert len(tok) == 4096
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 0 and tok.bos_token_id == 0
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id == 1
    text = "HAMLET.\nTo be, or not to be: that is the question.\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert len(ids) < len(text) / 2  # the BPE merges more than bytes


# ---- teacher -----------------------------------------------------------------------------------------


def test_bundled_teachers_by_name():
    assert list(BUNDLED_TEACHERS) == list(TEACHERS)
    assert teacher_path() == teacher_path("tiny-nemotron-h") == resolve_teacher(None)
    assert resolve_teacher("tiny-qwen3-5") == teacher_path("tiny-qwen3-5") != teacher_path()
    assert resolve_teacher("some/hub-id") == "some/hub-id"  # anything else is left to the checkpoint loader
    with pytest.raises(DataError, match="no bundled teacher named 'tiny-mamba'; use one of tiny-nemotron-h, tiny-qwen3-5"):
        teacher_path("tiny-mamba")
    # the bundled tokenizer is one: every teacher ships the same files
    for name in TEACHERS:
        for f in ("tokenizer.json", "tokenizer_config.json"):
            assert (teacher_path(name) / f).read_bytes() == (tokenizer_path() / f).read_bytes(), (name, f)


def test_an_existing_directory_wins_over_a_bundled_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-qwen3-5").mkdir()
    assert resolve_teacher("tiny-qwen3-5") == "tiny-qwen3-5"


def test_every_command_takes_a_bundled_teacher_by_name(tmp_path, monkeypatch):
    """`--model tiny-qwen3-5` works wherever a checkpoint is read (one resolver), as `demo --teacher` does;
    a directory of that name still comes first, and an unknown name lists the shipped ones."""
    from hybridprune.checkpoint.load import CheckpointLoadError, load_config, resolve

    assert resolve("tiny-qwen3-5", role="model") == teacher_path("tiny-qwen3-5")
    assert resolve("shipped:tiny-qwen3-5", role="model") == teacher_path("tiny-qwen3-5")  # as recipes name it
    assert load_config("tiny-nemotron-h").model_type == "nemotron_h"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-qwen3-5").mkdir()
    with pytest.raises(CheckpointLoadError, match="has no config.json"):
        resolve("tiny-qwen3-5", role="model")
    with pytest.raises(CheckpointLoadError, match="nor a shipped teacher: shipped:tiny-nemotron-h, shipped:tiny-qwen3-5"):
        resolve("tiny-mamba", role="model")
    from typer.testing import CliRunner

    from hybridprune.cli import app

    out = tmp_path / "scores"
    result = CliRunner().invoke(app, ["calibrate", "--model", "tiny-nemotron-h", "--data", "shakespeare", "--samples",
                                      "2", "--seq-len", "16", "--batch-size", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "scores.safetensors").is_file()
    # the module entry point itself (one process: the usage error needs no model)
    usage = subprocess.run([sys.executable, "-m", "hybridprune", "calibrate"], capture_output=True, text=True)
    assert usage.returncode == 2 and "Usage: hybridprune calibrate" in usage.stderr


@pytest.mark.parametrize("name", list(TEACHERS))
def test_teacher_and_tokenizer_load_offline_with_plain_transformers(name):
    code = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        d = {str(teacher_path(name))!r}
        tok = AutoTokenizer.from_pretrained(d)
        model = AutoModelForCausalLM.from_pretrained(d)
        ids = tok("ROMEO.\\n", return_tensors="pt")["input_ids"]
        out = model(input_ids=ids).logits
        assert out.shape == (1, ids.shape[1], 4096), out.shape
        print(type(model).__name__)
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith(TEACHERS[name])


def test_teacher_config(teacher):
    cfg = teacher.config
    assert cfg.model_type == "nemotron_h"
    kinds = list(cfg.layers_block_type)
    assert kinds.count("full_attention") == 2 and 8 <= len(kinds) <= 12
    assert cfg.n_groups >= 2 and cfg.mamba_num_heads % cfg.n_groups == 0
    assert cfg.mamba_num_heads // cfg.n_groups >= 4
    assert cfg.num_attention_heads > cfg.num_key_value_heads  # GQA
    assert cfg.vocab_size == 4096
    n = sum(p.numel() for p in teacher.parameters())
    assert 4_000_000 <= n <= 7_000_000
    assert (teacher_path() / "model.safetensors").stat().st_size <= 20 * 2**20


def test_qwen3_5_teacher_config():
    cfg = _load("tiny-qwen3-5").config
    assert cfg.model_type == "qwen3_5_text"
    kinds = list(cfg.layer_types)
    assert kinds == ["linear_attention"] * 3 + ["full_attention"] + ["linear_attention"] * 3 + ["full_attention"]
    assert cfg.linear_num_key_heads >= 2 and cfg.linear_num_value_heads % cfg.linear_num_key_heads == 0
    assert cfg.linear_num_value_heads // cfg.linear_num_key_heads >= 4  # room for 25/50/75 % inside a group
    assert cfg.num_attention_heads > cfg.num_key_value_heads  # GQA
    assert cfg.vocab_size == 4096 and not cfg.tie_word_embeddings
    n = sum(p.numel() for p in _load("tiny-qwen3-5").parameters())
    assert 4_000_000 <= n <= 8_000_000
    assert (teacher_path("tiny-qwen3-5") / "model.safetensors").stat().st_size <= 20 * 2**20
    log = [json.loads(line) for line in (teacher_path("tiny-qwen3-5") / "training_log.jsonl").read_text().splitlines()]
    assert log[0]["kind"] == "eval" and log[-1]["val_loss"] < log[0]["val_loss"] - 3.0
    assert (teacher_path("tiny-qwen3-5") / "loss_curve.png").stat().st_size > 10_000


def test_teacher_validation_loss_matches_card(tok, any_teacher):
    name, teacher = any_teacher
    card = json.loads((teacher_path(name) / "eval.json").read_text())
    val = load_token_samples(card["source"], tok, seq_len=card["seq_len"], num_samples=card["num_samples"],
                             split=card["split"], seed=card["seed"], model_vocab_size=teacher.config.vocab_size)
    assert val.fingerprint == card["fingerprint"], "the evaluation subset changed"
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in val.batches(card["batch_size"]):
            logits = teacher(**batch).logits[:, :-1].float()
            target = batch["input_ids"][:, 1:]
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum")
            total += float(ce)
            count += target.numel()
    loss = total / count
    assert abs(loss - card["loss"]) <= 0.05 * card["loss"], (loss, card["loss"])
    assert loss < math.log(4096) - 2.0  # far better than uniform guessing
    assert f"{card['loss']:.4f}" in (teacher_path(name) / "README.md").read_text()


def test_teacher_generates(tok, any_teacher):
    _, teacher = any_teacher
    ids = tok("ROMEO.\n", return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        gen = teacher.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] > ids["input_ids"].shape[1]
    assert tok.decode(gen[0, ids["input_ids"].shape[1]:]).strip()


def test_calibrate_summary_shows_every_mixers_score(tmp_path):
    """The per-block table gives the GDN layers their value-head score, as it gives Mamba and attention theirs."""
    proc = subprocess.run([sys.executable, "-m", "hybridprune", "calibrate", "--model", "tiny-qwen3-5",
                           "--data", "shakespeare", "--samples", "2", "--seq-len", "16", "--batch-size", "2",
                           "--out", str(tmp_path / "scores")],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stderr.splitlines() if "gdn+mlp" in line]  # the console writes to stderr
    assert len(rows) == 6 and all("gdn " in row and "mlp " in row for row in rows), proc.stderr
    assert "calibrating" in proc.stderr and "calibrating" not in proc.stdout  # bars on stderr, as the README says
