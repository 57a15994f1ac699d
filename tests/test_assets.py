"""The shipped assets: bundled corpus, tokenizer and tiny Nemotron-H teacher load offline and match
what their card says."""

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
    SPLITS,
    bundled_corpus,
    corpus_path,
    load_token_samples,
    read_documents,
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


@pytest.fixture(scope="module")
def teacher():
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(teacher_path()), dtype=torch.float32)
    return model.eval()


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


def test_teacher_and_tokenizer_load_offline_with_plain_transformers():
    code = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        d = {str(teacher_path())!r}
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
    assert res.stdout.strip().endswith("NemotronHForCausalLM")


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


def test_teacher_validation_loss_matches_card(tok, teacher):
    card = json.loads((teacher_path() / "eval.json").read_text())
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
    assert f"{card['loss']:.4f}" in (teacher_path() / "README.md").read_text()


def test_teacher_generates(tok, teacher):
    ids = tok("ROMEO.\n", return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        gen = teacher.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] > ids["input_ids"].shape[1]
    assert tok.decode(gen[0, ids["input_ids"].shape[1]:]).strip()
