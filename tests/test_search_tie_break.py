"""A search chooses the same winner every run: loss ties are broken by the analytic cost, and measured
speed decides only when asked (`tie_break="speed"`, `--tie-break speed`). What decided is recorded."""

from __future__ import annotations

import importlib
import itertools
import json

import pytest
import torch

from conftest import build, tiny_nemotron_config
from hybridprune.architectures import get_adapter
from hybridprune.archsearch import Budget, SearchConfig, SearchError, SearchSpace, search
from hybridprune.archsearch.searcher import decide
from hybridprune.importance.scores import Scores

search_module = importlib.import_module("hybridprune.archsearch.searcher")

ROWS = [{"key": "a", "loss": 1.000, "throughput": 10.0, "params": 300, "memory_mb": 3.0},
        {"key": "b", "loss": 1.004, "throughput": 30.0, "params": 200, "memory_mb": 2.5},
        {"key": "c", "loss": 1.003, "throughput": 20.0, "params": 200, "memory_mb": 2.0},
        {"key": "d", "loss": 1.200, "throughput": 99.0, "params": 50, "memory_mb": 0.5}]


def test_cost_breaks_ties_by_parameters_then_memory():
    assert decide(ROWS, 0.005) == {"best": "c", "decided_by": "tie: analytic cost", "tied": ["c", "b", "a"],
                                   "tie_break": "cost", "tie_tolerance": 0.005}
    assert decide(ROWS, 0.005, "speed") == {"best": "b", "decided_by": "tie: measured speed",
                                            "tied": ["b", "c", "a"], "tie_break": "speed", "tie_tolerance": 0.005}
    assert decide(ROWS, 0.001) == {"best": "a", "decided_by": "loss", "tied": [], "tie_break": "cost",
                                   "tie_tolerance": 0.001}
    with pytest.raises(SearchError, match="tie_break must be one of cost, speed, got 'fast'"):
        decide(ROWS, 0.005, "fast")


@pytest.fixture(scope="module")
def setup():
    """A tiny model and complete scores; every candidate's loss ties at a wide tolerance."""
    model = build(tiny_nemotron_config(), seed=5)
    dims = get_adapter(model).dims(model.config)
    g = torch.Generator().manual_seed(0)
    scores = Scores(hidden=torch.rand(48, generator=g) + 1)
    for i in dims.layers_of("mamba"):
        scores.mamba[i] = torch.rand(12, 8, generator=g) + 1
    for i in dims.layers_of("attention"):
        scores.attention[i] = torch.rand(8, 8, generator=g) + 1
    for i in dims.layers_of("mlp"):
        scores.ffn[i] = torch.rand(64, generator=g) + 1
    ids = torch.randint(3, 96, (2, 8), generator=g)
    space = SearchSpace(choices={"hidden_size": [48, 32], "ffn_hidden_size": [64, 48]},
                        skip=("mamba_num_heads", "mamba_head_dim", "num_attention_heads", "num_layers"))
    return model, scores, ids, space, Budget(params="0.99x")


@pytest.mark.slow
def test_two_searches_with_noisy_throughput_choose_the_same_winner(setup, tmp_path, monkeypatch):
    model, scores, ids, space, budget = setup
    noise = itertools.count(1)  # every measurement differs, as on a busy machine
    monkeypatch.setattr(search_module, "measure_throughput", lambda m, b, t: float(next(noise) * 7919 % 1000))
    cfg = SearchConfig(space=space, band=None, top_k=3, tie_tolerance=100.0, progress=False)
    first = search(model, scores, ids, budget, cfg, out_dir=tmp_path / "one")
    second = search(model, scores, ids, budget, cfg, out_dir=tmp_path / "two")
    assert first.best_key == second.best_key == "L6-h32-f48-mh12-md8-ah8"  # the fewest parameters
    assert first.best_candidate["params"] == min(c["params"] for c in first.candidates)
    assert first.decision == second.decision == {
        "decided_by": "tie: analytic cost", "tie_break": "cost", "tie_tolerance": 100.0,
        "tied": ["L6-h32-f48-mh12-md8-ah8", "L6-h32-f64-mh12-md8-ah8", "L6-h48-f48-mh12-md8-ah8"]}
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary["best"] == first.best_key and summary["decision"]["decided_by"] == "tie: analytic cost"
    assert "# chosen by tie: analytic cost among 3 within 100.0" in (tmp_path / "one" / "best.yaml").read_text()

    # Re-deciding by speed reuses every measurement (the tie-break is not part of the search's settings).
    calls = []
    monkeypatch.setattr(search_module, "evaluate_loss", lambda *a, **k: calls.append(1))
    by_speed = search(model, scores, ids, budget, cfg, out_dir=tmp_path / "one", tie_break="speed")
    assert calls == [] and by_speed.decision["decided_by"] == "tie: measured speed"
    fastest = max(by_speed.candidates[:3], key=lambda c: c["throughput"])
    assert by_speed.best_key == fastest["key"]


def test_bad_tie_break_settings_are_refused(setup):
    model, scores, ids, space, budget = setup
    with pytest.raises(SearchError, match="tie_break must be one of cost, speed"):
        search(model, scores, ids, budget, SearchConfig(space=space, tie_break="fastest", progress=False))
    with pytest.raises(SearchError, match="tie_break='speed' needs the throughput"):
        search(model, scores, ids, budget, SearchConfig(space=space, tie_break="speed", measure_speed=False))
