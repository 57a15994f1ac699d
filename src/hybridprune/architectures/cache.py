"""The inference cache of a model's dimensions, in bytes: the layout of the transformers cache objects
(`DynamicLayer` keys/values, `LinearAttentionLayer` conv/recurrent states).

Each unit layout states what one unit keeps (`UnitLayout.cache`, a `UnitCache`) as it states its
parameter count, and this sums it over the layers: the search's cost model (`archsearch.cost`), the
memory forecasts (`checkpoint.forecast`) and the generation speed check (`evaluate.speed`) all count
the cache here, and a new mixer brings its cache with its layout.
"""

from __future__ import annotations

from .base import UnitCache
from .dims import Dims

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


def cache_bytes(dims: Dims, *, adapter, batch: int, seq_len: int, dtype: str = "bfloat16",
                ssm_state_dtype: str = "float32") -> dict[str, int]:
    """Bytes of the inference cache at `batch × seq_len`: `kv` (what grows per token: attention keys and
    values), `conv` (convolution windows) and `ssm` (recurrent states, at `ssm_state_dtype`), summed over
    the units of `adapter`'s layer layouts (each states its own cache: no family is named here)."""
    total = sum((adapter.layer_spec(t).cache(dims) for t in dims.block_kinds), UnitCache())
    b = dtype_bytes(dtype)
    return {"kv": batch * seq_len * total.per_token * b, "conv": batch * total.conv * b,
            "ssm": batch * total.state * dtype_bytes(ssm_state_dtype)}
