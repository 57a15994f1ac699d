"""Architecture search under a budget (Minitron-SSM §5): a grid of candidates, an exact analytic
cost model, the representability filter, zero-shot ranking from one set of scores, a short
distillation of the top-K, and resumable results. See docs/search.md.

The names below load on first use (PEP 562): the budget's rules (`cost`) are torch-free and the
command line checks `--params` with them before anything heavy is imported; the search itself
(`searcher`) needs torch."""

from __future__ import annotations

import importlib

_WHERE = {
    "cost": ("Budget", "BudgetError", "Cost", "cache_bytes", "estimate_cost", "parse_params"),
    "filtering": ("FilterReport", "ImpossibleBudget", "filter_candidates"),
    "searcher": ("SearchConfig", "SearchError", "SearchResult", "choose_best", "distill_finetune", "search"),
    "space": ("AXES", "Candidate", "SearchSpace", "SearchSpaceError", "build_grid"),
    "store": ("SearchStateError",),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
