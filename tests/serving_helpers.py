"""The serving-engine rules on a battery family's tiny dims (tests/test_serving_rules.py, tests/test_lfm2.py)."""

from __future__ import annotations

from families import tiny_config
from hybridprune.architectures import get_adapter
from hybridprune.architectures.serving import ENGINES, violations


def dims_of(family: str, **changes):
    """(adapter, the tiny config's dims, those dims with `changes`)."""
    config = tiny_config(family)
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    return adapter, dims, dims.replace(**changes)


def sources(model_type, dims, engines=ENGINES, tp=1):
    """The sources of the engine rules `dims` break (empty when every rule holds)."""
    return [v.rule.source for v in violations(model_type, dims, engines, tp)]
