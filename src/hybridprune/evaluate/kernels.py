"""Which kernels a model's generation runs on: the Mamba fast path or the PyTorch fallback, SDPA or eager.

transformers picks the `mamba_ssm` / `causal_conv1d` kernels when those packages import and the
model is on a CUDA device; otherwise the Mamba mixers run their PyTorch reference path. Attention
runs the implementation recorded in `config._attn_implementation` (`sdpa`, `eager`,
`flash_attention_2`, ...).
"""

from __future__ import annotations

import torch


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def kernels_used(model: torch.nn.Module) -> dict[str, str]:
    """`{"mamba": ..., "attention": ...}` in words, for the speed table; keys only for block kinds present."""
    from ..architectures import ATTENTION, MAMBA, get_adapter

    try:
        kinds = set(get_adapter(model).dims(model.config).block_kinds)
    except ValueError:  # an architecture without an adapter: report both
        kinds = {MAMBA, ATTENTION}
    device = next(model.parameters()).device
    out: dict[str, str] = {}
    if MAMBA in kinds:
        have = [p for p in ("mamba_ssm", "causal_conv1d") if _importable(p)]
        if device.type == "cuda" and have:
            out["mamba"] = " + ".join(have) + " (CUDA kernels)"
        else:
            why = "CPU" if device.type != "cuda" else "mamba_ssm/causal_conv1d not installed"
            out["mamba"] = f"PyTorch fallback ({why})"
    if ATTENTION in kinds:
        out["attention"] = str(getattr(model.config, "_attn_implementation", None) or "eager")
    return out
