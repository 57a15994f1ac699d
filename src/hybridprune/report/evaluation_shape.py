"""An `eval.json` read back for the report: what has the shape `hybridprune eval` writes is kept, the
rest is left out and named, so a file edited by hand, cut short or written by another tool renders
what it can instead of failing half-way through a table.

`checked_evaluation(data, where)` returns the evaluation the tables and plots can rely on (every
number finite, every name a string, every list a list) and one note per part left out, naming the
file and the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Notes = list[str]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return f"the non-finite number {value}"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


class _Reader:
    def __init__(self, where: str):
        self.where = where
        self.notes: Notes = []

    def skip(self, field: str, value: Any, expected: str) -> None:
        self.notes.append(f"{self.where}: {field} is {_kind(value)}, not {expected}; left out")

    def fields(self, source: dict, field: str, rules: dict[str, tuple[Callable[[Any], bool], str]],
               required: tuple[str, ...] = ()) -> dict | None:
        """The entries of `source` that satisfy their rule; None (and a note) when a required one fails."""
        out = {}
        for key, (test, expected) in rules.items():
            if key not in source or (source[key] is None and key not in required):
                continue
            if test(source[key]):
                out[key] = source[key]
            elif key in required:
                self.skip(f"{field}.{key}", source[key], expected)
                return None
            else:
                self.skip(f"{field}.{key}", source[key], expected)
        for key in required:
            if key not in out:
                if key not in source:
                    self.notes.append(f"{self.where}: {field} has no {key!r}; left out")
                elif source[key] is None:
                    self.skip(f"{field}.{key}", None, rules[key][1])
                return None
        return out


_STR = (lambda v: isinstance(v, str), "a string")
_NUM = (_is_number, "a finite number")
_COUNT = (_is_count, "a whole number >= 0")
_NUM_OR_NONE = (lambda v: v is None or _is_number(v), "a finite number or null")

_MODEL = {"name": _STR, "parameters": _COUNT, "non_embedding_parameters": _COUNT, "active_parameters": _COUNT,
          "tokenizer": _STR, "loss": _NUM, "perplexity": _NUM, "bits_per_byte": _NUM, "tokens": _COUNT,
          "bytes": _COUNT}
_DATA = {"source": _STR, "split": _STR, "samples": _COUNT, "seq_len": _COUNT}
_CELL = {"model": _STR, "batch": _COUNT, "context": _COUNT, "prefill_tokens_per_s": _NUM_OR_NONE,
         "ttft_s": _NUM_OR_NONE, "decode_tokens_per_s": _NUM_OR_NONE, "peak_memory_mib": _NUM_OR_NONE,
         "cache_mib_per_seq": _NUM_OR_NONE, "cache_mib_per_seq_computed": _NUM_OR_NONE}
_SETTINGS = {"repeats": _COUNT, "warmup": _COUNT, "new_tokens": _COUNT, "reference": _STR}


def _model(r: _Reader, row: Any, i: int) -> dict | None:
    field = f"models[{i}]"
    if not isinstance(row, dict):
        r.skip(field, row, "an object")
        return None
    out = r.fields(row, field, _MODEL, required=("name",))
    if out is None:
        return None
    tasks = row.get("tasks")
    if tasks is not None:
        if not isinstance(tasks, dict):
            r.skip(f"{field}.tasks", tasks, "an object of tasks")
        else:
            out["tasks"] = {}
            for task, metrics in tasks.items():
                if not isinstance(metrics, dict):
                    r.skip(f"{field}.tasks.{task}", metrics, "an object of metrics")
                    continue
                good = {k: v for k, v in metrics.items() if _is_number(v)}
                for k in metrics.keys() - good.keys():
                    r.skip(f"{field}.tasks.{task}.{k}", metrics[k], "a finite number")
                out["tasks"][task] = good
    return out


def _speed(r: _Reader, speed: Any) -> dict | None:
    if speed is None:
        return None
    if not isinstance(speed, dict):
        r.skip("speed", speed, "an object")
        return None
    cells = speed.get("cells", [])
    if not isinstance(cells, list):
        r.skip("speed.cells", cells, "a list")
        cells = []
    kept = []
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict):
            r.skip(f"speed.cells[{i}]", cell, "an object")
            continue
        c = r.fields(cell, f"speed.cells[{i}]", _CELL, required=("model", "batch", "context"))
        if c is None:
            continue
        for key in _CELL:
            c.setdefault(key, None)
        ratios = cell.get("ratios", {})
        if not isinstance(ratios, dict):
            r.skip(f"speed.cells[{i}].ratios", ratios, "an object")
            ratios = {}
        c["ratios"] = {k: v for k, v in ratios.items() if _is_number(v)}
        kept.append(c)
    kernels = speed.get("kernels", {})
    if not isinstance(kernels, dict):
        r.skip("speed.kernels", kernels, "an object")
        kernels = {}
    kernels = {name: {k: v for k, v in k_.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
               for name, k_ in kernels.items() if isinstance(k_, dict)}
    settings = speed.get("settings", {})
    if not isinstance(settings, dict):
        r.skip("speed.settings", settings, "an object")
        settings = {}
    settings = r.fields(settings, "speed.settings", _SETTINGS) or {}
    return {"cells": kept, "kernels": kernels, "settings": settings} if kept else None


def checked_evaluation(data: Any, where: str) -> tuple[dict | None, Notes]:
    """(the evaluation as the report's tables expect it, or None when nothing of it is usable; notes)."""
    r = _Reader(where)
    if not isinstance(data, dict):
        r.skip("the file", data, "an object with 'models'")
        return None, r.notes
    models = data.get("models")
    if not isinstance(models, list):
        if "models" in data:
            r.skip("models", models, "a list")
        else:
            r.notes.append(f"{where}: has no 'models'; left out")
        return None, r.notes
    rows = [m for i, row in enumerate(models) if (m := _model(r, row, i)) is not None]
    if not rows:
        r.notes.append(f"{where}: no model row is usable; left out")
        return None, r.notes
    evaluation: dict[str, Any] = {"models": rows, "speed": _speed(r, data.get("speed"))}
    info = data.get("data") or {}
    if not isinstance(info, dict):
        r.skip("data", info, "an object")
        info = {}
    evaluation["data"] = r.fields(info, "data", _DATA) or {}
    groups = data.get("tokenizers")
    if groups is not None and not isinstance(groups, dict):
        r.skip("tokenizers", groups, "an object of tokenizer groups")
    elif groups is not None:
        evaluation["tokenizers"] = {}
        for label, names in groups.items():
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                evaluation["tokenizers"][label] = names
            else:
                r.skip(f"tokenizers.{label}", names, "a list of model names")
    return evaluation, r.notes
