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
