"""Speed: forward throughput (`measure_throughput`) and generation speed side by side (`measure_generation`).

Generation is measured the way a user meets it: one prefill of the prompt that fills the model's own
cache (the Mamba conv/SSM state and the attention KV cache) and yields the first token, then a
greedy decode loop of a fixed number of single-token steps with `use_cache=True` (no EOS stopping,
so every model decodes the same number of tokens). Per model × batch × context:

- prefill tokens/s and time to first token (the prefill forward plus picking the first token);
- decode tokens/s (batch × new tokens / decode time);
- peak memory of the whole run (see `memory.PeakMemory`);
- cache size per sequence, measured (bytes of every tensor the cache holds at the end) and computed
  from the dimensions (`architectures.cache.cache_bytes`).

Models run interleaved (A B A B …) after warm-up rounds and the medians are reported, with each
figure's ratio to the first model's: on a shared machine only ratios measured together mean much.
"""

from __future__ import annotations

import inspect
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .kernels import kernels_used
from .memory import PeakMemory

MIB = 2**20
#: per-cell figures; for each, whether larger is better (ratios are always model / first model)
FIGURES = {
    "prefill_tokens_per_s": True,
    "ttft_s": False,
    "decode_tokens_per_s": True,
    "peak_memory_mib": False,
    "cache_mib_per_seq": False,
}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_throughput(model: torch.nn.Module, batch_size: int, seq_len: int, warmup: int = 1,
                       repeats: int = 3, *, seed: int = 0) -> float:
    """Median tokens/s of `repeats` timed forward passes over a `[batch_size, seq_len]` batch.

    `warmup` untimed passes come first (kernel selection, caches). The tokens are random ids drawn
    from the model's vocabulary, so no data is needed; the model runs in eval mode without a cache.
    """
    if batch_size < 1 or seq_len < 1 or repeats < 1 or warmup < 0:
        raise ValueError("batch_size, seq_len and repeats must be >= 1 and warmup >= 0")
    param = next(model.parameters())
    device = param.device
    vocab = int(getattr(model.config, "vocab_size", 2))
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch_size, seq_len), generator=g).to(device)
    was_training = model.training
    model.eval()
    times = []
    try:
        for i in range(warmup + repeats):
            _synchronize(device)
            start = time.perf_counter()
            model(input_ids=ids, use_cache=False)
            _synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return batch_size * seq_len / max(statistics.median(times), 1e-9)


# ---- the cache ---------------------------------------------------------------------------------------

def _cache_kwarg(model: torch.nn.Module) -> str:
    """The keyword under which this model's forward takes its cache (it moved across transformers releases)."""
    params = inspect.signature(model.forward).parameters
    for name in ("cache", "past_key_values", "cache_params"):
        if name in params:
            return name
    raise ValueError(f"{type(model).__name__}.forward takes no cache argument, so cached decoding cannot be timed")


def _returned_cache(output) -> Any:
    for name in ("cache", "past_key_values", "cache_params"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    raise ValueError("the model returned no cache with use_cache=True, so cached decoding cannot be timed")


def cache_tensor_bytes(cache: Any) -> int:
    """Bytes of every distinct tensor reachable from a cache object (lists, dicts and attributes walked)."""
    seen: set[int] = set()
    total = 0
    stack = [cache]
    visited: set[int] = set()
    while stack:
        obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            key = obj.untyped_storage().data_ptr() if obj.numel() else id(obj)
            if key not in seen:
                seen.add(key)
                total += obj.numel() * obj.element_size()
            continue
        if id(obj) in visited or obj is None or isinstance(obj, (str, bytes, int, float, bool, torch.dtype,
                                                                    torch.device)):
            continue
        visited.add(id(obj))
        if isinstance(obj, Mapping):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, torch.nn.Module):
            stack.extend(vars(obj).values())
    return total


def computed_cache_bytes(model: torch.nn.Module, seq_len: int) -> int | None:
    """Cache bytes of one sequence of `seq_len` tokens from the model's dimensions (None without an adapter)."""
    from ..architectures import get_adapter
    from ..architectures.cache import cache_bytes

    try:
        adapter = get_adapter(model)
        dims = adapter.dims(model.config)
    except ValueError:
        return None
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    ssm = adapter.cache_state_dtype(model.config)
    return sum(cache_bytes(dims, batch=1, seq_len=seq_len, dtype=dtype, ssm_state_dtype=ssm, adapter=adapter).values())


# ---- one run -----------------------------------------------------------------------------------------

@torch.no_grad()
def generate_once(model: torch.nn.Module, ids: torch.Tensor, new_tokens: int) -> dict[str, float | int | None]:
    """Prefill `ids` then decode `new_tokens` greedy tokens with the cache; times, memory and cache bytes."""
    device = ids.device
    batch, context = ids.shape
    kw = _cache_kwarg(model)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    with PeakMemory(device) as peak:
        _synchronize(device)
        start = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, **keep)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        _synchronize(device)
        ttft = time.perf_counter() - start
        cache = _returned_cache(out)
        del out
        start = time.perf_counter()
        for _ in range(new_tokens):
            out = model(input_ids=token, use_cache=True, **{kw: cache})
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            cache = _returned_cache(out)
            del out
        _synchronize(device)
        decode = time.perf_counter() - start
    return {
        "prefill_tokens_per_s": batch * context / max(ttft, 1e-9),
        "ttft_s": ttft,
        "decode_tokens_per_s": batch * new_tokens / max(decode, 1e-9),
        "peak_memory_mib": peak.mib,
        "cache_mib_per_seq": cache_tensor_bytes(cache) / batch / MIB,
    }


# ---- side by side ------------------------------------------------------------------------------------

@dataclass
class SpeedResult:
    """Median figures per model × batch × context, with ratios to the first model, and the kernels that ran."""

    cells: list[dict[str, Any]] = field(default_factory=list)
    kernels: dict[str, dict[str, str]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "kernels": self.kernels, "cells": self.cells}

    def cell(self, model: str, batch: int, context: int) -> dict[str, Any]:
        for c in self.cells:
            if (c["model"], c["batch"], c["context"]) == (model, batch, context):
                return c
        raise KeyError((model, batch, context))


def _median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _as_named(models) -> dict[str, torch.nn.Module]:
    if isinstance(models, Mapping):
        return dict(models)
    return {f"model{i}": m for i, m in enumerate(models)}


def _check_sizes(batch_sizes: Sequence[int], contexts: Sequence[int], new_tokens: int, warmup: int,
                 repeats: int) -> None:
    if not batch_sizes or not contexts:
        raise ValueError("give at least one batch size and one context length")
    if min(batch_sizes) < 1 or min(contexts) < 1:
        raise ValueError(f"batch sizes and context lengths must be >= 1, got {list(batch_sizes)} and {list(contexts)}")
    if new_tokens < 1 or repeats < 1 or warmup < 0:
        raise ValueError("new_tokens and repeats must be >= 1 and warmup >= 0")


def measure_generation(models: Mapping[str, torch.nn.Module] | Sequence[torch.nn.Module], *,
                       batch_sizes: Sequence[int] = (1,), contexts: Sequence[int] = (128,), new_tokens: int = 32,
                       warmup: int = 1, repeats: int = 3, seed: int = 0, progress=None) -> SpeedResult:
    """Generation speed of several models side by side (see the module docstring for what is measured).

    `models`: `{name: model}` (the first is the reference for ratios) or a list. All models get the same
    random prompt per cell, drawn from the smallest vocabulary among them. `progress(text)` is called
    before each cell.
    """
    named = _as_named(models)
    if not named:
        raise ValueError("measure_generation needs at least one model")
    _check_sizes(batch_sizes, contexts, new_tokens, warmup, repeats)
    vocab = min(int(getattr(m.config, "vocab_size", 2)) for m in named.values())
    result = SpeedResult(settings={"batch_sizes": list(batch_sizes), "contexts": list(contexts),
                                   "new_tokens": new_tokens, "warmup": warmup, "repeats": repeats,
                                   "reference": next(iter(named))})
    modes = {name: m.training for name, m in named.items()}
    for m in named.values():
        m.eval()
    try:
        for name, m in named.items():
            result.kernels[name] = {**kernels_used(m), "device": str(next(m.parameters()).device),
                                    "dtype": str(next(m.parameters()).dtype).replace("torch.", "")}
        for m in named.values():  # one-time costs (lazy imports, cache set-up) stay out of every cell
            generate_once(m, torch.randint(0, vocab, (1, 8)).to(next(m.parameters()).device), 2)
        g = torch.Generator().manual_seed(seed)
        for batch in batch_sizes:
            for context in contexts:
                if progress is not None:
                    progress(f"batch {batch}, context {context}")
                prompt = torch.randint(0, vocab, (batch, context), generator=g)
                runs: dict[str, list[dict]] = {name: [] for name in named}
                for r in range(warmup + repeats):  # interleaved: A B A B ...
                    for name, m in named.items():
                        figures = generate_once(m, prompt.to(next(m.parameters()).device), new_tokens)
                        if r >= warmup:
                            runs[name].append(figures)
                ref = None
                for name, m in named.items():
                    cell = {"model": name, "batch": batch, "context": context, "new_tokens": new_tokens}
                    cell.update({k: _median([f[k] for f in runs[name]]) for k in FIGURES})
                    computed = computed_cache_bytes(m, context + new_tokens)
                    cell["cache_mib_per_seq_computed"] = None if computed is None else computed / MIB
                    ref = ref or cell
                    cell["ratios"] = {k: (cell[k] / ref[k] if cell[k] is not None and ref[k] else None)
                                      for k in FIGURES}
                    result.cells.append(cell)
    finally:
        for name, m in named.items():
            m.train(modes[name])
    return result


def all_finite_positive(result: SpeedResult) -> bool:
    """Every timing figure of every cell is a positive, finite number (a check the tests and CLI share)."""
    keys = ("prefill_tokens_per_s", "ttft_s", "decode_tokens_per_s", "cache_mib_per_seq")
    return all(isinstance(c[k], float) and math.isfinite(c[k]) and c[k] > 0 for c in result.cells for k in keys)
