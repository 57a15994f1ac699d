"""Architecture search under a budget (Minitron-SSM §5): a grid of candidates, an exact analytic
cost model, the representability filter, zero-shot ranking from one set of scores, a short
distillation of the top-K, and resumable results. See docs/search.md."""

from __future__ import annotations

from .cost import Budget, BudgetError, Cost, cache_bytes, estimate_cost, parse_params
from .filtering import FilterReport, ImpossibleBudget, filter_candidates
from .search import SearchConfig, SearchError, SearchResult, choose_best, distill_finetune, search
from .space import AXES, Candidate, SearchSpace, SearchSpaceError, build_grid
from .store import SearchStateError

__all__ = [
    "AXES", "Budget", "BudgetError", "Candidate", "Cost", "FilterReport", "ImpossibleBudget", "SearchConfig",
    "SearchError", "SearchResult", "SearchSpace", "SearchSpaceError", "SearchStateError", "build_grid",
    "cache_bytes", "choose_best", "distill_finetune", "estimate_cost", "filter_candidates", "parse_params",
    "search",
]

