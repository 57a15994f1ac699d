"""Validation loss / perplexity and throughput on tiny random models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import hybridprune as hp
from conftest import build, tiny_nemotron_config
from hybridprune.data import TokenSamples
from hybridprune.evaluate import evaluate_loss, measure_throughput


def _manual_loss(model, ids, mask):
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    total, count = 0.0, 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            if mask[b, t] and mask[b, t + 1]:
                total += float(F.cross_entropy(logits[b, t][None], ids[b, t + 1][None]))
                count += 1
    return total / count, count


def test_loss_is_token_weighted_mean_next_token_cross_entropy(nemotron, tokens):
    result = evaluate_loss(nemotron, tokens, batch_size=4)  # batches of 4 and 2: weighting matters
    expected, count = _manual_loss(nemotron, tokens, torch.ones_like(tokens))
    assert result["tokens"] == count == tokens.shape[0] * (tokens.shape[1] - 1)
    assert result["loss"] == pytest.approx(expected, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
    assert hp.evaluate_loss is evaluate_loss


def test_padding_positions_are_not_counted(nemotron, tokens):
    mask = torch.ones_like(tokens)
    mask[0, 15:] = 0
    mask[3, 20:] = 0
    samples = TokenSamples(tokens, mask)
    result = evaluate_loss(nemotron, samples, batch_size=3)
    expected, count = _manual_loss(nemotron, tokens, mask)
    assert result["tokens"] == count == 6 * 23 - 9 - 4
    assert result["loss"] == pytest.approx(expected, rel=1e-5)


def test_eval_mode_restored_and_no_gradients(tokens):
    model = build(tiny_nemotron_config()).train()
    evaluate_loss(model, tokens[:2])
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_no_valid_positions_is_an_error(nemotron):
    with pytest.raises(ValueError, match="no valid next-token"):
        evaluate_loss(nemotron, torch.ones(2, 1, dtype=torch.long))


def test_throughput_is_positive_tokens_per_second(nemotron):
    tps = measure_throughput(nemotron, batch_size=2, seq_len=16, warmup=1, repeats=3)
    assert tps > 0 and math.isfinite(tps)
    with pytest.raises(ValueError):
        measure_throughput(nemotron, batch_size=0, seq_len=16)


class _Uniform(torch.nn.Module):
    """A causal LM whose next-token distribution is uniform over `vocab` tokens: loss = ln(vocab) exactly."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        from types import SimpleNamespace

        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab) + self.anchor)


class _Pieces:
    """A tokenizer whose token i decodes to PIECES[i]; special token 0 decodes to nothing."""

    PIECES = ["<eos>", "ab", "é", "cd", "xyz"]  # "é" is one character but two UTF-8 bytes

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.PIECES[i] for i in ids if not (skip_special_tokens and i == 0))


def test_perplexity_and_bits_per_byte_match_a_hand_computation():
    # Uniform over 8 tokens: every prediction costs ln 8 nats = 3 bits, perplexity 8.
    # Window 1: [ab, é, cd, xyz] predicts é, cd, xyz: 2 + 2 + 3 = 7 bytes, 3 tokens.
    # Window 2: [cd, ab, <eos>, ab, pad] (mask 1 1 1 1 0) predicts ab, <eos>, ab: 2 + 0 + 2 = 4 bytes, 3 tokens.
    # bpb = 6 tokens x 3 bits / 11 bytes = 18/11.
    ids = torch.tensor([[1, 2, 3, 4, 1], [3, 1, 0, 1, 4]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]])
    result = evaluate_loss(_Uniform(8), TokenSamples(ids, mask), batch_size=1, tokenizer=_Pieces())
    assert result["tokens"] == 6
    assert result["bytes"] == 11
    assert result["loss"] == pytest.approx(2.0794415416798357, rel=1e-6)  # ln 8, in float32
    assert result["perplexity"] == pytest.approx(8.0, rel=1e-6)
    assert result["bits_per_byte"] == pytest.approx(1.6363636363636365, rel=1e-6)  # 18 / 11
    assert "bits_per_byte" not in evaluate_loss(_Uniform(8), ids)  # no tokenizer, no bytes


def test_bits_per_byte_with_the_shipped_tokenizer_counts_the_text_bytes(nemotron):
    from transformers import AutoTokenizer

    from hybridprune.data import tokenizer_path

    tok = AutoTokenizer.from_pretrained(tokenizer_path())
    text = "Is this a dagger which I see before me, the handle toward my hand?"
    ids = torch.tensor([tok(text)["input_ids"]])
    first = tok.decode(ids[0, :1])
    model = _Uniform(4096)
    result = evaluate_loss(model, ids, tokenizer=tok)
    assert result["bytes"] == len(text.encode()) - len(first.encode())
    n = ids.shape[1] - 1
    assert result["bits_per_byte"] == pytest.approx(n * 12 / result["bytes"], rel=1e-6)  # log2(4096) = 12 bits
