"""`hybridprune search|distill` and a recipe's `search:`/`distill:` sections are one stage: the command's
flags are the settings' fields (plus what it reads and writes), with the same defaults; the settings
the command builds from its flags equal those a recipe builds from the same values; and the command
and a recipe write the same bytes on the same tiny model."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import typer

from ckpt_helpers import PLAN, invoke, save_checkpoint, small_corpus
from hybridprune.cli import app
from hybridprune.cli import distill as distill_cli
from hybridprune.cli import search as search_cli
from hybridprune.recipe import load_recipe, schema
from hybridprune.recipe.loader import RecipeError
from hybridprune.stages.distill import DistillSettings
from hybridprune.stages.search import SearchSettings

ASSETS = Path(__file__).resolve().parents[1] / "src" / "hybridprune" / "assets" / "tiny-nemotron-h"
#: what each command reads, writes and loads with: the recipe's top-level keys, its run directory, or I/O
IO = {"search": set(search_cli.IO_FLAGS), "distill": set(distill_cli.IO_FLAGS)}
SETTINGS = {"search": SearchSettings, "distill": DistillSettings}


def _params(name: str) -> dict:
    command = typer.main.get_command(app).commands[name]
    return {p.name: p for p in command.params}


# ---- (a) the flags are the settings -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["search", "distill"])
def test_the_flags_are_the_settings_fields_with_their_defaults(name):
    params, cls = _params(name), SETTINGS[name]
    assert set(params) == set(cls.names()) | IO[name]
    assert IO[name] & set(cls.names()) == set()
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        flag = params[f.name].default
        assert (list(flag) if isinstance(flag, (list, tuple)) else flag) == \
            (list(default) if isinstance(default, (list, tuple)) else default), f.name


@pytest.mark.parametrize("name", ["search", "distill"])
def test_the_recipe_section_is_the_settings(name):
    assert schema.SECTIONS[name] is SETTINGS[name]


# ---- (b) the command and the recipe build the same settings ------------------------------------------

#: two sets of values none of which is a default, between them every setting (options that exclude each
#  other are in different sets): (command flags, YAML lines)
SEARCH_VALUES = [
    {"params": "0.9x", "params_kind": "non-embedding", "memory_mb": 5000.0, "active_params": "0.8x",
     "expert_importance": "frequency", "gdn_importance": "value", "seq_len": 64, "batch": 2,
     "memory_dtype": "float16", "top_k": 3, "kd_steps": 2, "kd_lr": 2e-4, "kd_min_lr": 1e-6, "kd_batch": 4,
     "kd_micro_batch": 1, "kd_topk": 8, "skip": ["attention_heads", "depth"], "divisors": "hidden=8,ffn=16",
     "max_width_pruning": 0.3, "max_depth_pruning": 0.1, "band": 0.2, "max_candidates": 5, "eval_samples": 8,
     "eval_seq_len": 32, "batch_size": 4, "tie_tolerance": 0.01, "speed": False, "speed_batch": 2, "show": 3,
     "serve_with": "vllm", "tensor_parallel": 2},
    {"params": "2M", "kd_tokens": 1.0e4, "tie_break": "speed"},
]
DISTILL_VALUES = [
    {"seq_len": 64, "global_batch": 8, "micro_batch": 4, "lr": 2e-4, "min_lr": 2e-5, "warmup": 3, "steps": 5,
     "save_every": 2, "keep_last": 3, "stop_at_step": 4, "eval_every": 2, "val_samples": 4, "num_samples": 40,
     "kd_weight": 0.5, "ce_weight": 0.5, "kd_topk": 16, "teacher_logits": "LOGITS", "teacher_device": "cpu",
     "chunk_size": 16, "weight_decay": 0.01, "grad_clip": 0.5, "precision": "bf16", "parallel": "none",
     "num_proc": 2, "chat": True, "progress": False, "report_to": ["tensorboard"]},
    {"tokens": 1.0e5, "temperature": 2.0, "kd_loss": "reverse", "teacher_device_map": "auto"},
]


def _flags(values: dict) -> list[str]:
    out = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif isinstance(value, list):
            for item in value:
                out += [flag, str(item)]
        else:
            out += [flag, str(value)]
    return out


def _yaml(section: str, values: dict, extra: str = "") -> str:
    body = ", ".join(f"{k}: {json.dumps(v)}" for k, v in values.items())
    return f"model: shipped:tiny-nemotron-h\n{extra}{section}: {{{body}}}\n"


def _from_recipe(tmp_path: Path, text: str, section: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    recipe, _, _ = load_recipe(path)
    return getattr(recipe, section)


def _captured(monkeypatch, module) -> dict:
    seen = {}

    def run(settings, *args, **kwargs):
        seen["settings"] = settings
        raise typer.Exit(0)  # nothing loaded, nothing run

    monkeypatch.setattr(module, "run", run)
    return seen


@pytest.mark.parametrize("values", SEARCH_VALUES, ids=["most", "the-rest"])
def test_search_command_and_recipe_build_the_same_settings(values, tmp_path, monkeypatch):
    seen = _captured(monkeypatch, search_cli)
    r = invoke("search", "--model", ASSETS, "--data", "shakespeare", "--out", tmp_path / "out", *_flags(values))
    assert r.exit_code == 0, r.output
    assert seen["settings"] == _from_recipe(tmp_path, _yaml("search", values), "search")
    assert {k: getattr(seen["settings"], k) for k in values} == values  # each value arrived as given
    assert all(getattr(seen["settings"], k) != getattr(SearchSettings(), k) for k in values)


@pytest.mark.parametrize("values", DISTILL_VALUES, ids=["most", "the-rest"])
def test_distill_command_and_recipe_build_the_same_settings(values, tmp_path, monkeypatch):
    from hybridprune.distillation import config

    seen = _captured(monkeypatch, distill_cli)
    monkeypatch.setattr(distill_cli, "with_cached_topk", lambda settings, *a, **k: settings)  # no cache to read
    monkeypatch.setattr(config, "check_report_to", tuple)  # whether tensorboard is installed is not the question
    r = invoke("distill", "--teacher", ASSETS, "--student", ASSETS, "--data", "shakespeare", "--out",
               tmp_path / "out", *_flags(values))
    assert r.exit_code == 0, r.output
    assert seen["settings"] == _from_recipe(tmp_path, _yaml("distill", values, "prune: {plan: 'hidden_size=32'}\n"),
                                            "distill")
    assert {k: getattr(seen["settings"], k) for k in values} == values
    assert all(getattr(seen["settings"], k) != getattr(DistillSettings(), k) for k in values)


def test_every_setting_is_set_by_one_of_the_value_sets():
    for cls, sets in ((SearchSettings, SEARCH_VALUES), (DistillSettings, DISTILL_VALUES)):
        given = {k for values in sets for k in values}
        # the search's own calibration is the calibrate section's in a recipe (refused below)
        assert set(cls.names()) - given == ({"calib_samples", "depth_samples"} if cls is SearchSettings else set())


@pytest.mark.parametrize("key,instead", [("calib_samples", "samples"), ("depth_samples", "depth_samples")])
def test_a_recipe_sets_the_searchs_calibration_in_its_calibrate_section(key, instead, tmp_path):
    with pytest.raises(RecipeError, match=rf"search.{key} sets the search's own calibration.*calibrate.{instead}"):
        _from_recipe(tmp_path, _yaml("search", {"params": "0.5x", key: 3}), "search")


def test_skip_takes_the_short_axis_names_in_both_doors(tmp_path):
    settings = _from_recipe(tmp_path, _yaml("search", {"params": "0.5x", "skip": ["attention_heads", "ffn"]}),
                            "search")
    assert settings.space().skip == ("ffn_hidden_size", "num_attention_heads")


# ---- (c) the same bytes from the command and the recipe ----------------------------------------------

def _digests(root: Path, names) -> dict:
    return {n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in names}


def _stage(run_dir: Path, kind: str) -> Path:
    (found,) = run_dir.glob(f"*-{kind}")
    return found


def _without_times(path: Path) -> list[dict]:
    timed = {"seconds", "tokens_per_s", "speed"}
    return [{k: v for k, v in json.loads(line).items() if k not in timed} for line in path.read_text().splitlines()]


def test_search_command_and_recipe_write_the_same_search(tmp_path):
    # weights of their own: the search's top-k teacher logits are shared in a process by weights and data
    model = save_checkpoint(tmp_path / "model", seed=3)
    search = {"params": "0.9x", "top_k": 2, "kd_steps": 1, "kd_batch": 2, "kd_topk": 8, "max_candidates": 3,
              "eval_samples": 4, "eval_seq_len": 32, "batch_size": 4, "divisors": "hidden=8,ffn=16,head_dim=2",
              "skip": ["attention_heads"], "speed": False}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {model}\ndata: shakespeare\ndtype: float32\n"
                      "calibrate: {samples: 4, seq_len: 32, batch_size: 4, depth_samples: 2}\n"
                      + _yaml("search", search).split("\n", 1)[1])
    r = invoke("run", recipe, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    scores = _stage(tmp_path / "run", "calibrate") / "scores"
    r = invoke("search", "--model", model, "--data", "shakespeare", "--dtype", "float32", "--scores", scores,
               "--out", tmp_path / "cmd", *_flags(search))
    assert r.exit_code == 0, r.output
    found = _stage(tmp_path / "run", "search") / "search"
    assert _without_times(tmp_path / "cmd" / "candidates.jsonl") == _without_times(found / "candidates.jsonl")
    assert _digests(tmp_path / "cmd", ["best.yaml"]) == _digests(found, ["best.yaml"])


@pytest.fixture(scope="module")
def logits_root(tmp_path_factory):
    from transformers import AutoTokenizer

    from hybridprune.data import tokenizer_path
    from hybridprune.data import tokenize as tk

    root = tmp_path_factory.mktemp("parity-distill")
    save_checkpoint(root / "teacher")
    tk.tokenize_to(root / "tokens", str(small_corpus(root / "corpus.jsonl")),
                   AutoTokenizer.from_pretrained(tokenizer_path()))
    r = invoke("teacher-logits", "--teacher", root / "teacher", "--data", root / "tokens", "--seq-len", "32",
               "--top-k", "16", "--num-samples", "40", "--batch-size", "4", "--device", "cpu",
               "--out", root / "logits")
    assert r.exit_code == 0, r.output
    return root


def test_distill_command_and_recipe_write_the_same_student(logits_root, tmp_path):
    """A recipe's `distill.kd_topk` and `distill.teacher_logits` work, and give the command's bytes."""
    root = logits_root
    distill = {"steps": 2, "seq_len": 32, "global_batch": 4, "micro_batch": 2, "lr": 1e-3, "min_lr": 1e-4,
               "warmup": 1, "val_samples": 0, "num_samples": 40, "kd_topk": 16,
               "teacher_logits": str(root / "logits"), "progress": False}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {root / 'teacher'}\ndata: {root / 'tokens'}\ndtype: float32\n"
                      "calibrate: {samples: 4, seq_len: 32, batch_size: 4}\n"
                      f"prune: {{plan: '{PLAN}'}}\n" + _yaml("distill", distill).split("\n", 1)[1])
    r = invoke("run", recipe, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    student = _stage(tmp_path / "run", "prune") / "model"
    r = invoke("distill", "--teacher", root / "teacher", "--student", student, "--data", root / "tokens",
               "--out", tmp_path / "cmd", *_flags(distill))
    assert r.exit_code == 0, r.output
    found = _stage(tmp_path / "run", "distill") / "student"
    names = ["model.safetensors", "config.json"]
    assert _digests(tmp_path / "cmd", names) == _digests(found, names)
    for d in (tmp_path / "cmd", found):  # both distilled from the cached top-16 logits
        assert json.loads((d / "distill.json").read_text())["config"]["kd_topk"] == 16
    losses = [[rec["loss"] for rec in _without_times(d / "log.jsonl") if "loss" in rec]
              for d in (tmp_path / "cmd", found)]
    assert losses[0] == losses[1] and len(losses[0]) == 2


def test_a_recipe_checks_the_teachers_placement_as_the_command(tmp_path):
    text = _yaml("distill", {"steps": 1, "teacher_device": "cpu", "teacher_device_map": "auto"})
    with pytest.raises(RecipeError, match=r"recipe.yaml:2: distill.teacher_device_map: give --teacher-device or "
                                          r"--teacher-device-map, not both"):
        _from_recipe(tmp_path, text, "distill")
    r = invoke("distill", "--teacher", ASSETS, "--student", ASSETS, "--data", "shakespeare", "--steps", "1",
               "--teacher-device", "cpu", "--teacher-device-map", "auto", "--out", tmp_path / "out")
    assert r.exit_code == 2 and "give --teacher-device or --teacher-device-map, not both" in r.output
