"""From the grid to the candidates worth evaluating: the budget, the representability filter, and
the band of candidates closest to the budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..architectures import Dims, Unrepresentable
from ..architectures.serving import check_tensor_parallel, parse_engines, violations
from .cost import BudgetError, Budget, Cost
from .space import Candidate


class ImpossibleBudget(BudgetError):
    """No candidate of the search space fits the budget."""


@dataclass
class FilterReport:
    """How many candidates each step kept, for the user and for `search.json`."""

    grid: int = 0
    within_budget: int = 0
    unrepresentable: int = 0
    outside_band: int = 0
    over_cap: int = 0
    kept: int = 0
    param_limit: int | None = None
    active_limit: int | None = None
    memory_limit_mb: float | None = None
    params_kind: str = "total"
    unrepresentable_keys: list[str] = field(default_factory=list)
    #: candidates a serving engine of `serve_with` cannot serve (see `architectures.serving`)
    unservable: int = 0
    unservable_keys: list[str] = field(default_factory=list)
    serve_with: list[str] = field(default_factory=list)
    #: what the parameter counts cover, where that is more than the model the search runs on
    counted: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def lines(self) -> list[str]:
        out = [self.counted] if self.counted else []
        out += [f"{self.grid} candidates in the search space", f"{self.within_budget} within the budget"]
        if self.unrepresentable:
            out.append(f"{self.unrepresentable} dropped: the architecture's config cannot represent them")
        if self.unservable:
            out.append(f"{self.unservable} dropped: {' or '.join(self.serve_with)} cannot serve them")
        if self.outside_band:
            out.append(f"{self.outside_band} dropped: too far below the largest candidate that fits (band)")
        if self.over_cap:
            out.append(f"{self.over_cap} dropped: beyond max_candidates (the smallest ones)")
        out.append(f"{self.kept} candidates to evaluate")
        return out


def _param_size(cost: Cost, budget: Budget) -> int:
    """The parameter count the budget limits: active parameters when only those are limited."""
    if budget.params is None and budget.active_params is not None:
        return cost.active_params
    return cost.params_of(budget.params_kind)


def _size(cost: Cost, budget: Budget) -> float:
    """The cost the budget is mainly about: parameters (total or active) if limited, else memory."""
    limited = budget.params is not None or budget.active_params is not None
    return _param_size(cost, budget) if limited else cost.memory_mb


def _describe(c: Candidate, cost: Cost, budget: Budget) -> str:
    active = f", {cost.active_params:,} active" if budget.active_params is not None else ""
    return (f"{c.key} with {cost.params_of(budget.params_kind):,} {budget.params_kind.replace('_', '-')} "
            f"parameters{active} and {cost.memory_mb:,.1f} MiB")


def filter_candidates(adapter, original: Dims, grid: list[Candidate], budget: Budget, *, band: float | None = 0.1,
                      max_candidates: int | None = None, serve_with=(),
                      tensor_parallel: int = 1) -> tuple[list[tuple[Candidate, Cost]], FilterReport]:
    """The candidates to evaluate, closest to the budget first, with a report of what was dropped.

    1. keep those whose analytic cost fits `budget`;
    2. drop those `adapter.check_representable` rejects, and those an engine of `serve_with` cannot
       serve (at `tensor_parallel` GPUs for vLLM; see `architectures.serving`);
    3. with `band`, drop those more than `band` (a fraction) below the largest survivor's size, so the
       search compares architectures of about the same cost rather than ever smaller ones;
    4. with `max_candidates`, keep that many, largest first.

    Raises `ImpossibleBudget` naming the smallest candidate of the space when nothing fits.
    """
    if band is not None and not 0.0 <= band <= 1.0:
        raise BudgetError(f"band must be in [0, 1], got {band}")
    if max_candidates is not None and max_candidates < 1:
        raise BudgetError(f"max_candidates must be >= 1, got {max_candidates}")
    engines = parse_engines(serve_with)
    check_tensor_parallel(tensor_parallel, engines)
    report = FilterReport(grid=len(grid), param_limit=budget.param_limit(adapter, original),
                          active_limit=budget.active_limit(adapter, original),
                          memory_limit_mb=budget.memory_mb, params_kind=budget.params_kind,
                          serve_with=list(engines), counted=_counted(adapter, original))
    costed = [(c, budget.cost(adapter, c.dims)) for c in grid]
    fitting = [(c, cost) for c, cost in costed if budget.fits(cost, report.param_limit, report.active_limit)]
    report.within_budget = len(fitting)
    survivors = []
    for c, cost in fitting:
        try:
            adapter.check_representable(c.dims, original=original)
        except Unrepresentable:
            report.unrepresentable_keys.append(c.key)
            continue
        if violations(adapter.model_type, c.dims, engines, tensor_parallel):
            report.unservable_keys.append(c.key)
            continue
        survivors.append((c, cost))
    report.unrepresentable = len(report.unrepresentable_keys)
    report.unservable = len(report.unservable_keys)
    if not survivors:
        raise ImpossibleBudget(_impossible_message(adapter, original, costed, budget, report, engines, tensor_parallel))
    survivors.sort(key=lambda item: (-_size(item[1], budget), item[0].key))
    if band is not None:
        floor = (1.0 - band) * _size(survivors[0][1], budget)
        inside = [item for item in survivors if _size(item[1], budget) >= floor]
        report.outside_band = len(survivors) - len(inside)
        survivors = inside
    if max_candidates is not None and len(survivors) > max_candidates:
        report.over_cap = len(survivors) - max_candidates
        survivors = survivors[:max_candidates]
    report.kept = len(survivors)
    return survivors, report


def _counted(adapter, original: Dims) -> str:
    """For a checkpoint that carries parts the search does not prune (a vision tower): that the budget's
    counts include them, as the checkpoint `prune` writes (and the memory that serves it) does."""
    if not adapter.carried_prefixes:
        return ""
    whole, language = adapter.num_parameters(original), adapter.text.num_parameters(original)
    return (f"parameters counted: the whole {adapter.model_type} checkpoint, {whole:,}, with the "
            f"{whole - language:,} of its vision tower (carried unchanged; its merger follows hidden_size), as "
            f"`prune` writes it; the language model alone has {language:,}")


def _impossible_message(adapter, original, costed, budget: Budget, report: FilterReport, engines=(),
                        tensor_parallel: int = 1) -> str:
    limits = []
    if report.param_limit is not None:
        limits.append(f"{report.param_limit:,} {budget.params_kind.replace('_', '-')} parameters")
    if report.active_limit is not None:
        limits.append(f"{report.active_limit:,} active parameters")
    if budget.memory_mb is not None:
        limits.append(f"{budget.memory_mb:,.1f} MiB at batch {budget.batch} x {budget.seq_len} tokens")
    representable = []
    for c, cost in costed:
        try:
            adapter.check_representable(c.dims, original=original)
        except Unrepresentable:
            continue
        if not violations(adapter.model_type, c.dims, engines, tensor_parallel):
            representable.append((c, cost))
    pool = representable or costed
    by_params = min(pool, key=lambda item: (_param_size(item[1], budget), item[0].key))
    by_memory = min(pool, key=lambda item: (item[1].memory_mb, item[0].key))
    text = (f"no candidate of the search space fits the budget of {' and '.join(limits)} "
            f"({report.grid} candidates, {report.within_budget} within budget, "
            f"{report.unrepresentable} of those unrepresentable"
            f"{f', {report.unservable} not servable by ' + ' or '.join(engines) if report.unservable else ''}). "
            f"The smallest "
            f"{'representable ' if representable else ''}candidate is "
            f"{_describe(*by_params, budget)}")
    if budget.memory_mb is not None and by_memory[0] is not by_params[0]:
        text += f"; the one with the least memory is {_describe(*by_memory, budget)}"
    return text + (". Raise the budget, or widen the space (max_width_pruning, max_depth_pruning, "
                   "divisors, fewer skipped axes).")
