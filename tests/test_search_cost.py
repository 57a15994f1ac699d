"""The analytic cost model against built models: parameter counts and inference-cache bytes."""

from __future__ import annotations

import pytest
import torch

from conftest import build, measured_cache_bytes, tiny_mamba2_config, tiny_nemotron_config
from hybridprune.architectures import Unrepresentable, get_adapter
from hybridprune.importance.scores import Scores
from hybridprune.archsearch import Budget, BudgetError, SearchSpace, build_grid, cache_bytes, estimate_cost, parse_params
from hybridprune.archsearch.cost import MIB


def _grid(config, **space):
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    depth = torch.linspace(1.0, 2.0, dims.num_layers).flip(0)  # the last blocks matter least
    grid, _ = build_grid(dims, SearchSpace(**space), Scores(depth_bi=depth))
    return adapter, dims, grid


def _embedding_numel(model):
    params = {id(p): p for p in (model.get_input_embeddings().weight, model.get_output_embeddings().weight)}
    return sum(p.numel() for p in params.values())


@pytest.mark.parametrize("make_config", [tiny_nemotron_config, tiny_mamba2_config])
def test_analytic_parameters_equal_those_of_built_candidates(make_config):
    config = make_config()
    adapter, dims, grid = _grid(config, max_width_pruning=0.5, max_depth_pruning=0.5,
                                divisors={"hidden_size": 8, "ffn_hidden_size": 16, "mamba_head_dim": 2})
    built = 0
    for c in grid[:: max(1, len(grid) // 12)] + grid[-1:]:
        try:
            new_config = adapter.make_config(config, c.dims)
        except Unrepresentable:
            continue
        torch.manual_seed(0)
        model = adapter.build_model(new_config)
        numel = sum(p.numel() for p in model.parameters())
        cost = estimate_cost(adapter, c.dims)
        assert cost.params == numel, c.key
        assert cost.params_non_embedding == numel - _embedding_numel(model), c.key
        built += 1
    assert built >= 5


@pytest.mark.parametrize("make_config", [tiny_nemotron_config, tiny_mamba2_config])
@pytest.mark.parametrize("dtype,name", [(torch.float32, "float32"), (torch.bfloat16, "bfloat16")])
def test_analytic_cache_matches_a_real_forward_cache(make_config, dtype, name):
    config = make_config()
    adapter, dims, grid = _grid(config, divisors={"hidden_size": 8, "mamba_head_dim": 2}, max_depth_pruning=0.4)
    def representable(c):
        try:
            adapter.check_representable(c.dims, original=dims)
            return True
        except Unrepresentable:
            return False

    full = tuple(range(dims.num_layers))
    ok = [c for c in grid if representable(c)]
    picked = [c for c in ok if c.kept_blocks != full][:2] + [c for c in ok if c.kept_blocks == full][1:3]
    checked = 0
    for c in picked:
        new_config = adapter.make_config(config, c.dims)
        model = build(new_config).to(dtype)
        measured = measured_cache_bytes(model, batch=3, seq_len=11)
        assert cache_bytes(c.dims, batch=3, seq_len=11, dtype=name, adapter=adapter) == measured, c.key
        cost = estimate_cost(adapter, c.dims, batch=3, seq_len=11, dtype=name)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        assert cost.weights_mb == pytest.approx(weights / MIB)
        total = sum(measured.values()) + weights
        assert cost.memory_mb == pytest.approx(total / MIB)
        checked += 1
    assert checked == len(picked) >= 3
    if make_config is tiny_nemotron_config:
        assert cache_bytes(dims, adapter=adapter, batch=2, seq_len=5)["kv"] > 0


def test_cache_scales_with_batch_and_sequence():
    adapter = get_adapter(tiny_nemotron_config())
    dims = adapter.dims(tiny_nemotron_config())
    a = cache_bytes(dims, adapter=adapter, batch=1, seq_len=100)
    b = cache_bytes(dims, adapter=adapter, batch=2, seq_len=200)
    assert b["kv"] == 4 * a["kv"]  # the KV cache grows with tokens
    assert b["conv"] == 2 * a["conv"] and b["ssm"] == 2 * a["ssm"]  # the Mamba state does not


def test_parse_params():
    assert parse_params(4.5e9) == 4_500_000_000
    assert parse_params("4.5e9") == parse_params("4.5B") == 4_500_000_000
    assert parse_params("350M") == 350_000_000
    assert parse_params("0.5x", original=1000) == 500
    assert parse_params("40%", original=1000) == 400
    for bad in ("lots", "-1", "0", "1.5x"):
        with pytest.raises(BudgetError):
            parse_params(bad, original=1000)


def test_budget_kinds_and_limits():
    config = tiny_nemotron_config()
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    total = Budget(params="0.5x").param_limit(adapter, dims)
    non_emb = Budget(params="0.5x", params_kind="non-embedding").param_limit(adapter, dims)
    assert total == adapter.num_parameters(dims) // 2
    assert non_emb == adapter.num_parameters(dims, embeddings=False) // 2
    with pytest.raises(BudgetError, match="params"):
        Budget()
    with pytest.raises(BudgetError, match="params_kind"):
        Budget(params=1e6, params_kind="active")
    with pytest.raises(BudgetError, match="dtype"):
        Budget(memory_mb=10, dtype="float64x")
