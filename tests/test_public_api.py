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


def test_the_python_api_loads_as_the_commands_do(monkeypatch):
    """One load path: `hp.load_model` is the function the commands load through (its dtype rule, "auto"
    is bfloat16 on a GPU, lives there and nowhere else)."""
    from hybridprune.checkpoint import load
    from hybridprune.cli import common

    assert hp.load_model is load.load_model
    calls = []
    monkeypatch.setattr(load, "load_model", lambda path, **kw: calls.append((path, kw)))
    common.load_model("some/dir", dtype="auto")
    assert calls and calls[0][0] == "some/dir" and calls[0][1]["dtype"] == "auto" and calls[0][1]["device"] == "auto"
