"""`hybridprune run RECIPE --out DIR`: the shipped recipes validate; a wrong key or type is refused with
its line; a run writes one NN-stage/ per stage, a rerun skips what is finished, a changed section reruns
its stage and those after it (and says so), `--from` forces, `--dry-run` writes nothing; an iterative
recipe runs two rounds on the tiny teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ckpt_helpers import invoke, no_traceback
from hybridprune.recipe import SHIPPED, load_recipe
from hybridprune.recipe.loader import RecipeError
from hybridprune.recipe.plan import stages

TINY = """model: shipped:tiny-nemotron-h
dtype: float32
calibrate: {samples: 8, seq_len: 32, batch_size: 4, depth_samples: 2}
search: {params: 0.5x, params_kind: non-embedding, seq_len: 32, batch: 4, top_k: 1, max_candidates: 3,
         kd_steps: 1, kd_batch: 4, kd_micro_batch: 4, eval_samples: 8, eval_seq_len: 32, batch_size: 4}
distill: {steps: 2, seq_len: 32, global_batch: 4, micro_batch: 4, lr: 1.0e-3, min_lr: 1.0e-4, warmup: 1,
          val_samples: 8, eval_every: 1, save_every: 1}
eval: {samples: 8, seq_len: 32, batch_size: 4, speed: true, batch_sizes: [1], context: [16], new_tokens: 2,
       repeats: 1}
report: {title: tiny}
"""
ITERATIVE = """model: shipped:tiny-nemotron-h
dtype: float32
calibrate: {samples: 4, seq_len: 32, batch_size: 4}
distill: {steps: 1, seq_len: 32, global_batch: 4, micro_batch: 4, val_samples: 0}
eval: {samples: 4, seq_len: 32, batch_size: 4}
rounds:
  - plan: ffn_hidden_size=512,mamba_num_heads=12
  - plan: ffn_hidden_size=384,mamba_num_heads=8,hidden_size=192
    distill: {steps: 2}
"""


def _recipe(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path, tmp_path):
    recipe, _, lines = load_recipe(path)
    planned = stages(recipe, tmp_path, lines, str(path))
    assert planned[0].kind == "calibrate" and {s.kind for s in planned} >= {"prune", "distill"}


def test_the_shipped_recipes_are_the_documented_ones():
    names = {p.name for p in SHIPPED.glob("*.yaml")}
    assert {"demo.yaml", "nemotron-h-8b-to-4b.yaml", "nemotron-3-nano-30b-a3b-to-22b.yaml",
            "iterative.yaml"} <= names
    assert (Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml").read_text() == \
        (SHIPPED / "demo.yaml").read_text()


@pytest.mark.parametrize("text,message", [
    ("model: x\ndistill:\n  steps: 10\n  lrr: 0.1\n", "recipe.yaml:4: unknown key 'distill.lrr'; did you mean 'lr'?"),
    ("model: x\nsearch:\n  params: 0.5x\n  top_k: three\n", "recipe.yaml:4: search.top_k must be a whole number, got 'three'"),
    ("model: x\nsearch: {params: 0.5x}\nstages: []\n", "recipe.yaml:3: unknown key 'stages'"),
    ("model: x\nrounds:\n  - params: 0.7x\n  - {params: 0.5x, distill: {lr: fast}}\nsearch: {}\n",
     "recipe.yaml:4: rounds[1].distill.lr must be a number, got 'fast'"),
    ("model: x\neval: {tasks: corpus_bpb}\n", "recipe.yaml:2: eval.tasks must be a list of strings"),
    ("model: x\nseed: 1\nseed: 2\n", "recipe.yaml:3: seed is given twice (also on line 2)"),
    ("model: !!python/object/apply:os.system [echo hi]\n", "recipe.yaml:1: not valid YAML"),
    ("data: shakespeare\n", "recipe.yaml:1: the recipe needs model"),
])
def test_a_wrong_recipe_is_refused_naming_key_and_line(tmp_path, text, message):
    result = invoke("run", _recipe(tmp_path, text), "--out", tmp_path / "out")
    assert result.exit_code == 2 and no_traceback(result), result.output
    assert message in result.output.replace(str(tmp_path) + "/", "")
    assert not (tmp_path / "out").exists()


def test_a_run_directory_holding_other_files_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("x")
    result = invoke("run", _recipe(tmp_path, TINY), "--out", tmp_path / "out")
    assert result.exit_code == 2 and "already exists and is not empty" in result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]


def test_dry_run_lists_stages_and_forecasts_and_writes_nothing(tmp_path):
    result = invoke("run", _recipe(tmp_path, TINY), "--out", tmp_path / "out", "--dry-run")
    assert result.exit_code == 0, result.output
    for name in ("01-calibrate", "02-search", "03-prune", "04-distill", "05-eval", "06-report"):
        assert name in result.output
    assert "GiB" in result.output and "not run yet" in result.output
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    out = root / "out"
    result = invoke("run", _recipe(root, TINY), "--out", out)
    assert result.exit_code == 0, result.output
    return root, out


def _finished(out: Path) -> dict[str, str]:
    return {p.name: json.loads((p / "record.json").read_text())["finished"] for p in sorted(out.glob("0*-*"))}


@pytest.mark.slow
def test_a_run_writes_each_stage_and_a_rerun_skips_them(tiny_run):
    root, out = tiny_run
    assert sorted(p.name for p in out.glob("0*")) == ["01-calibrate", "02-search", "03-prune", "04-distill",
                                                      "05-eval", "06-report"]
    record = json.loads((out / "04-distill" / "record.json").read_text())
    assert record["status"] == "done" and record["inputs"]["prune"] == "03-prune"
    assert record["describe"]["settings"]["steps"] == 2 and "torch" in record["common"]["versions"]
    for name in ("report.html", "report.md", "results.json", "04-distill/student/config.json",
                 "04-distill/student/README.md", "01-calibrate/scores/scores.safetensors",
                 "02-search/search/candidates.jsonl", "03-prune/model/README.md"):
        assert (out / name).is_file(), name
    card = (out / "04-distill" / "student" / "README.md").read_text()
    assert "## Evaluation" in card  # the eval stage adds its table to the final checkpoint's card
    before = _finished(out)
    again = invoke("run", root / "recipe.yaml", "--out", out)
    assert again.exit_code == 0 and again.output.count("skipped") == 6, again.output
    assert _finished(out) == before


@pytest.mark.slow
def test_a_changed_section_reruns_it_and_what_follows_and_from_forces(tiny_run):
    root, out = tiny_run
    before = _finished(out)
    changed = _recipe(root, TINY.replace("lr: 1.0e-3, min_lr", "lr: 2.0e-3, min_lr"), "changed.yaml")
    result = invoke("run", changed, "--out", out, "--dry-run")
    assert "the recipe's distill section changed (lr: 0.001 → 0.002)" in result.output, result.output
    result = invoke("run", changed, "--out", out)
    assert result.exit_code == 0, result.output
    assert "the recipe's distill section changed (lr: 0.001 → 0.002)" in result.output
    assert "its input changed (04-distill runs again)" in result.output
    after = _finished(out)
    assert [n for n in after if after[n] == before[n]] == ["01-calibrate", "02-search", "03-prune"]
    result = invoke("run", changed, "--out", out, "--from", "eval")
    assert result.exit_code == 0 and "--from 05-eval" in result.output
    final = _finished(out)
    assert [n for n in final if final[n] != after[n]] == ["05-eval", "06-report"]


@pytest.mark.slow
def test_an_iterative_recipe_runs_two_rounds_on_the_tiny_teacher(tmp_path):
    out = tmp_path / "out"
    result = invoke("run", _recipe(tmp_path, ITERATIVE), "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("0*")) == ["01-calibrate", "02-prune", "03-distill", "04-calibrate",
                                                      "05-prune", "06-distill", "07-eval"]
    first = json.loads((out / "02-prune" / "model" / "config.json").read_text())
    second = json.loads((out / "05-prune" / "model" / "config.json").read_text())
    assert first["intermediate_size"] == 512 and second["intermediate_size"] == 384
    assert second["hidden_size"] == 192 and second["mamba_num_heads"] == 8
    # round 2 prunes round 1's student, and distils it from the original teacher
    assert json.loads((out / "05-prune" / "record.json").read_text())["inputs"]["model"] == "03-distill"
    assert json.loads((out / "06-distill" / "record.json").read_text())["outputs"]["steps"] == 2
    results = json.loads((out / "07-eval" / "results.json").read_text())
    assert [m["name"] for m in results["evaluation"]["models"]] == ["teacher", "pruned r1", "distilled r1",
                                                                   "pruned r2", "distilled r2"]
    assert results["distilled r2"]["params"] < results["distilled r1"]["params"] < results["teacher"]["params"]
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "06-distill" / "student" / "README.md")
    assert "base_model" not in card.data.to_dict()  # a shipped teacher is no Hub model: no path in its place
    assert "the shipped teacher `tiny-nemotron-h`" in card.text  # the original teacher, through both rounds


def test_a_rounds_fraction_is_of_the_original_model():
    from hybridprune.stages.search import of_original as _budget_value

    assert _budget_value("0.5x", 1000, 1000) == "0.5x"  # round 1: as the search reads it
    assert _budget_value("0.5x", 1000, 700) == 500.0  # later rounds: of the original, not of round 1's model
    assert _budget_value(4.5e9, 1000, 700) == 4.5e9
    assert _budget_value("50%", 1000, 700) == 500  # every relative form the budget takes, not only "x"
