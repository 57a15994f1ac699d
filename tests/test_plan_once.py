"""A plan is parsed and checked against the model once per command: `prune` (streaming and in memory),
the recipe's prune stage and its forecasts; a recipe's plan that cannot be read is refused before any
stage runs."""

from __future__ import annotations

import collections

import pytest

from ckpt_helpers import invoke, no_traceback
from hybridprune.pruning.plan import Plan

PLAN = "hidden_size=32,ffn_hidden_size=40,mamba_num_heads=6,mamba_head_dim=6,num_attention_heads=4,num_layers=5"


@pytest.fixture
def counts(monkeypatch):
    """How often a plan is parsed (every text, file and mapping goes through `Plan.from_dict`) and
    checked against a model (`Plan._check`, the work behind `validate`)."""
    seen = collections.Counter()
    from_dict, check = Plan.from_dict.__func__, Plan._check

    def counted_from_dict(cls, d):
        seen["parsed"] += 1
        return from_dict(cls, d)

    def counted_check(self, dims):
        seen["checked"] += 1
        return check(self, dims)

    monkeypatch.setattr(Plan, "from_dict", classmethod(counted_from_dict))
    monkeypatch.setattr(Plan, "_check", counted_check)
    return seen


@pytest.fixture(scope="module")
def source(calibrated_checkpoint):
    """The session's calibrated checkpoint (conftest.py): read only."""
    return calibrated_checkpoint


@pytest.mark.parametrize("how", [[], ["--in-memory"]], ids=["streaming", "in-memory"])
def test_prune_parses_and_checks_the_plan_once(source, tmp_path, counts, how):
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(PLAN.replace("=", ": ").replace(",", "\n") + "\n")
    for plan in (PLAN, plan_file):
        counts.clear()
        out = tmp_path / f"out-{len(str(plan))}"
        result = invoke("prune", "--model", source / "model", "--scores", source / "scores", "--plan", plan,
                        "--out", out, *how)
        assert result.exit_code == 0, result.output
        assert counts == {"parsed": 1, "checked": 1}, plan


RECIPE = """model: shipped:tiny-nemotron-h
dtype: float32
calibrate: {{samples: 4, seq_len: 24, batch_size: 2}}
prune: {{plan: "{plan}"}}
"""
TINY_PLAN = "ffn_hidden_size=384,mamba_num_heads=8,hidden_size=192"


def test_the_recipes_prune_stage_parses_and_checks_the_plan_once(tmp_path, counts):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(plan=TINY_PLAN))
    result = invoke("run", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "02-prune" / "model" / "config.json").is_file()
    assert counts == {"parsed": 1, "checked": 1}


def test_the_dry_runs_forecasts_parse_the_plan_once(tmp_path, counts):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(plan=TINY_PLAN)
                      + "distill: {steps: 1, seq_len: 24, global_batch: 2, micro_batch: 2}\n")
    result = invoke("run", recipe, "--out", tmp_path / "run", "--dry-run")
    assert result.exit_code == 0, result.output
    assert counts["parsed"] == 1
    assert not (tmp_path / "run").exists()


def test_a_recipe_plan_that_cannot_be_read_is_refused_before_any_stage(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(plan="hidden_size=32,mamba_heads=6"))
    result = invoke("run", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2 and no_traceback(result), result.output
    assert "recipe.yaml:4: prune.plan: unknown plan field(s) ['mamba_heads']" in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()
