"""Architecture adapters: the only code that knows HF model families.

`get_adapter(model_or_config)` picks the adapter by `config.model_type`.
"""

from __future__ import annotations

from .base import (
    ATTENTION,
    MAMBA,
    MLP,
    MOE,
    Adapter,
    Block,
    Dims,
    ParamRule,
    Unrepresentable,
    UnsupportedArchitecture,
    count_parameters,
)
from .mamba2 import Mamba2Adapter
from .nemotron_h import NemotronHAdapter

ADAPTERS: tuple[type[Adapter], ...] = (NemotronHAdapter, Mamba2Adapter)


def supported_model_types() -> list[str]:
    return sorted(t for a in ADAPTERS for t in a.model_types)


def get_adapter(model_or_config) -> Adapter:
    """The adapter for a model or config; raises UnsupportedArchitecture naming what is supported."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            adapter = cls()
            adapter.check_supported(config)
            return adapter
    raise UnsupportedArchitecture(
        f"architecture {model_type!r} is not supported. Supported model types: "
        f"{', '.join(supported_model_types())}. Adding one is a new adapter in hybridprune/architectures/."
    )


__all__ = [
    "ADAPTERS", "ATTENTION", "MAMBA", "MLP", "MOE", "Adapter", "Block", "Dims", "ParamRule",
    "Unrepresentable", "UnsupportedArchitecture", "count_parameters", "get_adapter",
    "supported_model_types",
]
