"""The inference cache of a model's dimensions, in bytes: the layout of the transformers cache objects
(`DynamicLayer` keys/values, `LinearAttentionLayer` conv/recurrent states).

Each unit layout states what one unit keeps (`UnitLayout.cache`, a `UnitCache`) as it states its
parameter count, and this sums it over the layers: the search's cost model (`archsearch.cost`), the
memory forecasts (`checkpoint.forecast`) and the generation speed check (`evaluate.speed`) all count
the cache here, and a new mixer brings its cache with its layout.
"""

from __future__ import annotations

from .base import UnitCache
from .dims import ATTENTION, CONV, GDN, MAMBA, Dims, unit_kinds
from .gdn import gdn_cache
from .layouts import SHORT_CONV, kv_cache, mamba2_cache

DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2,
               "float8": 1, "fp8": 1, "int8": 1}


class BudgetError(ValueError):
    """A budget that cannot be read or met; the message says what would work (defined beside the dtype
    table it guards; `archsearch.cost` names it too)."""


def dtype_bytes(dtype: str) -> int:
    name = str(dtype).replace("torch.", "")
    if name not in DTYPE_BYTES:
        raise BudgetError(f"unknown dtype {dtype!r} for the memory estimate; use one of {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[name]


def cache_bytes(dims: Dims, *, batch: int, seq_len: int, dtype: str = "bfloat16",
                ssm_state_dtype: str = "float32", adapter=None) -> dict[str, int]:
    """Bytes of the inference cache at `batch × seq_len`: `kv` (what grows per token: attention keys and
    values), `conv` (convolution windows) and `ssm` (recurrent states, at `ssm_state_dtype`), summed over
    the units of `adapter`'s layer layouts. Without `adapter`, see `_standard_cache`."""
    caches = (adapter.layer_spec(t).cache(dims) if adapter is not None else _standard_cache(dims, t)
              for t in dims.block_kinds)
    total = sum(caches, UnitCache())
    b = dtype_bytes(dtype)
    return {"kv": batch * seq_len * total.per_token * b, "conv": batch * total.conv * b,
            "ssm": batch * total.state * dtype_bytes(ssm_state_dtype)}


#: the cache of each unit kind's standard layout
_STANDARD = {ATTENTION: kv_cache, MAMBA: mamba2_cache, CONV: SHORT_CONV.cache, GDN: gdn_cache}


def _standard_cache(dims: Dims, layer_type: str) -> UnitCache:
    """One layer's cache from the dimensions alone, for a caller that has no adapter: every unit kind's
    standard layout, where the Dims extras `kv_cache_width` (per-token width of an attention that caches
    something else than keys and values: MLA's latent) and `conv_streams` (a conv over stacked copies
    of the mixer width: KDA's q ‖ k ‖ v) stand for the layouts that differ. Equal to the adapters'
    layouts for every family (tests/test_search_cost.py); a caller with an adapter passes it."""
    total = UnitCache()
    for kind in dict.fromkeys(unit_kinds(layer_type)):
        if kind not in _STANDARD:
            continue
        unit = _STANDARD[kind](dims)
        if kind == ATTENTION and dims.extra("kv_cache_width"):
            unit = UnitCache(per_token=dims.extra("kv_cache_width"))
        elif kind == MAMBA and dims.extra("conv_streams"):
            inner = dims.mamba_num_heads * dims.mamba_head_dim
            unit = UnitCache(conv=dims.extra("conv_streams") * inner * dims.mamba_conv_kernel, state=unit.state)
        total += unit
    return total
