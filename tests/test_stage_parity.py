"""The command and the recipe are two doors to one stage (`hybridprune.stages`): a command's flags are
its stage's settings fields (plus the flags naming inputs and outputs) with the same defaults; the
settings the command builds from its flags equal those a recipe builds from the same values; and on
a tiny model the command and a recipe write the same bytes (calibrate, prune with
`gdn_importance: value` on the Gated DeltaNet teacher)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import pytest
import typer

from ckpt_helpers import invoke
from hybridprune.cli import app
from hybridprune.recipe import schema
from hybridprune.recipe.loader import load_text
from hybridprune.recipe.plan import stages
from hybridprune.recipe.runner import check
from hybridprune.stages.calibrate import CalibrateSettings
from hybridprune.stages.evaluate import EvalSettings
from hybridprune.stages.prune import PruneSettings

COMMANDS = {"calibrate": CalibrateSettings, "prune": PruneSettings, "eval": EvalSettings}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


#: how a flag's text becomes the settings' value, where they differ (comma lists)
FROM_FLAG = {"batch_sizes": _ints, "context": _ints, "tasks": lambda v: [] if v is None else v.split(",")}


def _command(name: str):
    return typer.main.get_command(app).commands[name]


def _io_flags(name: str) -> tuple[str, ...]:
    module = {"calibrate": "calibrate", "prune": "prune", "eval": "evaluate"}[name]
    return __import__(f"hybridprune.cli.{module}", fromlist=["IO_FLAGS"]).IO_FLAGS


@pytest.mark.parametrize("name", COMMANDS)
def test_a_commands_flags_are_its_settings_fields_with_the_same_defaults(name):
    settings = COMMANDS[name]
    params = {p.name: p for p in _command(name).params}
    fields = {f.name for f in dataclasses.fields(settings)}
    assert set(params) == fields | set(_io_flags(name))
    defaults = settings()
    for field in fields:
        if params[field].required:
            continue
        value = FROM_FLAG.get(field, lambda v: v)(params[field].default)
        assert value == getattr(defaults, field), field


@pytest.mark.parametrize("name", COMMANDS)
def test_a_recipe_section_is_the_stages_settings(name):
    assert schema.SECTIONS[name] is COMMANDS[name]


# ---- the same non-default values through both doors give equal settings ----------------------------

#: every setting at a value other than its default, as a recipe writes it
VALUES = {
    "calibrate": {"samples": 7, "seq_len": 48, "batch_size": 3, "depth_samples": 5, "text_field": "body",
                  "seed": 11, "device": "cpu", "device_map": "balanced", "dtype": "float32", "force": True,
                  "trust_remote_code": True},
    "prune": {"plan": "hidden_size=32", "strict_fingerprint": True, "expert_importance": "frequency",
              "gdn_importance": "value", "in_memory": True, "smoke_test": True, "device": "auto", "dtype": "bf16",
              "force": True, "trust_remote_code": True, "serve_with": "vllm", "tensor_parallel": 2},
    "eval": {"split": "test", "samples": 9, "seq_len": 40, "batch_size": 2, "speed": True, "batch_sizes": [2, 4],
             "context": [64], "new_tokens": 5, "repeats": 2, "warmup": 0, "tasks": ["next_line_choice"],
             "task_limit": 0.5, "text_field": "body", "seed": 12, "device": "cpu", "device_map": "sequential",
             "dtype": "bfloat16", "force": True, "trust_remote_code": True},
}
#: the recipe gives these once at its top level; the sections inherit them
TOP_LEVEL = ("seed", "dtype", "text_field")


def _flags(values: dict) -> list[str]:
    out = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        else:
            out += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return out


def _yaml(name: str, values: dict) -> str:
    def text(v):
        return "true" if v is True else ("[" + ", ".join(map(str, v)) + "]" if isinstance(v, list) else str(v))

    top = {k: values[k] for k in TOP_LEVEL if k in values}
    own = {k: v for k, v in values.items() if k not in top}
    lines = ["model: shipped:tiny-nemotron-h", *(f"{k}: {text(v)}" for k, v in top.items())]
    lines.append(f"{name}: {{" + ", ".join(f"{k}: {text(v)}" for k, v in own.items()) + "}")
    if name == "calibrate":
        lines.append("prune: {plan: 'hidden_size=32'}")
    if name == "eval":
        lines.append("calibrate: {samples: 4}")
    return "\n".join(lines) + "\n"


class _Caught(Exception):
    pass


def _catch(monkeypatch, module: str) -> list:
    seen = []

    def run(settings, *args, **kwargs):
        seen.append(settings)
        raise _Caught

    monkeypatch.setattr(f"hybridprune.stages.{module}.run", run)
    return seen


def _no_device_checks(monkeypatch):
    """`device_map` and `device: cpu` need no GPU; `auto` resolves to the CPU here."""
    monkeypatch.setattr("hybridprune.checkpoint.devices.check_device", lambda *a, **k: None)


@pytest.mark.parametrize("name", COMMANDS)
def test_the_command_and_the_recipe_run_their_stage_with_equal_settings(name, monkeypatch, tmp_path):
    """The settings `run` gets from the command's flags, from the planned recipe and from the recipe's
    stage function are the same object, every field at a value other than its default."""
    from hybridprune.recipe import stages as run_stages

    _no_device_checks(monkeypatch)
    module = {"eval": "evaluate"}.get(name, name)
    caught = _catch(monkeypatch, module)
    inputs = {"calibrate": ["--model", tmp_path, "--data", "shakespeare", "--out", tmp_path / "o"],
              "prune": ["--model", tmp_path, "--scores", tmp_path, "--out", tmp_path / "o"],
              "eval": [tmp_path, "--data", "shakespeare"]}[name]
    result = invoke(name, *inputs, *_flags(VALUES[name]))
    assert isinstance(result.exception, _Caught), result.output

    recipe, _, lines = check(*load_text(_yaml(name, VALUES[name]), "r.yaml"), "r.yaml")
    planned = next(st for st in stages(recipe, tmp_path, lines, "r.yaml") if st.kind == name)
    monkeypatch.setattr("hybridprune.evaluate.harness.require_lm_eval", lambda: None)  # the tasks are not run
    with pytest.raises(_Caught):
        getattr(run_stages, module)(run_stages.Context(recipe, tmp_path, None), planned, tmp_path)
    from_command, from_recipe = caught
    assert from_command == planned.settings == from_recipe == COMMANDS[name](**VALUES[name])


def test_a_sections_own_value_wins_over_the_top_level_one(tmp_path):
    text = "model: shipped:tiny-nemotron-h\nseed: 5\ndtype: float32\ncalibrate: {seed: 6}\nprune: {plan: 'hidden_size=32'}\n"
    recipe, _, lines = check(*load_text(text, "r.yaml"), "r.yaml")
    cal, prune = stages(recipe, tmp_path, lines, "r.yaml")[:2]
    assert (cal.settings.seed, cal.settings.dtype) == (6, "float32")
    assert prune.settings.dtype == "float32" and prune.settings.device == PruneSettings().device


@pytest.mark.parametrize("where,text", [
    ("calibrate.device", "calibrate: {device: mps:3}\nprune: {plan: 'hidden_size=32'}\n"),
    ("eval.device_map", "eval: {device_map: everywhere}\n"),
    ("rounds[0].prune.device", "rounds: [{plan: 'hidden_size=32', prune: {device: mps:3}}]\n"),
])
def test_a_sections_device_is_checked_with_its_line(tmp_path, where, text):
    from hybridprune.recipe.loader import RecipeError

    with pytest.raises(RecipeError, match=re.escape(f"r.yaml:2: {where} ")):
        check(*load_text("model: shipped:tiny-nemotron-h\n" + text, "r.yaml"), "r.yaml")


# ---- byte for byte on a tiny model ------------------------------------------------------------------

def _digest(root: Path, names) -> dict[str, str]:
    return {n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in names}


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


@pytest.mark.parametrize("teacher,plan,extra", [
    ("tiny-nemotron-h", "ffn_hidden_size=256,mamba_num_heads=16", {}),
    ("tiny-qwen3-5", "linear_num_value_heads=8,ffn_hidden_size=128", {"gdn_importance": "value"}),
])
def test_the_command_and_the_recipe_write_the_same_bytes(teacher, plan, extra, tmp_path):
    from hybridprune.data.assets import teacher_path

    source = teacher_path(teacher)
    cal = {"samples": 4, "seq_len": 32, "batch_size": 2, "depth_samples": 2, "dtype": "float32"}
    assert invoke("calibrate", "--model", source, "--data", "shakespeare", "--out", tmp_path / "scores",
                  *_flags(cal)).exit_code == 0
    result = invoke("prune", "--model", source, "--scores", tmp_path / "scores", "--plan", plan,
                    "--out", tmp_path / "pruned", *_flags(extra))
    assert result.exit_code == 0, result.output
    sections = "\n".join([
        f"model: shipped:{teacher}", "data: shakespeare",
        "calibrate: {" + ", ".join(f"{k}: {v}" for k, v in cal.items()) + "}",
        "prune: {" + ", ".join(f"{k}: '{v}'" for k, v in {"plan": plan, **extra}.items()) + "}"])
    (tmp_path / "r.yaml").write_text(sections + "\n")
    result = invoke("run", tmp_path / "r.yaml", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output

    scores = ["scores.json", "scores.safetensors"]
    assert _digest(tmp_path / "run/01-calibrate/scores", scores) == _digest(tmp_path / "scores", scores)
    assert _digest(tmp_path / "run/01-calibrate", ["layer_importance.png"]) == \
        _digest(tmp_path / "scores", ["layer_importance.png"])
    names = _files(tmp_path / "pruned")
    assert names == _files(tmp_path / "run/02-prune/model")
    assert _digest(tmp_path / "run/02-prune/model", names) == _digest(tmp_path / "pruned", names)
    if extra:
        assert '"gdn_importance": "value"' in (tmp_path / "pruned/hybridprune.json").read_text()
