"""Ranking, short KD, tie-breaks and resuming of `search` on tiny models with hand-made scores."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

import hybridprune as hp
from conftest import build, tiny_nemotron_config
from hybridprune.architectures import get_adapter
from hybridprune.evaluate import evaluate_loss
from hybridprune.importance.scores import Scores
from hybridprune.pruning.plan import Plan
from hybridprune.archsearch import (
    Budget, ImpossibleBudget, SearchConfig, SearchSpace, SearchStateError, choose_best, search,
)

search_module = importlib.import_module("hybridprune.archsearch.searcher")  # the module, not the function

DEAD = torch.arange(0, 64, 4)  # 16 FFN neurons per MLP block whose output weights are zero


@pytest.fixture(scope="module")
def setup():
    """A confident random model, data it predicts well (its own greedy continuations), FFN neurons
    that contribute nothing, and hand-made scores that rank exactly those neurons last."""
    model = build(tiny_nemotron_config(), seed=3)
    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    with torch.no_grad():
        model.lm_head.weight.mul_(6.0)
        for i in dims.layers_of("mlp"):
            model.model.layers[i].mixer.down_proj.weight[:, DEAD] = 0.0
        ids = torch.randint(3, 96, (8, 4), generator=torch.Generator().manual_seed(0))
        for _ in range(16):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    g = torch.Generator().manual_seed(0)
    scores = Scores(hidden=torch.rand(48, generator=g) + 1)
    for i in dims.layers_of("mamba"):
        scores.mamba[i] = torch.rand(12, 8, generator=g) + 1
    for i in dims.layers_of("attention"):
        scores.attention[i] = torch.rand(8, 8, generator=g) + 1
    for i in dims.layers_of("mlp"):
        s = torch.rand(64, generator=g) + 1
        s[DEAD] = 0.0
        scores.ffn[i] = s
    space = SearchSpace(choices={"hidden_size": [48, 40, 32], "ffn_hidden_size": [64, 48]},
                        skip=("mamba_num_heads", "mamba_head_dim", "num_attention_heads", "num_layers"))

    def params(h, f):
        return adapter.num_parameters(dims.replace(hidden_size=h, ffn_hidden_size=f))

    # Fits h48-f48, h40-f64 and the smaller ones; not the original h48-f64.
    budget = Budget(params=max(params(48, 48), params(40, 64)))
    assert params(48, 64) > budget.params
    return model, scores, ids, space, budget


def _config(space, **kw):
    return SearchConfig(space=space, band=None, measure_speed=False, progress=False, **kw)


def test_a_lossless_candidate_is_ranked_first(setup):
    model, scores, ids, space, budget = setup
    result = search(model, scores, ids, budget, _config(space, top_k=2))
    assert result.best_key == "L6-h48-f48-mh12-md8-ah8"
    assert result.best == Plan(hidden_size=48, ffn_hidden_size=48, mamba_num_heads=12, mamba_head_dim=8,
                               num_attention_heads=8)
    original = evaluate_loss(model, ids)["loss"]
    best = result.best_candidate
    assert best["zero_shot_loss"] == pytest.approx(original, abs=1e-5)
    others = [c["zero_shot_loss"] for c in result.candidates if c["key"] != result.best_key]
    assert len(others) == 4 and min(others) > original + 0.05
    assert [c["key"] for c in result.candidates][0] == result.best_key
    assert all(c["params"] <= budget.params for c in result.candidates)


def test_the_loss_after_distillation_decides(setup):
    model, scores, ids, space, budget = setup
    calls = []

    def finetune(teacher, student, data, kd):
        calls.append((student.config.hidden_size, student.config.intermediate_size))
        assert teacher is model and data is ids and kd == {"steps": 3}
        if student.config.intermediate_size == 48 and student.config.hidden_size == 48:
            with torch.no_grad():  # spoil the zero-shot winner
                student.lm_head.weight.add_(torch.randn_like(student.lm_head.weight))
        return student

    result = search(model, scores, ids, budget, _config(space, top_k=3, kd={"steps": 3}), train_data=ids,
                    finetune=finetune)
    assert len(calls) == 3
    assert result.best_key != "L6-h48-f48-mh12-md8-ah8"
    assert result.best_candidate["loss"] == min(c["loss"] for c in result.candidates if c["loss"] is not None)
    assert [c["loss"] is not None for c in result.candidates] == [True] * 3 + [False] * 2
    with pytest.raises(ValueError, match="train_data"):
        search(model, scores, ids, budget, _config(space, kd={"steps": 3}))


def test_ties_are_broken_by_throughput_when_asked(setup, monkeypatch):
    rows = [{"key": "a", "loss": 1.000, "throughput": 10.0, "params": 100, "memory_mb": 1.0},
            {"key": "b", "loss": 1.004, "throughput": 30.0, "params": 200, "memory_mb": 2.0},
            {"key": "c", "loss": 1.200, "throughput": 99.0, "params": 50, "memory_mb": 0.5}]
    assert choose_best(rows, tolerance=0.005, tie_break="speed") == "b"
    assert choose_best(rows, tolerance=0.001, tie_break="speed") == "a"
    model, scores, ids, space, budget = setup
    monkeypatch.setattr(search_module, "measure_throughput", lambda m, b, t: 1000.0 / m.config.hidden_size)
    cfg = _config(space, top_k=5, tie_tolerance=10.0, tie_break="speed")
    result = search(model, scores, ids, budget, SearchConfig(**{**cfg.__dict__, "measure_speed": True}))
    assert result.best_candidate["values"]["hidden_size"] == 32  # all tie; the narrowest is fastest
    assert result.decision["decided_by"] == "tie: measured speed" and len(result.decision["tied"]) == 5


def test_an_interrupted_search_resumes_without_redoing_finished_candidates(setup, tmp_path, monkeypatch):
    model, scores, ids, space, budget = setup
    cfg = _config(space, top_k=3, kd={"steps": 1})
    counts = {"eval": 0, "kd": 0}
    limits = {"eval": None, "kd": None}

    def counting_eval(*args, **kwargs):
        if limits["eval"] is not None and counts["eval"] >= limits["eval"]:
            raise KeyboardInterrupt
        counts["eval"] += 1
        return evaluate_loss(*args, **kwargs)

    def finetune(teacher, student, data, kd):
        if limits["kd"] is not None and counts["kd"] >= limits["kd"]:
            raise KeyboardInterrupt
        counts["kd"] += 1
        return student

    monkeypatch.setattr(search_module, "evaluate_loss", counting_eval)
    run = lambda **kw: search(model, scores, ids, budget, cfg, train_data=ids, finetune=finetune,  # noqa: E731
                              out_dir=tmp_path / "s", **kw)

    limits["eval"] = 2  # interrupted during the zero-shot stage
    with pytest.raises(KeyboardInterrupt):
        run()
    lines = (tmp_path / "s" / "candidates.jsonl").read_text().splitlines()
    assert len(lines) == 2 and not (tmp_path / "s" / "best.yaml").exists()

    counts.update(eval=0, kd=0)
    limits.update(eval=None, kd=1)  # interrupted during the short distillations
    with pytest.raises(KeyboardInterrupt):
        run()
    assert counts == {"eval": 3 + 1, "kd": 1}  # the 3 zero-shot losses left, then one KD + its loss

    counts.update(eval=0, kd=0)
    limits.update(kd=None)
    result = run()
    assert counts == {"eval": 2, "kd": 2}

    counts.update(eval=0, kd=0)
    again = run()
    assert counts == {"eval": 0, "kd": 0} and again.best_key == result.best_key
    records = [json.loads(line) for line in (tmp_path / "s" / "candidates.jsonl").read_text().splitlines()]
    assert len(records) == 5 + 3 and len({(r["stage"], r["key"]) for r in records}) == 8

    with pytest.raises(SearchStateError, match="other settings"):
        search(model, scores, ids, budget, _config(space, top_k=2, kd={"steps": 1}), train_data=ids,
               finetune=finetune, out_dir=tmp_path / "s")
    run(overwrite=True)
    assert counts == {"eval": 5 + 3, "kd": 3}


def test_outputs_plan_plot_and_summary(setup, tmp_path):
    model, scores, ids, space, budget = setup
    result = hp.search(model, scores, ids, budget, _config(space, top_k=2), out_dir=tmp_path)
    assert isinstance(result, hp.SearchResult)
    for name in ("best.yaml", "search.png", "summary.json", "search.json", "candidates.jsonl"):
        assert (tmp_path / name).is_file(), name
    plan = Plan.parse(str(tmp_path / "best.yaml"))
    assert plan == result.best
    pruned = hp.prune(model, scores, tmp_path / "best.yaml")
    assert pruned.config.intermediate_size == 48
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best"] == result.best_key and len(summary["candidates"]) == 5


def test_an_impossible_budget_is_a_clear_error(setup):
    model, scores, ids, space, _ = setup
    with pytest.raises(ImpossibleBudget, match="smallest representable candidate is L6-h32-f48"):
        search(model, scores, ids, Budget(params=10_000), _config(space))


def test_the_default_short_distillation_runs(setup):
    pytest.importorskip("hybridprune.distillation")
    model, scores, ids, space, budget = setup
    kd = {"steps": 2, "global_batch": 4, "micro_batch": 2, "lr": 1e-3}
    result = search(model, scores, ids, budget, _config(space, top_k=1, kd=kd), train_data=ids)
    best = result.best_candidate
    assert best["kd"] == kd and best["loss"] != best["zero_shot_loss"]
    assert all(p.requires_grad for p in model.parameters())  # the teacher is left as it was
