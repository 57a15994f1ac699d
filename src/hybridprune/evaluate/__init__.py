"""Evaluation: loss / perplexity / bits per byte, generation speed side by side, lm-eval tasks."""

from __future__ import annotations

from .compare import EVALUATION_FORMAT, SpeedSettings, compare_models
from .harness import LOCAL_TASKS, MissingExtra, run_tasks
from .perplexity import NonFiniteLoss, evaluate_loss
from .speed import SpeedResult, measure_generation, measure_throughput

__all__ = [
    "EVALUATION_FORMAT",
    "LOCAL_TASKS",
    "MissingExtra",
    "NonFiniteLoss",
    "SpeedResult",
    "SpeedSettings",
    "compare_models",
    "evaluate_loss",
    "measure_generation",
    "measure_throughput",
    "run_tasks",
]
