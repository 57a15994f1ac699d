"""The analytic cost model, and the budget a search must fit.

Parameters come from the adapter's exact count, and the inference cache from its unit layouts (each
states what one unit keeps, `UnitLayout.cache`; `architectures.cache` sums them). Memory, in MiB
(2**20 bytes), is what inference at a given batch and sequence length holds:

- weights: every parameter at the weight dtype;
- KV cache: what grows with every token (attention keys and values; an MLA latent), at the weight dtype;
- Mamba state: what does not: convolution windows (Mamba, KDA, Gated DeltaNet, short convolutions) at
  the weight dtype and recurrent states at `ssm_state_dtype` (float32 in Hugging Face's Mamba2,
  Nemotron-H, KDA and Gated DeltaNet).

This is the layout of the transformers cache objects (`DynamicLayer` keys/values,
`LinearAttentionLayer` conv/recurrent states); the tests check it against a real forward's cache.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from ..architectures import Dims
from ..architectures.cache import DTYPE_BYTES, BudgetError, cache_bytes, dtype_bytes  # noqa: F401 - named here too

MIB = 2**20
PARAMS_KINDS = ("total", "non_embedding")


@dataclass(frozen=True)
class Cost:
    """What one architecture costs: parameters and inference memory (MiB)."""

    params: int
    params_non_embedding: int
    weights_mb: float
    kv_cache_mb: float
    mamba_state_mb: float
    #: parameters one token uses (MoE: the routed experts it is not sent to left out)
    active_params: int = 0

    @property
    def memory_mb(self) -> float:
        return self.weights_mb + self.kv_cache_mb + self.mamba_state_mb

    def params_of(self, kind: str) -> int:
        return self.params if kind == "total" else self.params_non_embedding

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "memory_mb": self.memory_mb}


def estimate_cost(adapter, dims: Dims, *, batch: int = 1, seq_len: int = 4096, dtype: str = "bfloat16",
                  ssm_state_dtype: str = "float32") -> Cost:
    """The exact analytic cost of a model with dimensions `dims`."""
    params = adapter.num_parameters(dims, embeddings=True)
    caches = cache_bytes(dims, batch=batch, seq_len=seq_len, dtype=dtype, ssm_state_dtype=ssm_state_dtype,
                         adapter=adapter)
    return Cost(
        params=params,
        params_non_embedding=adapter.num_parameters(dims, embeddings=False),
        weights_mb=params * dtype_bytes(dtype) / MIB,
        kv_cache_mb=caches["kv"] / MIB,
        mamba_state_mb=(caches["conv"] + caches["ssm"]) / MIB,
        active_params=adapter.num_active_parameters(dims, embeddings=True),
    )


_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_params(spec: float | int | str, original: int | None = None, what: str = "the parameter budget") -> int:
    """`4.5e9`, `4.5B`, `350M` (absolute) or `0.5x`, `50%` (relative to `original`) -> a count.
    `what` names the budget in errors."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        value, relative = float(spec), False
    else:
        text = str(spec).strip().lower().replace("_", "").replace(",", "")
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(x|%|[kmbgt]?)", text)
        if not m:
            raise BudgetError(f"cannot read {what} {spec!r}; write e.g. 4.5e9, 4.5B, 350M, 0.5x or 50%")
        value, unit = float(m.group(1)), m.group(2)
        relative = unit in ("x", "%")
        value = value / 100 if unit == "%" else value * _SUFFIX.get(unit, 1)
    if not math.isfinite(value) or value <= 0:
        raise BudgetError(f"{what} must be positive, got {spec!r}")
    if relative:
        if original is None:
            raise BudgetError(f"a relative budget {spec!r} needs the original model's parameter count")
        if value > 1:
            raise BudgetError(f"a relative budget above 1x ({spec!r}) cannot shrink the model")
        return int(value * original)
    return int(value)


PARAMS_WHAT, ACTIVE_WHAT = "the parameter budget (--params)", "the active-parameter budget (--active-params)"


@dataclass(frozen=True)
class Budget:
    """What a candidate may cost. At least one of `params`, `active_params` and `memory_mb`.

    - `params`: an absolute count (4.5e9, "4.5B") or relative to the original ("0.5x", "50%"), applied
      to the total count or, with `params_kind="non_embedding"`, to the count without the input
      embedding and LM head.
    - `active_params`: the parameters one token uses (a MoE model's routed experts it is not sent to
      left out; embeddings included), absolute or relative to the original's active count.
    - `memory_mb`: MiB of weights + KV cache + Mamba state at `batch × seq_len`, weights and caches at
      `dtype`, the SSM state at `ssm_state_dtype`.
    """

    params: float | int | str | None = None
    memory_mb: float | None = None
    params_kind: str = "total"
    batch: int = 1
    seq_len: int = 4096
    dtype: str = "bfloat16"
    ssm_state_dtype: str = "float32"
    active_params: float | int | str | None = None

    def __post_init__(self) -> None:
        kind = str(self.params_kind).replace("-", "_")
        object.__setattr__(self, "params_kind", kind)
        if kind not in PARAMS_KINDS:
            raise BudgetError(f"params_kind must be one of {', '.join(PARAMS_KINDS)}, got {self.params_kind!r}")
        if self.params is None and self.memory_mb is None and self.active_params is None:
            raise BudgetError("a budget needs a parameter count (params or active_params) or a memory limit "
                              "(memory_mb), or several")
        if self.memory_mb is not None and not self.memory_mb > 0:
            raise BudgetError(f"memory_mb must be positive, got {self.memory_mb}")
        if self.batch < 1 or self.seq_len < 1:
            raise BudgetError(f"batch and seq_len must be >= 1, got {self.batch} and {self.seq_len}")
        dtype_bytes(self.dtype)
        dtype_bytes(self.ssm_state_dtype)
        for spec, what in ((self.params, PARAMS_WHAT), (self.active_params, ACTIVE_WHAT)):
            if spec is not None:
                parse_params(spec, original=1, what=what)  # syntax check now; relative values resolve later

    def cost(self, adapter, dims: Dims) -> Cost:
        return estimate_cost(adapter, dims, batch=self.batch, seq_len=self.seq_len, dtype=self.dtype,
                             ssm_state_dtype=self.ssm_state_dtype)

    def param_limit(self, adapter, original: Dims) -> int | None:
        """The absolute parameter limit (a relative budget is taken of the original's count of the same kind)."""
        if self.params is None:
            return None
        base = adapter.num_parameters(original, embeddings=self.params_kind == "total")
        return parse_params(self.params, original=base, what=PARAMS_WHAT)

    def active_limit(self, adapter, original: Dims) -> int | None:
        """The absolute limit on active parameters (a relative one is taken of the original's)."""
        if self.active_params is None:
            return None
        return parse_params(self.active_params, original=adapter.num_active_parameters(original), what=ACTIVE_WHAT)

    def fits(self, cost: Cost, param_limit: int | None, active_limit: int | None = None) -> bool:
        if param_limit is not None and cost.params_of(self.params_kind) > param_limit:
            return False
        if active_limit is not None and cost.active_params > active_limit:
            return False
        return self.memory_mb is None or cost.memory_mb <= self.memory_mb

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
