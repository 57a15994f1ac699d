"""The rows of the evaluation tables, as strings, shared by the console, Markdown and HTML outputs."""

from __future__ import annotations

from typing import Any

from .harness import headline


def _num(x: Any, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _ratio(x: float | None) -> str:
    return "" if x is None else f" ({x:.2f}x)"


def task_columns(evaluation: dict[str, Any]) -> list[tuple[str, str]]:
    """(task, headline metric) for every task any model ran, in first-seen order."""
    seen: dict[str, str] = {}
    for row in evaluation.get("models", []):
        for task, metrics in (row.get("tasks") or {}).items():
            seen.setdefault(task, headline(task, metrics)[0])
    return list(seen.items())


OTHER_TOKENIZER = "n/a (other tokenizer)"


def quality_table(evaluation: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """model | (tokenizer) | parameters | (active, for MoE models) | loss | perplexity | bits/byte | tasks.

    When the models do not all share one tokenizer, a tokenizer column names each one's group, and loss
    and perplexity (per token of a model's own tokenizer) are shown only for models that share theirs
    with another model; bits per byte compares them all."""
    tasks = task_columns(evaluation)
    models = evaluation.get("models", [])
    moe = any("active_parameters" in r for r in models)
    groups = evaluation.get("tokenizers") or {}
    mixed = len(groups) > 1
    columns = (["model"] + (["tokenizer"] if mixed else []) + ["parameters"] + (["active"] if moe else [])
               + ["loss", "perplexity", "bits/byte"] + [f"{t} ({m})" for t, m in tasks])
    rows = []
    for r in models:
        active = [_num(r.get("active_parameters", r.get("parameters")), ",")] if moe else []
        label = r.get("tokenizer")
        alone = mixed and len(groups.get(label) or ()) < 2
        loss = OTHER_TOKENIZER if alone else _num(r.get("loss"), ".4f")
        ppl = OTHER_TOKENIZER if alone else _num(r.get("perplexity"), ".2f")
        cells = [r["name"], *([str(label or "-")] if mixed else []), _num(r.get("parameters"), ","), *active, loss, ppl,
                 _num(r.get("bits_per_byte"), ".4f")]
        for task, metric in tasks:
            cells.append(_num((r.get("tasks") or {}).get(task, {}).get(metric), ".4f"))
        rows.append(cells)
    return columns, rows


def speed_table(evaluation: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per model × batch × context: medians, with the ratio to the reference model in brackets."""
    columns = ["model", "batch", "context", "prefill tok/s", "TTFT (s)", "decode tok/s", "peak MiB",
               "cache MiB/seq (measured / computed)"]
    rows = []
    for c in (evaluation.get("speed") or {}).get("cells", []):
        ratios = c.get("ratios", {})
        rows.append([c["model"], str(c["batch"]), str(c["context"]),
                     _num(c["prefill_tokens_per_s"], ",.0f") + _ratio(ratios.get("prefill_tokens_per_s")),
                     _num(c["ttft_s"], ".4f") + _ratio(ratios.get("ttft_s")),
                     _num(c["decode_tokens_per_s"], ",.1f") + _ratio(ratios.get("decode_tokens_per_s")),
                     _num(c["peak_memory_mib"], ",.1f"),
                     f"{_num(c['cache_mib_per_seq'], '.4f')} / {_num(c.get('cache_mib_per_seq_computed'), '.4f')}"])
    return columns, rows


def kernels_text(evaluation: dict[str, Any]) -> str:
    """One line per model: device, dtype, and which Mamba and attention kernels ran."""
    speed = evaluation.get("speed") or {}
    lines = []
    for name, k in speed.get("kernels", {}).items():
        parts = [f"{k.get('device')}, {k.get('dtype')}"]
        if "mamba" in k:
            parts.append(f"Mamba: {k['mamba']}")
        if "attention" in k:
            parts.append(f"attention: {k['attention']}")
        lines.append(f"{name}: " + "; ".join(parts))
    return "\n".join(lines)


def speed_note(evaluation: dict[str, Any]) -> str:
    s = (evaluation.get("speed") or {}).get("settings", {})
    if not s:
        return ""
    return (f"Medians of {s.get('repeats')} interleaved runs after {s.get('warmup')} warm-up round(s); "
            f"{s.get('new_tokens')} tokens decoded greedily with the cache; ratios (in brackets) are to "
            f"`{s.get('reference')}` measured in the same rounds. TTFT = prefill + first token.")


def tokenizer_note(evaluation: dict[str, Any]) -> str:
    """Which models share a tokenizer, when they do not all share one (empty otherwise)."""
    groups = evaluation.get("tokenizers") or {}
    if len(groups) < 2:
        return ""
    listed = "; ".join(f"{label}: {', '.join(map(str, names))}" for label, names in groups.items())
    return (f"The models do not share one tokenizer ({listed}). Every model read the same text with its own "
            "tokenizer: bits per byte compares them all; loss and perplexity are per token of a model's own "
            "tokenizer and compare only within a tokenizer group.")
