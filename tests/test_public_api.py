"""The public names stay what the docs promise, however the subpackages were imported."""

from __future__ import annotations

import importlib

import hybridprune as hp


def test_public_functions_stay_callable_after_subpackage_imports():
    import hybridprune.archsearch.cost as cost  # noqa: F401  (aliased imports of submodules work)
    import hybridprune.distillation.trainer as trainer  # noqa: F401

    for name in hp.__all__:
        assert getattr(hp, name) is not None
    for name in ("calibrate", "depth_importance", "prune", "select", "export", "distill", "search", "evaluate_loss"):
        assert callable(getattr(hp, name)) and not isinstance(getattr(hp, name), type(importlib)), name
