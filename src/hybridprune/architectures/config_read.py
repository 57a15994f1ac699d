"""Read a checkpoint's config without transformers where the view is exact (`config_view`), else with it.

Separate from `config_view` because it needs the adapters (each adapter holds its family's view rules),
and the adapters need the view's vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import ADAPTERS
from .config_view import ConfigView, view_of


def view_config(raw: dict[str, Any]) -> ConfigView | None:
    """`raw` (a config.json dict) as a `ConfigView`, or None where the view would not be exact: a model
    type without an adapter, an adapter without view rules, keys the view does not emulate."""
    model_type = raw.get("model_type")
    rules = next((cls.config_view_rules for cls in ADAPTERS if model_type in cls.model_types), None)
    return view_of(raw, rules)


def read_view(source: str | Path) -> ConfigView | None:
    """The config.json of checkpoint directory `source` as a `ConfigView`, or None where the view would
    not be exact (or the file is not a readable JSON object: transformers then says what is wrong)."""
    try:
        raw = json.loads((Path(source) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return view_config(raw) if isinstance(raw, dict) else None


def read_config(source: str | Path):
    """The config of checkpoint directory `source`: a `ConfigView` where it is exact, else transformers'
    config, read as `AutoConfig.from_pretrained(source, trust_remote_code=False)` reads it (remote code
    is never run)."""
    view = read_view(source)
    if view is not None:
        return view
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source, trust_remote_code=False)
