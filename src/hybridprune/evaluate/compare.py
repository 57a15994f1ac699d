"""`compare_models`: several models measured on the same footing, in one result (and one table).

Each model gets its parameter count, its loss / perplexity / bits per byte on one shared text
(tokenized by each model's own tokenizer, `shared_text`), its lm-eval task scores, and its
generation speed measured side by side with the others. The result is a plain dict
(`EVALUATION_FORMAT`), written as `eval.json` by `hybridprune eval --out` and read back by
`hybridprune report`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .harness import run_tasks
from .perplexity import evaluate_loss
from .shared_text import per_model_samples
from .speed import measure_generation

EVALUATION_FORMAT = "hybridprune-evaluation/1"


@dataclass(frozen=True)
class SpeedSettings:
    """What `measure_generation` runs: every batch size × context, `new_tokens` decoded, medians of `repeats`."""

    batch_sizes: tuple[int, ...] = (1, 8)
    contexts: tuple[int, ...] = (2048, 8192)
    new_tokens: int = 256
    warmup: int = 1
    repeats: int = 3
    seed: int = 0


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Exact counts from the adapter (total, without embeddings and, for MoE models, active per token),
    else what the model holds."""
    from ..architectures import get_adapter

    try:
        adapter = get_adapter(model)
        dims = adapter.dims(model.config)
        counts = {"parameters": adapter.num_parameters(dims),
                  "non_embedding_parameters": adapter.num_parameters(dims, embeddings=False)}
        active = adapter.num_active_parameters(dims)
        if active != counts["parameters"]:
            counts["active_parameters"] = active
        return counts
    except ValueError:
        return {"parameters": sum(p.numel() for p in model.parameters())}


def compare_models(models: Mapping[str, torch.nn.Module], *, tokenizers: Mapping[str, Any] | Any = None,
                   samples=None, batch_size: int = 8, speed: SpeedSettings | None = None,
                   tasks: Sequence[str] = (), task_limit: int | float | None = None,
                   data_info: Mapping[str, Any] | None = None,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure `models` (`{name: model}`, the first is the reference for speed ratios).

    - `samples`: token samples (`TokenSamples` or `[N, T]` ids of the first model's tokenizer) for
      loss and perplexity. With tokenizers, their text is tokenized by each model's own tokenizer and
      bits per byte is added (one byte count for all); each row then names its tokenizer group
      (`"tokenizer"`: "A" is the first model's), and `result["tokenizers"]` lists the groups: loss and
      perplexity compare only within a group. Without tokenizers every model reads the same ids.
    - `speed`: generation speed settings, or None to skip.
    - `tasks`: lm-eval tasks, run with each model's own tokenizer (`tokenizers[name]`, or one for all).
    """
    if not models:
        raise ValueError("compare_models needs at least one model")
    say = progress or (lambda _msg: None)
    names = list(models)
    toks = {n: (tokenizers.get(n) if isinstance(tokenizers, Mapping) else tokenizers) for n in names}
    if tasks and any(toks[n] is None for n in names):
        raise ValueError("lm-eval tasks need a tokenizer for every model")
    own, labels, n_bytes = {n: samples for n in names}, {}, None
    if samples is not None and all(toks[n] is not None for n in names):
        vocab = {n: getattr(getattr(models[n], "config", None), "vocab_size", None) for n in names}
        own, labels, n_bytes = per_model_samples(samples, toks, vocab, names)
    rows: list[dict[str, Any]] = []
    for name in names:
        model = models[name]
        row: dict[str, Any] = {"name": name, **parameter_counts(model)}
        if samples is not None:
            say(f"{name}: loss on {len(samples)} samples")
            if name in labels:
                row["tokenizer"] = labels[name]
            row.update(evaluate_loss(model, own[name], batch_size=batch_size, num_bytes=n_bytes))
        if tasks:
            say(f"{name}: tasks {', '.join(tasks)}")
            row["tasks"] = run_tasks(model, toks[name], tasks, limit=task_limit, batch_size=batch_size)
        rows.append(row)
    result: dict[str, Any] = {"format": EVALUATION_FORMAT, "data": dict(data_info or {}), "models": rows,
                              "speed": None}
    if labels:
        groups = dict.fromkeys(labels.values())
        result["tokenizers"] = {label: [n for n in names if labels[n] == label] for label in groups}
    if speed is not None:
        measured = measure_generation(models, batch_sizes=speed.batch_sizes, contexts=speed.contexts,
                                      new_tokens=speed.new_tokens, warmup=speed.warmup, repeats=speed.repeats,
                                      seed=speed.seed, progress=lambda cell: say(f"speed: {cell}"))
        result["speed"] = {**measured.to_dict(), "settings": asdict(speed) | {"reference": names[0]}}
    return result
