"""Architecture adapters: the only code that knows HF model families.

`get_adapter(model_or_config)` picks the adapter by `config.model_type`.
"""

from __future__ import annotations

from .base import (
    ATTENTION,
    CONV,
    GDN,
    MAMBA,
    MLP,
    MOE,
    Adapter,
    Block,
    Dims,
    ParamRule,
    Unrepresentable,
    UnsupportedArchitecture,
)
from .bamba import BambaAdapter
from .config_values import check_config_values
from .deepseek_moe import DeepseekMoeAdapter
from .dense import DenseAdapter, Gemma3WrapperAdapter
from .falcon_h1 import FalconH1Adapter
from .granitemoehybrid import GraniteMoeHybridAdapter
from .jamba import JambaAdapter
from .kimi_linear import KimiLinearAdapter
from .lfm2 import Lfm2Adapter
from .llama import LlamaAdapter
from .mamba2 import Mamba2Adapter
from .nemotron_h import NemotronHAdapter
from .olmo_hybrid import OlmoHybridAdapter
from .qwen3_5 import Qwen3_5Adapter, Qwen3_5VLAdapter
from .transformer_moe import TransformerMoeAdapter
from .zamba2 import Zamba2Adapter

ADAPTERS: tuple[type[Adapter], ...] = (
    NemotronHAdapter, Mamba2Adapter, BambaAdapter, GraniteMoeHybridAdapter, FalconH1Adapter, Zamba2Adapter,
    LlamaAdapter, Qwen3_5Adapter, Qwen3_5VLAdapter, OlmoHybridAdapter, JambaAdapter, KimiLinearAdapter, Lfm2Adapter,
    TransformerMoeAdapter, DeepseekMoeAdapter, DenseAdapter, Gemma3WrapperAdapter,
)
#: model types an adapter recognises only to refuse them with the reason
REFUSED: tuple[str, ...] = (*JambaAdapter.model_types, *Gemma3WrapperAdapter.model_types)


def supported_model_types() -> list[str]:
    return sorted(t for a in ADAPTERS for t in a.model_types if t not in REFUSED)


def count_parameters(dims: Dims, *, embeddings: bool = True, model_type: str | None = None) -> int:
    """Analytic parameter count of a model from its dimensions alone.

    `model_type` picks the family's layer layouts (default: Nemotron-H's one-mixer-per-layer blocks).
    `embeddings=False` leaves out the input embedding and the LM head.
    """
    for cls in ADAPTERS:
        if (model_type or "nemotron_h") in cls.model_types:
            return cls(model_type or "nemotron_h").num_parameters(dims, embeddings=embeddings)
    raise UnsupportedArchitecture(f"no adapter for model type {model_type!r}")


def get_adapter(model_or_config) -> Adapter:
    """The adapter for a model or config; raises UnsupportedArchitecture naming what is supported."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            check_config_values(config)  # a zero divisor is named here, not met as a ZeroDivisionError
            adapter = cls(model_type)
            adapter.check_supported(config)
            return adapter
    raise UnsupportedArchitecture(
        f"architecture {model_type!r} is not supported. Supported model types: "
        f"{', '.join(supported_model_types())}. Adding one is a new adapter in hybridprune/architectures/."
    )


__all__ = [
    "ADAPTERS", "ATTENTION", "CONV", "GDN", "MAMBA", "MLP", "MOE", "Adapter", "Block", "Dims", "ParamRule",
    "Unrepresentable", "UnsupportedArchitecture", "count_parameters", "get_adapter",
    "supported_model_types",
]
