"""The candidate grid, the budget, the representability filter and the impossible-budget error."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_mamba2_config, tiny_nemotron_config
from hybridprune.architectures import Dims, Unrepresentable, get_adapter
from hybridprune.importance.scores import Scores
from hybridprune.pruning.plan import Plan
from hybridprune.archsearch import (
    Budget, ImpossibleBudget, SearchSpace, SearchSpaceError, build_grid, estimate_cost, filter_candidates,
)

SMALL_STEPS = {"hidden_size": 8, "ffn_hidden_size": 8, "mamba_head_dim": 2}


def _setup(config, depth=None, **space):
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    scores = Scores(depth_bi=depth if depth is not None else torch.arange(dims.num_layers, 0, -1).float())
    return adapter, dims, SearchSpace(**space), scores


def test_every_candidate_respects_the_budget_and_the_group_constraints():
    adapter, dims, space, scores = _setup(tiny_nemotron_config(), divisors=SMALL_STEPS, max_width_pruning=0.5,
                                          max_depth_pruning=0.34)
    grid, choices = build_grid(dims, space, scores)
    full = estimate_cost(adapter, dims, seq_len=64)
    budget = Budget(params="0.6x", memory_mb=0.95 * full.memory_mb, seq_len=64)
    kept, report = filter_candidates(adapter, dims, grid, budget, band=None)
    limit = int(0.6 * adapter.num_parameters(dims))
    assert report.param_limit == limit and 0 < len(kept) < len(grid) and report.kept == len(kept)
    for c, cost in kept:
        assert cost == estimate_cost(adapter, c.dims, seq_len=64)
        assert cost.params <= limit and cost.memory_mb <= budget.memory_mb
        v = c.values
        assert v["mamba_num_heads"] % dims.mamba_n_groups == 0
        assert v["num_attention_heads"] % dims.num_key_value_heads == 0
        for axis in ("hidden_size", "ffn_hidden_size", "mamba_num_heads", "mamba_head_dim", "num_attention_heads"):
            assert 0.5 * getattr(dims, axis) <= v[axis] <= getattr(dims, axis)
        assert v["num_layers"] == len(c.kept_blocks) >= 4
        plan = c.plan(dims)
        plan.validate(dims)  # the plan prune() will get is valid
        assert plan.target_dims(dims, list(c.kept_blocks)) == c.dims
    # nothing that fits was left out
    fitting = [c for c in grid if budget.fits(budget.cost(adapter, c.dims), limit)]
    assert len(fitting) == len(kept) == report.within_budget


def test_depth_drops_the_least_important_blocks_and_pins_axes_of_removed_kinds():
    # Block 2 (the only attention block) matters least: dropping one block removes attention entirely.
    depth = torch.tensor([6.0, 5.0, 0.1, 4.0, 3.0, 2.0])
    adapter, dims, space, scores = _setup(tiny_nemotron_config(), depth=depth, max_depth_pruning=0.2,
                                          choices={"num_attention_heads": [8, 4]}, skip=("hidden_size",))
    grid, _ = build_grid(dims, space, scores)
    five = [c for c in grid if c.values["num_layers"] == 5]
    assert five and all(c.kept_blocks == (0, 1, 3, 4, 5) for c in five)
    assert all(c.values["num_attention_heads"] == 8 for c in five)  # pinned: no attention block left
    assert len({c.key for c in grid}) == len(grid)  # no duplicate models
    six = [c for c in grid if c.values["num_layers"] == 6]
    assert {c.values["num_attention_heads"] for c in six} == {8, 4}


def test_depth_candidates_keep_the_blocks_the_architecture_needs():
    """With the adapter's required kinds, a depth candidate keeps what `prune(num_layers=n)` keeps: the
    best attention block (Nemotron-H's cache needs one) stays even when it matters least, so the
    search can build every candidate."""
    depth = torch.tensor([6.0, 5.0, 0.1, 4.0, 3.0, 2.0])
    adapter, dims, space, scores = _setup(tiny_nemotron_config(), depth=depth, max_depth_pruning=0.5,
                                          skip=("hidden_size", "ffn_hidden_size", "mamba_num_heads",
                                                "mamba_head_dim", "num_attention_heads"))
    grid, _ = build_grid(dims, space, scores, adapter.required_kinds)
    kept = {c.values["num_layers"]: c.kept_blocks for c in grid}
    assert kept == {6: (0, 1, 2, 3, 4, 5), 5: (0, 1, 2, 3, 4), 4: (0, 1, 2, 3), 3: (0, 1, 2)}
    for c in grid:
        adapter.check_representable(c.dims, original=dims)  # raises if a candidate lost its attention block


def test_axes_the_architecture_lacks_are_absent_and_skipped_axes_are_fixed():
    adapter, dims, space, _ = _setup(tiny_mamba2_config(), skip=("mamba_head_dim",), divisors=SMALL_STEPS)
    choices = space.axis_choices(dims)
    assert set(choices) == {"num_layers", "hidden_size", "mamba_num_heads", "mamba_head_dim"}
    assert choices["mamba_head_dim"] == [8]
    assert choices["mamba_num_heads"] == [12, 9]  # multiples of n_groups=3 down to 60% of 12
    assert choices["hidden_size"] == [48, 40, 32]


def test_default_divisors_follow_modelopt_on_a_large_model():
    dims = Dims(block_kinds=("mamba", "mlp", "attention") * 4, vocab_size=131072, hidden_size=4096,
                ffn_hidden_size=21504, mamba_num_heads=128, mamba_head_dim=64, mamba_n_groups=8, mamba_state_size=128,
                mamba_conv_kernel=4, num_attention_heads=32, num_key_value_heads=8, attention_head_dim=128)
    choices = SearchSpace().axis_choices(dims)
    assert choices["hidden_size"] == list(range(4096, 2457, -256))
    assert choices["ffn_hidden_size"][:3] == [21504, 20992, 20480] and min(choices["ffn_hidden_size"]) >= 0.6 * 21504
    assert choices["mamba_num_heads"] == [128, 120, 112, 104, 96, 88, 80]
    assert choices["mamba_head_dim"] == [64, 56, 48, 40]
    assert choices["num_attention_heads"] == [32, 24]


def test_filter_removes_exactly_the_unrepresentable_candidates():
    config = tiny_mamba2_config()
    adapter, dims, space, scores = _setup(config, divisors={"hidden_size": 4, "mamba_head_dim": 1},
                                          max_width_pruning=0.5, skip=("num_layers",))
    grid, _ = build_grid(dims, space, scores)
    expected_bad = {c.key for c in grid if (c.values["mamba_num_heads"] * c.values["mamba_head_dim"])
                    % c.values["hidden_size"]}
    assert 0 < len(expected_bad) < len(grid)
    kept, report = filter_candidates(adapter, dims, grid, Budget(params="1x"), band=None)
    assert set(report.unrepresentable_keys) == expected_bad and report.unrepresentable == len(expected_bad)
    assert {c.key for c, _ in kept} == {c.key for c in grid} - expected_bad
    assert any("cannot represent" in line for line in report.lines())
    for c in grid:
        if c.key in expected_bad:
            with pytest.raises(Unrepresentable):
                adapter.make_config(config, c.dims)
        else:
            adapter.make_config(config, c.dims)


def test_impossible_budget_names_the_smallest_candidate():
    adapter, dims, space, scores = _setup(tiny_nemotron_config(), divisors=SMALL_STEPS)
    grid, _ = build_grid(dims, space, scores)
    smallest = min(grid, key=lambda c: (adapter.num_parameters(c.dims), c.key))
    with pytest.raises(ImpossibleBudget) as err:
        filter_candidates(adapter, dims, grid, Budget(params=1000), band=None)
    message = str(err.value)
    assert smallest.key in message and f"{adapter.num_parameters(smallest.dims):,}" in message
    assert "1,000 total parameters" in message
    with pytest.raises(ImpossibleBudget, match="MiB"):
        filter_candidates(adapter, dims, grid, Budget(memory_mb=1e-3), band=None)


def test_band_and_cap_keep_the_candidates_closest_to_the_budget():
    adapter, dims, space, scores = _setup(tiny_nemotron_config(), divisors=SMALL_STEPS)
    grid, _ = build_grid(dims, space, scores)
    budget = Budget(params="0.8x")
    everything, _ = filter_candidates(adapter, dims, grid, budget, band=None)
    banded, report = filter_candidates(adapter, dims, grid, budget, band=0.05, max_candidates=5)
    sizes = [cost.params for _, cost in banded]
    assert sizes == sorted(sizes, reverse=True) and len(banded) == 5
    assert sizes[0] == max(cost.params for _, cost in everything)
    assert min(sizes) >= 0.95 * sizes[0]
    assert report.outside_band + report.over_cap + report.kept == report.within_budget


def test_invalid_spaces_are_refused():
    dims = get_adapter(tiny_nemotron_config()).dims(tiny_nemotron_config())
    with pytest.raises(SearchSpaceError, match="unknown search axes"):
        SearchSpace(skip=("width",))
    with pytest.raises(SearchSpaceError, match=r"\[0, 1\)"):
        SearchSpace(max_width_pruning=1.0)
    with pytest.raises(SearchSpaceError, match="multiple of 3"):
        SearchSpace(divisors={"mamba_num_heads": 4}).axis_choices(dims)
    with pytest.raises(SearchSpaceError, match="multiples of 2"):
        SearchSpace(choices={"num_attention_heads": [8, 5]}).axis_choices(dims)
    assert Plan.field_names()  # the axes are Plan fields


def test_a_memory_only_budget_ranks_by_memory():
    adapter, dims, space, scores = _setup(tiny_nemotron_config(), divisors=SMALL_STEPS)
    grid, _ = build_grid(dims, space, scores)
    full = estimate_cost(adapter, dims, batch=4, seq_len=1024)
    budget = Budget(memory_mb=0.8 * full.memory_mb, batch=4, seq_len=1024)
    kept, report = filter_candidates(adapter, dims, grid, budget, band=0.05)
    memory = [cost.memory_mb for _, cost in kept]
    assert report.param_limit is None and memory == sorted(memory, reverse=True)
    assert max(memory) <= budget.memory_mb and min(memory) >= 0.95 * max(memory)
