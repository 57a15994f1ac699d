"""A recipe's fixed plan that cannot prune its model is refused before the first stage runs, and by
`--dry-run`, naming the plan's line: not after the calibration before it has run (a user lost it)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hybridprune.cli import app

runner = CliRunner()


@pytest.mark.parametrize("model,plan,message", [
    ("shipped:tiny-qwen3-5", "hidden_size=100,mamba_num_heads=8",
     "recipe.yaml:5: prune.plan: mamba_num_heads: this architecture has no mamba blocks"),
    ("shipped:tiny-nemotron-h", "hidden_size=999", "recipe.yaml:5: prune.plan: hidden_size=999 is larger than"),
    ("shipped:tiny-nemotron-h", "mamba_num_heads=5", "recipe.yaml:5: prune.plan: mamba_num_heads=5 is not a multiple"),
])
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_plan_that_cannot_prune_the_model_is_refused_before_any_stage(tmp_path, model, plan, message, dry_run):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {model}\ndata: shakespeare\ncalibrate: {{samples: 4, seq_len: 64}}\nprune:\n"
                      f"  plan: {plan}\n")
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(recipe), "--out", str(out), *(["--dry-run"] if dry_run else [])])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]
