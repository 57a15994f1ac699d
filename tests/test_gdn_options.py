"""Gated DeltaNet options and refusals: which activation ranks value heads (`--gdn-importance`), the
group rule for value heads and key heads, and the GDN axes of the search space."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import build, tiny_config
from hybridprune import calibrate
from hybridprune.architectures import get_adapter
from hybridprune.cli import app
from hybridprune.importance.scores import Scores
from hybridprune.pruning.plan import Plan, PlanError
from hybridprune.pruning.selection import select, select_gdn


def _dims():
    config = tiny_config("qwen3_5_text")
    return get_adapter(config).dims(config)


def test_value_heads_stay_in_their_key_group_and_every_group_keeps_as_many():
    """Group-aware: the best two value heads are both in group 0, yet group 1 keeps its best one too."""
    values = torch.ones(6, 8)
    values[0] *= 10
    values[1] *= 9
    values[5] *= 2
    keys = torch.ones(2, 8)
    groups, heads, key_channels, channels = select_gdn(values, keys, key_heads=2, value_heads=2, key_dim=8, value_dim=8)
    assert groups.tolist() == [0, 1] and heads.tolist() == [0, 5]
    groups, heads, *_ = select_gdn(values, keys, key_heads=1, value_heads=2, key_dim=8, value_dim=8)
    assert groups.tolist() == [0] and heads.tolist() == [0, 1]  # a key head leaves with its value heads


def test_gdn_importance_picks_the_table_that_ranks_value_heads():
    dims = _dims()
    scores = Scores()
    for i in dims.layers_of("gdn"):
        out_proj = torch.arange(6.0)[:, None].expand(6, 8).clone()  # ranks heads 2 and 5 first
        scores.gdn[i], scores.gdn_value[i] = out_proj, out_proj.flip(0)  # ranks heads 0 and 3 first
        scores.gdn_key[i] = torch.ones(2, 8)
    plan = Plan(linear_num_value_heads=2)
    assert select(scores, plan, dims).gdn_value_heads[0].tolist() == [2, 5]
    assert select(scores, plan, dims, gdn_importance="value").gdn_value_heads[0].tolist() == [0, 3]
    with pytest.raises(PlanError, match="unknown GDN importance 'state'; choose one of out_proj, value"):
        select(scores, plan, dims, gdn_importance="state")


@pytest.mark.parametrize("plan,words", [
    (dict(linear_num_value_heads=5), "not a multiple of linear_num_key_heads=2: every key head must keep the same "
                                     "number of value heads. Valid values: [2, 4, 6]"),
    (dict(linear_num_key_heads=1, linear_num_value_heads=6), "more than the 1 kept key head(s) hold (3 value heads "
                                                              "each). Valid values: [1, 2, 3]"),
    (dict(linear_key_head_dim=9), "larger than the current size 8"),
])
def test_gdn_plans_that_break_the_groups_are_refused_with_the_valid_values(plan, words):
    with pytest.raises(PlanError) as info:
        Plan(**plan).validate(_dims())
    assert words in str(info.value)


def test_a_key_head_leaves_with_its_value_heads():
    dims = _dims()
    assert Plan(linear_num_key_heads=1).target_dims(dims, list(range(dims.num_layers))).linear_num_value_heads == 3


def test_the_search_space_steps_gdn_value_heads_by_the_key_heads_and_keeps_groups_even():
    from hybridprune.archsearch import SearchSpace
    from hybridprune.archsearch.space import build_grid

    dims = _dims()
    space = SearchSpace(max_width_pruning=0.5, max_depth_pruning=0.0)
    choices = space.axis_choices(dims)
    assert choices["linear_num_value_heads"] == [6, 4] and choices["linear_num_key_heads"] == [2, 1]
    grid, _ = build_grid(dims, space)
    for c in grid:
        keys, heads = c.values["linear_num_key_heads"], c.values["linear_num_value_heads"]
        assert heads % keys == 0 and heads // keys <= 3
        c.plan(dims).validate(dims)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from hybridprune.data import tokenizer_path
    from hybridprune.pruning.export import copy_tokenizer_files

    root = tmp_path_factory.mktemp("gdn")
    for name in ("qwen3_5_text", "nemotron_h"):
        model = build(tiny_config(name, vocab_size=4096))
        model.save_pretrained(root / name)
        copy_tokenizer_files(tokenizer_path(), root / name)
        calibrate(model, torch.randint(3, 96, (2, 8)), progress=False).save(root / f"{name}-scores")
    return root


@pytest.mark.parametrize("name,flags,words", [
    ("nemotron_h", ["--gdn-importance", "value", "--plan", "ffn_hidden_size=32"],
     "--gdn-importance ranks Gated DeltaNet value heads; this nemotron_h model has no GDN mixers, so leave it out"),
    ("qwen3_5_text", ["--plan", "linear_num_value_heads=5"],
     "linear_num_value_heads=5 is not a multiple of linear_num_key_heads=2"),
    ("qwen3_5_text", ["--plan", "linear_num_key_heads=1,linear_num_value_heads=4"], "Valid values: [1, 2, 3]"),
    ("qwen3_5_text", ["--plan", "drop_layers=0+2+3"], "removes every gdn block"),
])
def test_the_command_line_refuses_gdn_mistakes_before_writing(checkpoints, tmp_path, name, flags, words):
    result = CliRunner().invoke(app, ["prune", "--model", str(checkpoints / name), "--scores",
                                      str(checkpoints / f"{name}-scores"), *flags, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert words in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_the_command_line_prunes_with_the_value_branch_scores(checkpoints, tmp_path):
    result = CliRunner().invoke(app, ["prune", "--model", str(checkpoints / "qwen3_5_text"), "--scores",
                                      str(checkpoints / "qwen3_5_text-scores"), "--plan", "linear_num_value_heads=4",
                                      "--gdn-importance", "value", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "out" / "hybridprune.json").read_text())
    assert info["gdn_importance"] == "value"
    assert all(len(v) == 4 for v in info["kept_gdn_value_heads"].values())
