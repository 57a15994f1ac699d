"""Plans are checked where they enter: strings, YAML/JSON files and `hp.Plan(...)` in Python."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from clean_errors import assert_refused
from hybridprune.cli import app
from hybridprune.pruning.plan import Plan, PlanError

runner = CliRunner()
BOMB = "drop_layers: [&a [1,1,1,1,1,1,1,1,1], " + ", ".join(f"&{b} [" + ",".join([f"*{a}"] * 9) + "]" for a, b in zip("abcdefgh", "bcdefghi")) + "]\n"


@pytest.fixture(scope="module")
def setup(calibrated_checkpoint):
    """The session's calibrated checkpoint (conftest.py): read only."""
    return calibrated_checkpoint


def _prune(root, tmp_path, plan: str):
    out = tmp_path / "pruned"
    result = runner.invoke(app, ["prune", "--model", str(root / "model"), "--scores", str(root / "scores"),
                                 "--plan", plan, "--out", str(out)])
    return result, out


@pytest.mark.parametrize("text, message", [
    ("hidden_size: 32\nhidden_size: 40\n", r"field 'hidden_size' is given twice \(lines 1 and 2\)"),
    ("hidden_size: true\n", r"hidden_size must be an integer .*got True \(bool\)"),
    ("ffn_hidden_size: 128.5\n", r"ffn_hidden_size must be an integer .*got 128.5 \(float\)"),
    ("hidden_size: '32'\n", r"hidden_size must be an integer .*got '32' \(str\)"),
    ("mamba_num_heads: [6]\n", r"mamba_num_heads must be an integer .*got \[6\] \(list\)"),
    ("drop_layers: 3\n", r"drop_layers must be a list of block indices .*got 3 \(int\)"),
    ("!!python/object/apply:os.system ['touch pwned']\n",
     r"is not valid YAML: could not determine a constructor for the tag .*python/object/apply:os.system"),
    ("hidden_size: [32\n", r"is not valid YAML: .*\(line 2, column 1\)"),
    ("", r"is empty"),
    ("- 32\n", r"must hold a mapping of plan fields"),
    ("hidden: 32\n", r"unknown plan field\(s\) \['hidden'\] \(did you mean hidden_size\?\); valid fields: hidden_size"),
    ("mamba_num_heads: 8\n", r"mamba_num_heads=8 is not a multiple of n_groups=3.*Valid values: \[3, 6, 9, 12\]"),
    # received files: a 9-level alias bomb (9**9 items if expanded) is refused before any tree is built
    (BOMB, r"line 1: \*a repeats a mapping or list; aliases .* are refused"),
    ("base: &b {hidden_size: 32}\n<<: *b\n", r"line 2: \*b repeats a mapping or list"),
    ("drop_layers: " + "[" * 40 + "]" * 40 + "\n", r"line 1: nested more than 32 levels deep"),
])
def test_bad_yaml_plans_are_refused_naming_the_file(setup, tmp_path, text, message):
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    result, out = _prune(setup, tmp_path, str(plan))
    assert_refused(result, f"plan file {plan}", message, out=out)
    assert not (tmp_path / "pwned").exists() and not (setup / "pwned").exists()


def test_bad_json_plans_are_refused_naming_the_file(setup, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text('{"hidden_size": 32, "hidden_size": 40}')
    result, out = _prune(setup, tmp_path, str(plan))
    assert_refused(result, f"plan file {plan}: field 'hidden_size' is given twice", out=out)
    plan.write_text('{"hidden_size": 32,')
    result, out = _prune(setup, tmp_path, str(plan))
    assert_refused(result, f"plan file {plan} is not valid JSON", out=out)


@pytest.mark.parametrize("text, message", [
    ("hidden_size=32,hidden_size=40", r"field 'hidden_size' is given twice \(hidden_size=32 and hidden_size=40\)"),
    ("hidden_size=32.0", r"hidden_size must be an integer .*got '32.0' \(str\)"),
    ("hidden_size=true", r"hidden_size must be an integer .*got 'true'"),
    ("drop_layers=1+x", r"drop_layers must be a list of block indices"),
    ("hidden_size=-8", r"hidden_size=-8: a target size must be positive"),
    ("drop_layers=-1", r"drop_layers \[-1\]: block indices start at 0"),
    ("hidden_size", r"plan entry 'hidden_size' is not of the form name=value"),
    ("missing.yaml", r"plan file missing.yaml does not exist"),
])
def test_bad_plan_strings_are_refused(setup, tmp_path, text, message):
    result, out = _prune(setup, tmp_path, text)
    assert_refused(result, message, out=out)


@pytest.mark.parametrize("kwargs, message", [
    ({"hidden_size": "128"}, r"hidden_size must be an integer .*got '128' \(str\)"),
    ({"hidden_size": 128.0}, r"hidden_size must be an integer .*got 128.0 \(float\)"),
    ({"hidden_size": [128]}, r"hidden_size must be an integer .*got \[128\] \(list\)"),
    ({"num_layers": True}, r"num_layers must be an integer .*got True \(bool\)"),
    ({"drop_layers": 3}, r"drop_layers must be a list of block indices .*got 3 \(int\)"),
    ({"drop_layers": "3+4"}, r"drop_layers must be a list of block indices .*got '3\+4' \(str\)"),
    ({"drop_layers": [1.0]}, r"drop_layers must be a list of block indices"),
    ({"ffn_hidden_size": 0}, r"ffn_hidden_size=0: a target size must be positive"),
])
def test_python_plans_are_checked_at_construction(kwargs, message):
    with pytest.raises(PlanError, match=message):
        Plan(**kwargs)


def test_valid_plans_in_every_form_agree(tmp_path):
    import numpy as np

    expected = Plan(hidden_size=32, drop_layers=(1, 4))
    assert Plan(hidden_size=np.int64(32), drop_layers=[1, 4]) == expected
    assert Plan.parse("hidden_size=32, drop_layers=1+4") == expected
    (tmp_path / "p.yml").write_text("# a comment\nhidden_size: 32\ndrop_layers: [1, 4]\nnum_layers:\n")
    assert Plan.parse(tmp_path / "p.yml") == expected
    (tmp_path / "h.json").write_text('{"plan": {"hidden_size": 32, "drop_layers": [1, 4]}, "source": "x"}')
    assert Plan.parse(str(tmp_path / "h.json")) == expected


def test_a_refused_plan_leaves_an_existing_output_untouched(setup, tmp_path):
    out = tmp_path / "pruned"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    (tmp_path / "plan.yaml").write_text("hidden_size: 32\nhidden_size: 32\n")
    result = runner.invoke(app, ["prune", "--model", str(setup / "model"), "--scores", str(setup / "scores"),
                                 "--plan", str(tmp_path / "plan.yaml"), "--out", str(out), "--overwrite"])
    assert_refused(result, "field 'hidden_size' is given twice", untouched={out / "config.json": b'{"mine": true}'})
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_a_long_plan_string_is_not_mistaken_for_a_file(setup, tmp_path):
    plan = "drop_layers=" + "+".join(["1"] * 200)  # longer than a file name may be
    result, out = _prune(setup, tmp_path, plan)
    assert_refused(result, r"drop_layers \[1, 1, 1, .*\] lists a block twice", out=out)


@pytest.mark.parametrize("fields, hint", [
    ({"intermediate_size": 64}, "intermediate_size is set in a plan as ffn_hidden_size"),
    ({"linear_num_heads": 4}, "linear_num_heads is set in a plan as mamba_num_heads"),
    ({"num_hidden_layers": 2}, "num_hidden_layers is set in a plan as num_layers"),
    ({"n_routed_experts": 4}, "n_routed_experts is set in a plan as num_moe_experts"),
    ({"num_key_value_heads": 1}, "num_key_value_heads is not a plan field: query heads are pruned inside their KV group"),
    ({"mamba_num_head": 4}, "did you mean mamba_num_heads?"),
    ({"hidden_size": 32, "intermediate_size": 64, "linear_value_head_dm": 8},
     "intermediate_size is set in a plan as ffn_hidden_size; did you mean linear_value_head_dim?"),
])
def test_an_unknown_field_names_the_plan_field_it_stands_for(fields, hint):
    """A name copied from config.json gets the plan's name for that axis; a typo the nearest field."""
    with pytest.raises(PlanError) as exc:
        Plan.from_dict(fields)
    assert hint in str(exc.value) and "valid fields: hidden_size" in str(exc.value)


#: the hints' table before each family's spellings moved into its adapter (`Adapter.config_spellings`)
_FORMER_ALIASES = {
    "intermediate_size": "ffn_hidden_size", "mlp_hidden_size": "ffn_hidden_size", "block_ff_dim": "ffn_hidden_size",
    "num_hidden_layers": "num_layers", "n_layer": "num_layers", "n_layers": "num_layers", "d_model": "hidden_size",
    "n_embd": "hidden_size", "mamba_n_heads": "mamba_num_heads", "n_mamba_heads": "mamba_num_heads",
    "num_heads": "mamba_num_heads", "linear_num_heads": "mamba_num_heads", "mamba_d_head": "mamba_head_dim",
    "mamba_headdim": "mamba_head_dim", "num_experts": "num_moe_experts", "n_routed_experts": "num_moe_experts",
    "num_local_experts": "num_moe_experts", "moe_intermediate_size": "moe_ffn_hidden_size",
    "expert_intermediate_size": "moe_ffn_hidden_size",
    "shared_expert_intermediate_size": "moe_shared_expert_intermediate_size",
}


def test_family_spellings_give_the_former_hints():
    """Each family states its own config spellings; together with the common names they answer every
    name the one table did, with the same words, and no two families read one name two ways."""
    from hybridprune.architectures import ADAPTERS
    from hybridprune.pruning.plan_fields import NOT_PRUNABLE, suggestion

    fields = Plan.field_names()
    for name, field in _FORMER_ALIASES.items():
        assert suggestion(name, fields) == f"{name} is set in a plan as {field}"
    for name in ("mamba_d_state", *NOT_PRUNABLE):
        reason = NOT_PRUNABLE["ssm_state_size" if name == "mamba_d_state" else name]
        assert suggestion(name, fields) == f"{name} is not a plan field: {reason}"
    assert suggestion("zzz", fields) == ""
    seen: dict[str, str] = {}
    for cls in ADAPTERS:
        for name, meant in {**cls.config_aliases, **cls.config_spellings}.items():
            assert seen.setdefault(name, meant) == meant, (cls.__name__, name)


def test_a_field_of_a_unit_the_model_lacks_lists_the_fields_it_can_set(setup, tmp_path):
    result, out = _prune(setup, tmp_path, "linear_num_value_heads=2")
    assert_refused(result, "linear_num_value_heads: this architecture has no Gated DeltaNet blocks, so it cannot be "
                           "set; the fields this model can set: hidden_size, ffn_hidden_size, mamba_num_heads",
                   out=out)


def test_a_recipe_naming_an_alias_bomb_plan_file_is_refused_at_once(tmp_path):
    """The plan file a recipe names is received YAML too: refused before any stage (and in --dry-run)."""
    import time

    plan = tmp_path / "plan.yaml"
    plan.write_text(BOMB)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: tiny-nemotron-h\ndata: shakespeare\nprune:\n  plan: {plan}\n")
    for extra in (["--dry-run"], []):
        start = time.perf_counter()
        result = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run"), *extra])
        assert time.perf_counter() - start < 30
        assert_refused(result, f"plan file {plan}", r"\*a repeats a mapping or list", out=tmp_path / "run")
