"""The inference cache of a model's dimensions, in bytes: the layout of the transformers cache objects
(`DynamicLayer` keys/values, `LinearAttentionLayer` conv/recurrent states), counted per block kind.

It lives with the adapters because it reads only `Dims`: the search's cost model
(`archsearch.cost`), the memory forecasts (`checkpoint.forecast`) and the generation speed check
(`evaluate.speed`) all count the cache here.
"""

from __future__ import annotations

from .dims import ATTENTION, CONV, GDN, MAMBA, Dims
from .gdn import gdn_cache_bytes

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
                ssm_state_dtype: str = "float32") -> dict[str, int]:
    """Bytes of the inference cache: `kv` (attention), `conv` and `ssm` (Mamba; `conv` also short convolutions) at `batch × seq_len`."""
    b = dtype_bytes(dtype)
    kv = conv = ssm = 0
    n_attn = dims.count_of(ATTENTION)
    if n_attn:
        # `kv_cache_width`: what a family caches per token instead of keys and values (MLA: one latent)
        width = dims.extra("kv_cache_width") or 2 * dims.num_key_value_heads * dims.attention_head_dim
        kv = n_attn * batch * seq_len * width * b
    n_mamba = dims.count_of(MAMBA)
    if n_mamba:
        inner = dims.mamba_num_heads * dims.mamba_head_dim
        conv_dim = inner + 2 * dims.mamba_n_groups * dims.mamba_state_size
        if dims.extra("conv_streams"):  # a conv over stacked copies of the mixer width (KDA: q ‖ k ‖ v)
            conv_dim = dims.extra("conv_streams") * inner
        conv = n_mamba * batch * conv_dim * dims.mamba_conv_kernel * b
        ssm = n_mamba * batch * inner * dims.mamba_state_size * dtype_bytes(ssm_state_dtype)
    n_conv = dims.count_of(CONV)
    if n_conv:  # short convolutions (LFM2): the last conv_L_cache inputs of every hidden channel
        conv += n_conv * batch * dims.hidden_size * dims.extra("conv_L_cache") * b
    n_gdn = dims.count_of(GDN)
    if n_gdn:  # Gated DeltaNet: conv window over q ‖ k ‖ v, recurrent state [Hv, dk, dv]
        gdn_conv, gdn_state = gdn_cache_bytes(dims, batch, dtype_bytes(ssm_state_dtype), b)
        conv, ssm = conv + n_gdn * gdn_conv, ssm + n_gdn * gdn_state
    return {"kv": kv, "conv": conv, "ssm": ssm}
