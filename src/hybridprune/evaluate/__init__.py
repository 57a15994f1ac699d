"""Evaluation: language-model loss / perplexity on token samples, and measured throughput."""

from __future__ import annotations

from .perplexity import NonFiniteLoss, evaluate_loss
from .speed import measure_throughput

__all__ = ["NonFiniteLoss", "evaluate_loss", "measure_throughput"]
