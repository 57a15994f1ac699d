"""A recipe's values meet the commands' own rules (one table, `hybridprune.options`), checked whole
before the first stage runs: each bad value is refused by the command (naming the flag) and by
`run --dry-run` and `run` (naming recipe.yaml's line and the key), with nothing written and the
recipe file untouched."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from clean_errors import assert_refused
from hybridprune import options
from hybridprune.cli import app
from hybridprune.recipe import schema

runner = CliRunner()
TYPER_LOW = "Invalid value for '{flag}': Input should be greater than or equal to {low}"
CHOICE = "Invalid value for '{flag}': .*'{value}' is not one of"

#: a recipe every case starts from: valid, each section with one key (the bad key goes first in its section)
BASE = {
    None: ["model: shipped:tiny-nemotron-h", "seed: 0"],
    "calibrate": ["samples: 4"],
    "search": ["params: 0.5x"],
    "prune": ["tensor_parallel: 1"],
    "distill": ["steps: 2"],
    "eval": ["samples: 4"],
}

#: the arguments of each command up to the option under test (placeholder paths: never reached)
COMMANDS = {
    "calibrate": ["calibrate", "--model", "{model}", "--data", "shakespeare", "--out", "{out}"],
    "search": ["search", "--model", "{model}", "--data", "shakespeare", "--out", "{out}", "--params", "0.5x"],
    "prune": ["prune", "--model", "{model}", "--scores", "{model}", "--plan", "hidden_size=32", "--out", "{out}"],
    "distill": ["distill", "--teacher", "{model}", "--student", "{model}", "--data", "shakespeare", "--out", "{out}",
                "--steps", "2"],
    "eval": ["eval", "{model}", "--data", "shakespeare", "--out", "{out}"],
}


def low(flag, n):
    return TYPER_LOW.format(flag=flag, low=n)


# (section, key, YAML value, the command's arguments or None (no such flag), the command's message,
#  the recipe's message after "recipe.yaml:LINE: ")
CASES = [
    ("calibrate", "samples", "0", ["--samples", "0"], low("--samples", 1), r"calibrate.samples must be a whole number >= 1, got 0"),
    ("calibrate", "seq_len", "1", ["--seq-len", "1"], low("--seq-len", 2), r"calibrate.seq_len must be a whole number >= 2, got 1"),
    ("calibrate", "batch_size", "0", ["--batch-size", "0"], low("--batch-size", 1), r"calibrate.batch_size must be a whole number >= 1"),
    ("calibrate", "depth_samples", "-1", ["--depth-samples", "-1"], low("--depth-samples", 0), r"calibrate.depth_samples must be a whole number >= 0"),
    ("search", "params", "lots", ["--params", "lots"], r"--params: cannot read the size 'lots'", r"search.params: cannot read the size 'lots'"),
    ("search", "active_params", "2x", ["--active-params", "2x"], r"--active-params: a relative budget above 1x", r"search.active_params: a relative budget above 1x"),
    ("search", "params_kind", "all", ["--params-kind", "all"], CHOICE.format(flag="--params-kind", value="all"), r"search.params_kind must be one of total, non-embedding, non_embedding, got 'all'"),
    ("search", "memory_mb", ".nan", ["--memory-mb", "nan"], r"--memory-mb must be a positive number, got nan", r"search.memory_mb must be a positive number, got nan"),
    ("search", "seq_len", "0", ["--seq-len", "0"], low("--seq-len", 1), r"search.seq_len must be a whole number >= 1"),
    ("search", "batch", "0", ["--batch", "0"], low("--batch", 1), r"search.batch must be a whole number >= 1"),
    ("search", "memory_dtype", "float64", ["--memory-dtype", "float64"], r"--memory-dtype: unknown dtype 'float64'", r"search.memory_dtype: unknown dtype 'float64'"),
    ("search", "top_k", "0", ["--top-k", "0"], low("--top-k", 1), r"search.top_k must be a whole number >= 1"),
    ("search", "kd_steps", "0", ["--kd-steps", "0"], low("--kd-steps", 1), r"search.kd_steps must be a whole number >= 1"),
    ("search", "kd_tokens", "-1", ["--kd-tokens", "-1"], r"--kd-tokens must be a positive number, got -1.0", r"search.kd_tokens must be a positive number, got -1"),
    ("search", "kd_lr", ".inf", ["--kd-lr", "inf"], r"--kd-lr must be a positive number, got inf", r"search.kd_lr must be a positive number, got inf"),
    ("search", "kd_min_lr", "-1.0e-5", ["--kd-min-lr", "-1e-5"], r"--kd-min-lr must be a number >= 0, got -1e-05", r"search.kd_min_lr must be a number >= 0, got -1e-05"),
    ("search", "kd_topk", "0", ["--kd-topk", "0"], low("--kd-topk", 1), r"search.kd_topk must be a whole number >= 1"),
    ("search", "gdn_importance", "loudest", ["--gdn-importance", "loudest"], CHOICE.format(flag="--gdn-importance", value="loudest"), r"search.gdn_importance must be one of out_proj, value"),
    ("search", "divisors", "hidden=x", ["--divisors", "hidden=x"], r"the divisor of hidden must be a positive integer, got 'x'", r"search.divisors: the divisor of hidden must be a positive integer, got 'x'"),
    ("search", "calib_samples", "0", ["--calib-samples", "0"], low("--calib-samples", 1), r"search.calib_samples must be a whole number >= 1"),
    ("search", "depth_samples", "-1", ["--depth-samples", "-1"], low("--depth-samples", 0), r"search.depth_samples must be a whole number >= 0"),
    ("search", "show", "-1", ["--show", "-1"], low("--show", 0), r"search.show must be a whole number >= 0"),
    ("search", "kd_batch", "0", ["--kd-batch", "0"], low("--kd-batch", 1), r"search.kd_batch must be a whole number >= 1"),
    ("search", "kd_micro_batch", "0", ["--kd-micro-batch", "0"], low("--kd-micro-batch", 1), r"search.kd_micro_batch must be a whole number >= 1"),
    ("search", "skip", "[widths]", ["--skip", "widths"], r"unknown search axis 'widths'", r"search.skip: unknown search axes \['widths'\]"),
    ("search", "max_width_pruning", "1", ["--max-width-pruning", "1"], r"--max-width-pruning must be a fraction in \[0, 1\), got 1.0", r"search.max_width_pruning must be a fraction in \[0, 1\), got 1"),
    ("search", "max_depth_pruning", "-0.1", ["--max-depth-pruning", "-0.1"], r"--max-depth-pruning must be a fraction in \[0, 1\)", r"search.max_depth_pruning must be a fraction in \[0, 1\), got -0.1"),
    ("search", "band", "2", ["--band", "2"], r"--band must be a fraction in \[0, 1\], got 2.0", r"search.band must be a fraction in \[0, 1\], got 2"),
    ("search", "max_candidates", "0", ["--max-candidates", "0"], low("--max-candidates", 1), r"search.max_candidates must be a whole number >= 1"),
    ("search", "eval_samples", "0", ["--eval-samples", "0"], low("--eval-samples", 1), r"search.eval_samples must be a whole number >= 1"),
    ("search", "eval_seq_len", "1", ["--eval-seq-len", "1"], low("--eval-seq-len", 2), r"search.eval_seq_len must be a whole number >= 2"),
    ("search", "batch_size", "0", ["--batch-size", "0"], low("--batch-size", 1), r"search.batch_size must be a whole number >= 1"),
    ("search", "tie_tolerance", "-1", ["--tie-tolerance", "-1"], r"--tie-tolerance must be a number >= 0", r"search.tie_tolerance must be a number >= 0, got -1"),
    ("search", "tie_break", "fastest", ["--tie-break", "fastest"], CHOICE.format(flag="--tie-break", value="fastest"), r"search.tie_break must be one of cost, speed, got 'fastest'"),
    ("search", "speed_batch", "0", ["--speed-batch", "0"], low("--speed-batch", 1), r"search.speed_batch must be a whole number >= 1"),
    ("search", "expert_importance", "loudest", ["--expert-importance", "loudest"], CHOICE.format(flag="--expert-importance", value="loudest"), r"search.expert_importance must be one of output_norm, router_weighted, frequency"),
    ("search", "serve_with", "''", ["--serve-with", ""], r"--serve-with: '' names no serving engine; give one or more of vllm, llama.cpp", r"search.serve_with: '' names no serving engine; give one or more of vllm, llama.cpp"),
    ("search", "tensor_parallel", "0", ["--tensor-parallel", "0"], low("--tensor-parallel", 1), r"search.tensor_parallel must be a whole number >= 1"),
    ("prune", "expert_importance", "loudest", ["--expert-importance", "loudest"], CHOICE.format(flag="--expert-importance", value="loudest"), r"prune.expert_importance must be one of"),
    ("prune", "dtype", "float64", ["--dtype", "float64"], r"--dtype must be one of auto, float32, .*got 'float64'", r"prune.dtype must be one of auto, float32, .*got 'float64'"),
    ("prune", "serve_with", "' , '", ["--serve-with", " , "], r"--serve-with: ' , ' names no serving engine", r"prune.serve_with: ' , ' names no serving engine"),
    ("prune", "serve_with", "sglang", ["--serve-with", "sglang"], r"--serve-with: unknown serving engine 'sglang'; known: vllm, llama.cpp", r"prune.serve_with: unknown serving engine 'sglang'"),
    ("prune", "tensor_parallel", "0", ["--tensor-parallel", "0"], low("--tensor-parallel", 1), r"prune.tensor_parallel must be a whole number >= 1"),
    ("distill", "seq_len", "1", ["--seq-len", "1"], low("--seq-len", 2), r"distill.seq_len must be a whole number >= 2"),
    ("distill", "global_batch", "0", ["--global-batch", "0"], low("--global-batch", 1), r"distill.global_batch must be a whole number >= 1"),
    ("distill", "micro_batch", "0", ["--micro-batch", "0"], low("--micro-batch", 1), r"distill.micro_batch must be a whole number >= 1"),
    ("distill", "lr", ".inf", ["--lr", "inf"], r"--lr must be a positive number, got inf", r"distill.lr must be a positive number, got inf"),
    ("distill", "lr", "-.inf", ["--lr", "-inf"], r"--lr must be a positive number, got -inf", r"distill.lr must be a positive number, got -inf"),
    ("distill", "min_lr", "-1.0e-5", ["--min-lr", "-1e-5"], r"--min-lr must be a number >= 0", r"distill.min_lr must be a number >= 0, got -1e-05"),
    ("distill", "warmup", "-1", ["--warmup", "-1"], low("--warmup", 0), r"distill.warmup must be a whole number >= 0"),
    ("distill", "tokens", "-1.0", ["--tokens", "-1"], r"--tokens must be a positive number, got -1.0", r"distill.tokens must be a positive number, got -1.0"),
    ("distill", "steps", "0", ["--steps", "0"], low("--steps", 1), r"distill.steps must be a whole number >= 1, got 0"),
    ("distill", "save_every", "0", ["--save-every", "0"], low("--save-every", 1), r"distill.save_every must be a whole number >= 1"),
    ("distill", "keep_last", "0", ["--keep-last", "0"], low("--keep-last", 1), r"distill.keep_last must be a whole number >= 1"),
    ("distill", "eval_every", "0", ["--eval-every", "0"], low("--eval-every", 1), r"distill.eval_every must be a whole number >= 1"),
    ("distill", "val_samples", "-1", ["--val-samples", "-1"], low("--val-samples", 0), r"distill.val_samples must be a whole number >= 0"),
    ("distill", "stop_at_step", "0", ["--stop-at-step", "0"], low("--stop-at-step", 1), r"distill.stop_at_step must be a whole number >= 1"),
    ("distill", "kd_topk", "0", ["--kd-topk", "0"], low("--kd-topk", 1), r"distill.kd_topk must be a whole number >= 1"),
    ("distill", "num_proc", "0", ["--num-proc", "0"], low("--num-proc", 1), r"distill.num_proc must be a whole number >= 1"),
    ("distill", "num_samples", "0", ["--num-samples", "0"], low("--num-samples", 1), r"distill.num_samples must be a whole number >= 1"),
    ("distill", "temperature", "0", ["--temperature", "0"], r"--temperature must be a positive number, got 0.0", r"distill.temperature must be a positive number, got 0"),
    ("distill", "kd_loss", "sideways", ["--kd-loss", "sideways"], CHOICE.format(flag="--kd-loss", value="sideways"), r"distill.kd_loss must be one of forward, reverse, got 'sideways'"),
    ("distill", "kd_weight", "0", ["--kd-weight", "0"], r"--kd-weight must be a positive number, got 0.0", r"distill.kd_weight must be a positive number, got 0"),
    ("distill", "ce_weight", ".nan", ["--ce-weight", "nan"], r"--ce-weight must be a number >= 0, got nan", r"distill.ce_weight must be a number >= 0, got nan"),
    ("distill", "chunk_size", "0", ["--chunk-size", "0"], low("--chunk-size", 1), r"distill.chunk_size must be a whole number >= 1"),
    ("distill", "weight_decay", "-0.1", ["--weight-decay", "-0.1"], r"--weight-decay must be a number >= 0, got -0.1", r"distill.weight_decay must be a number >= 0, got -0.1"),
    ("distill", "grad_clip", "-1.0", ["--grad-clip", "-1"], r"--grad-clip must be a number >= 0, got -1.0", r"distill.grad_clip must be a number >= 0, got -1.0"),
    ("distill", "precision", "fp16", ["--precision", "fp16"], CHOICE.format(flag="--precision", value="fp16"), r"distill.precision must be one of auto, fp32, bf16, got 'fp16'"),
    ("distill", "parallel", "mpi", ["--parallel", "mpi"], CHOICE.format(flag="--parallel", value="mpi"), r"distill.parallel must be one of auto, none, ddp, fsdp, got 'mpi'"),
    ("eval", "samples", "0", ["--samples", "0"], low("--samples", 1), r"eval.samples must be a whole number >= 1"),
    ("eval", "seq_len", "1", ["--seq-len", "1"], low("--seq-len", 2), r"eval.seq_len must be a whole number >= 2"),
    ("eval", "batch_size", "0", ["--batch-size", "0"], low("--batch-size", 1), r"eval.batch_size must be a whole number >= 1"),
    ("eval", "batch_sizes", "[1, 0]", ["--speed", "--batch-sizes", "1,0"], r"--batch-sizes needs positive numbers", r"eval.batch_sizes must be a list of whole numbers >= 1, e.g. \[1, 8\], got \[1, 0\]"),
    ("eval", "context", "[]", ["--speed", "--context", ","], r"--context needs positive numbers", r"eval.context must be a list of whole numbers >= 1"),
    ("eval", "new_tokens", "0", ["--new-tokens", "0"], low("--new-tokens", 1), r"eval.new_tokens must be a whole number >= 1"),
    ("eval", "repeats", "0", ["--repeats", "0"], low("--repeats", 1), r"eval.repeats must be a whole number >= 1"),
    ("eval", "warmup", "-1", ["--warmup", "-1"], low("--warmup", 0), r"eval.warmup must be a whole number >= 0"),
    ("eval", "task_limit", "0", ["--task-limit", "0"], r"--task-limit must be a positive number, got 0.0", r"eval.task_limit must be a positive number, got 0"),
    ("calibrate", "seed", "-1", ["--seed", "-1"], low("--seed", 0), rf"calibrate.seed must be a whole number in \[0, {options.SEED_MAX}\], got -1"),
    ("calibrate", "dtype", "float64", ["--dtype", "float64"], r"--dtype must be one of auto", r"calibrate.dtype must be one of auto, float32, .*got 'float64'"),
    ("calibrate", "text_field", "' '", ["--text-field", " "], r"--text-field is empty", r"calibrate.text_field must be a text that is not blank, got ' '"),
    ("prune", "gdn_importance", "loudest", ["--gdn-importance", "loudest"], CHOICE.format(flag="--gdn-importance", value="loudest"), r"prune.gdn_importance must be one of out_proj, value"),
    ("eval", "seed", "-1", ["--seed", "-1"], low("--seed", 0), rf"eval.seed must be a whole number in \[0, {options.SEED_MAX}\], got -1"),
    ("eval", "dtype", "float64", ["--dtype", "float64"], r"--dtype must be one of auto", r"eval.dtype must be one of auto, float32, .*got 'float64'"),
    ("eval", "text_field", "' '", ["--text-field", " "], r"--text-field is empty", r"eval.text_field must be a text that is not blank, got ' '"),
    ("eval", "split", "' '", ["--split", " "], r"--split must be a text that is not blank, got ' '", r"eval.split must be a text that is not blank, got ' '"),
    (None, "seed", "-1", ["--seed", "-1"], low("--seed", 0), rf"seed must be a whole number in \[0, {options.SEED_MAX}\], got -1"),
    (None, "seed", str(2**64), ["--seed", str(2**64)], "Invalid value for '--seed'", r"seed must be a whole number in \[0, "),
    (None, "data", "''", ["--data", ""], r"--data is empty; give a value, e.g. --data shakespeare", r"data must be a text that is not blank, got ''"),
    (None, "text_field", "' '", ["--text-field", " "], r"--text-field is empty", r"text_field must be a text that is not blank, got ' '"),
    (None, "dtype", "float64", ["--dtype", "float64"], r"--dtype must be one of auto", r"dtype must be one of auto, float32, fp32, bfloat16, bf16, float16, fp16, got 'float64'"),
]

#: options whose rule lies between options: (section, lines put first in the section (or whole recipe),
#  the command's extra arguments, its message, the key blamed, the recipe's message)
RELATIONS = [
    ("distill", ["lr: 1.0e-3", "min_lr: 0.1"], ["--lr", "1e-3", "--min-lr", "0.1"],
     r"--min-lr \(0.1\) must not exceed --lr \(0.001\)", "min_lr", r"distill.min_lr \(0.1\) must not exceed distill.lr \(0.001\)"),
    ("distill", ["global_batch: 10", "micro_batch: 4"], ["--global-batch", "10", "--micro-batch", "4"],
     r"--global-batch \(10\) must be a multiple of --micro-batch \(4\), e.g. 8 or 12",
     "global_batch", r"distill.global_batch \(10\) must be a multiple of distill.micro_batch \(4\), e.g. 8 or 12"),
    ("distill", ["lr: 1.0e-4"], [], r"give exactly one of --steps and --tokens",
     "steps", r"give exactly one of distill.steps and distill.tokens"),
    ("distill", ["steps: 2", "tokens: 1.0e4"], ["--tokens", "1e4"], r"give exactly one of --steps and --tokens",
     "steps", r"give exactly one of distill.steps and distill.tokens"),
    ("search", ["kd_steps: 2", "kd_batch: 8", "kd_micro_batch: 3"], ["--kd-steps", "2", "--kd-batch", "8", "--kd-micro-batch", "3"],
     r"--kd-batch \(8\) must be a multiple of --kd-micro-batch \(3\), e.g. 6 or 9",
     "kd_batch", r"search.kd_batch \(8\) must be a multiple of search.kd_micro_batch \(3\), e.g. 6 or 9"),
    ("search", ["kd_steps: 2", "kd_tokens: 1.0e4"], ["--kd-steps", "2", "--kd-tokens", "1e4"],
     r"give --kd-steps or --kd-tokens, not both", "kd_tokens", r"give search.kd_steps or search.kd_tokens, not both"),
    ("search", ["kd_lr: 1.0e-4", "kd_min_lr: 1.0e-3"], None, None,
     "kd_min_lr", r"search.kd_min_lr \(0.001\) must not exceed search.kd_lr \(0.0001\)"),
    ("search", ["tie_break: speed", "speed: false"], ["--tie-break", "speed", "--no-speed"],
     r"--tie-break speed needs the throughput measurement: drop --no-speed, or use --tie-break cost",
     "tie_break", r"search.tie_break: speed needs the throughput measurement: drop search.speed: false"),
    ("prune", ["tensor_parallel: 2"], ["--tensor-parallel", "2"], r"tensor parallelism is a vLLM setting "
     r"\(--tensor-parallel 2\)", "tensor_parallel", r"tensor parallelism is a vLLM setting \(prune.tensor_parallel: 2\): name "
     r"vllm among the serving engines \(prune.serve_with: vllm\)"),
]


def _recipe(section, first: list[str], *, drop_base: bool = False) -> tuple[str, int]:
    """(the recipe text, the line of the first of `first`) with `first` put first in `section`."""
    lines = list(BASE[None])
    where = None
    if section is None:
        lines = [ln for ln in lines if ln.split(":")[0] not in {f.split(":")[0] for f in first}]
        where = len(lines) + 1
        lines += first
    for name, keys in BASE.items():
        if name is None:
            continue
        lines.append(f"{name}:")
        if name == section:
            where = len(lines) + 1
            lines += [f"  {f}" for f in first]
            if drop_base:
                continue
            keys = [k for k in keys if k.split(":")[0] not in {f.split(":")[0] for f in first}]
        lines += [f"  {k}" for k in keys]
    return "\n".join(lines) + "\n", where


def _refused_by_run(tmp_path, text: str, pattern: str):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    before = recipe.read_bytes()
    for extra in (["--dry-run"], []):
        out = tmp_path / "run"
        result = runner.invoke(app, ["run", str(recipe), "--out", str(out), *extra])
        assert_refused(result, pattern, untouched={recipe: before})
        assert not out.exists(), "a stage ran before the recipe was checked whole"


def _refused_by_command(tmp_path, args: list[str], pattern: str):
    model, out = tmp_path / "model", tmp_path / "out"
    model.mkdir(exist_ok=True)  # passes the path check, which comes first: the refusal is the option's own
    (model / "config.json").write_text("{}")
    argv = [a.format(model=model, out=out) for a in args]
    result = runner.invoke(app, argv)
    assert_refused(result, pattern, out=out)
    assert not out.exists()


@pytest.mark.parametrize("section, key, value, flag, cli_message, recipe_message", CASES,
                         ids=[f"{s or 'recipe'}.{k}={v}" for s, k, v, *_ in CASES])
def test_each_option_rule_holds_for_the_command_and_the_recipe(tmp_path, section, key, value, flag, cli_message,
                                                                recipe_message):
    text, line = _recipe(section, [f"{key}: {value}"])
    _refused_by_run(tmp_path, text, rf"recipe.yaml:{line}: {recipe_message}")
    if flag is not None:
        command = COMMANDS[section or "calibrate"]
        _refused_by_command(tmp_path, [*command, *flag], cli_message)


@pytest.mark.parametrize("section, first, flags, cli_message, blamed, recipe_message", RELATIONS,
                         ids=[f"{s}:{'+'.join(f.split(':')[0] for f in first)}" for s, first, *_ in RELATIONS])
def test_rules_between_options_hold_for_the_command_and_the_recipe(tmp_path, section, first, flags, cli_message,
                                                                    blamed, recipe_message):
    keys = [f.split(":")[0] for f in first]
    missing = blamed not in keys  # the length of a distillation not given: no `steps: 2`, no `--steps 2`
    text, line = _recipe(section, first, drop_base=missing)
    line += -1 if missing else keys.index(blamed)  # a key not given: the section's line
    _refused_by_run(tmp_path, text, rf"recipe.yaml:{line}: {recipe_message}")
    if flags is not None:
        command = [a for a in COMMANDS[section] if a not in ("--steps", "2")] if missing else COMMANDS[section]
        _refused_by_command(tmp_path, [*command, *flags], cli_message)


def test_every_option_with_a_rule_is_in_the_table():
    """The table walks every recipe key that has a rule: a new option cannot skip the recipe check."""
    covered = {(s, k) for s, k, *_ in CASES}
    for name, cls in schema.SECTIONS.items():
        rules = schema.RULES.get(cls, {})
        for f in dataclasses.fields(cls):
            if f.name in rules:
                assert (name, f.name) in covered, f"{name}.{f.name} has a rule but no case"
    for f in dataclasses.fields(schema.Recipe):
        if f.name in options.COMMON:
            assert (None, f.name) in covered, f.name


def test_a_later_stage_is_checked_before_the_first_runs(tmp_path):
    """distill.lr: .inf once trained and exported a NaN student with exit 0; a bad value of the last
    stage is refused before calibration starts, with the line."""
    text, line = _recipe("distill", ["lr: .inf"])
    _refused_by_run(tmp_path, text, rf"recipe.yaml:{line}: distill.lr must be a positive number, got inf")


def test_a_rounds_override_is_checked_at_its_own_line(tmp_path):
    text = ("model: shipped:tiny-nemotron-h\nsearch: {params: 0.5x}\ndistill: {steps: 2}\nrounds:\n"
            "  - {params: 0.7x}\n  - params: 0.5x\n    distill:\n      lr: .inf\n")
    _refused_by_run(tmp_path, text, r"recipe.yaml:8: rounds\[1\].distill.lr must be a positive number, got inf")
    text = ("model: shipped:tiny-nemotron-h\nsearch: {params: 0.5x}\ndistill: {steps: 2, lr: 1.0e-3}\nrounds:\n"
            "  - {params: 0.7x}\n  - params: 0.5x\n    distill:\n      min_lr: 0.1\n")
    _refused_by_run(tmp_path, text, r"recipe.yaml:8: distill.min_lr \(0.1\) must not exceed distill.lr \(0.001\) "
                                    r"\(in round 2\)")
    text = ("model: shipped:tiny-nemotron-h\nsearch:\n  top_k: 2\nrounds:\n  - {params: 0.7x}\n"
            "  - {plan: 'hidden_size=32'}\n  - {search: {top_k: 3}}\n")  # round 3 searches with no budget
    _refused_by_run(tmp_path, text, r"recipe.yaml:2: give a budget: search.params \(e.g. 4.5e9 or 0.5x\), "
                                    r"search.active_params and/or search.memory_mb \(in round 3\)")


def test_an_unknown_or_blank_evaluation_task_is_refused_before_any_stage(tmp_path):
    text, line = _recipe("eval", ["tasks: [next_line_choice, no_such_task]"])
    _refused_by_run(tmp_path, text, rf"recipe.yaml:{line}: eval.tasks: .*no_such_task")
    _refused_by_command(tmp_path, [*COMMANDS["eval"], "--tasks", "next_line_choice,no_such_task"], "no_such_task")
    text, line = _recipe("eval", ["tasks: [next_line_choice, ' ']"])
    _refused_by_run(tmp_path, text, rf"recipe.yaml:{line}: eval.tasks names an empty task")


def test_a_device_the_machine_lacks_is_refused_before_any_stage(tmp_path):
    text = "model: shipped:tiny-nemotron-h\ndevice: cuda:99\nsearch: {params: 0.5x}\n"
    _refused_by_run(tmp_path, text, r"recipe.yaml:2: device cuda:99: this machine has")


def test_the_rules_need_no_torch():
    """The command line reads the rules before anything heavy is imported."""
    code = ("import sys; import hybridprune.options as o; "
            "assert o.DISTILL['lr'].problem('--lr', float('inf')); "
            "assert not {'torch', 'transformers'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_rules_name_what_the_library_accepts():
    """The choices the options offer are the ones the library's own checks take."""
    from hybridprune.archsearch.searcher import EXPERT_IMPORTANCE, GDN_IMPORTANCE
    from hybridprune.distillation.config import PARALLEL, PRECISIONS

    assert set(options.EXPERT_IMPORTANCE) == set(EXPERT_IMPORTANCE)
    assert set(options.GDN_IMPORTANCE) == set(GDN_IMPORTANCE)
    assert (PARALLEL, PRECISIONS) == (options.PARALLEL, options.PRECISIONS)
    assert set(options.DTYPES) - {"auto"} <= set(__import__("hybridprune.archsearch.cost", fromlist=["x"]).DTYPE_BYTES)
