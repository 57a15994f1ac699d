"""Property-based tests: random plan strings, YAML/JSON documents, budgets, search-space settings and
command-line option values either succeed or give OUR clear error, never any other exception.

Deterministic (derandomize) and bounded, so the suite stays fast and a failure reproduces."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import tiny_nemotron_config
from hybridprune.architectures import get_adapter
from hybridprune.archsearch import Budget, BudgetError, SearchConfig, SearchError, SearchSpace, SearchSpaceError, parse_params
from hybridprune.cli import app
from hybridprune.pruning.plan import Plan, PlanError

FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CLI = settings(FAST, max_examples=50)
FIELDS = Plan.field_names()
DIMS = get_adapter(tiny_nemotron_config()).dims(tiny_nemotron_config())

# ---- values users type, and the odd ones machines produce -----------------------------------------
numbers_as_text = st.one_of(
    st.integers(-10, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "", " ", "0", "-0", "1.5", "0x10", "1_000", "+3", "true",
                     "None", "[1]", "3+4", "1e3", "٣", "１２"]),
    st.text(max_size=6),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=5))
yaml_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                           max_leaves=6)
field_names = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8))


def _plan_or_our_error(make) -> None:
    try:
        plan = make()
    except PlanError as exc:
        assert str(exc)
        return
    assert isinstance(plan, Plan)
    assert Plan.from_string(str(plan)) == plan if str(plan) != "(keep everything)" else True
    try:
        plan.validate(DIMS)
    except PlanError:
        pass


@FAST
@given(st.lists(st.tuples(field_names, numbers_as_text), max_size=4), st.sampled_from([",", ", ", ";", ",,"]))
def test_plan_strings(entries, sep):
    text = sep.join(f"{k}={v}" for k, v in entries)
    _plan_or_our_error(lambda: Plan.parse(text))


@FAST
@given(st.text(alphabet="hidensz_=,+-0123456789.:;[]{} !/\\", max_size=40))
def test_plan_strings_of_any_shape(text):
    _plan_or_our_error(lambda: Plan.parse(text))


@FAST
@given(st.dictionaries(field_names, yaml_values, max_size=4))
def test_plans_from_python_and_dicts(d):
    _plan_or_our_error(lambda: Plan.from_dict(d))
    known = {k: v for k, v in d.items() if k in FIELDS}
    _plan_or_our_error(lambda: Plan(**known))


@FAST
@given(st.one_of(
    st.dictionaries(field_names, yaml_values, max_size=4).map(lambda d: yaml.safe_dump(d)),
    yaml_values.map(lambda v: yaml.safe_dump(v)),
    st.lists(st.sampled_from(["hidden_size: 32", "hidden_size: 40", "ffn_hidden_size: 1.5", "drop_layers: [1, 2]",
                              "num_layers: true", "!!python/object/apply:os.system ['true']", "a: &x 1",
                              "b: *x", "- 1", "{", "]", "hidden_size: !!float 32", "? [1]\n: 2", "%YAML 1.1",
                              "---", "...", "\t", "mamba_num_heads: 0o14", "hidden_size: 0x20", "'",
                              "<<: {ffn_hidden_size: 8}", "<<: *x", "<<: 3"]),
             max_size=5).map("\n".join),
))
def test_plan_yaml_files(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("p") / "plan.yaml"
    path.write_text(text)
    _plan_or_our_error(lambda: Plan.parse(str(path)))


@FAST
@given(st.one_of(st.dictionaries(field_names, yaml_values, max_size=4).map(json.dumps),
                 st.text(alphabet='{}[]":,0123456789 hidden_size', max_size=30)))
def test_plan_json_files(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("p") / "plan.json"
    path.write_text(text)
    _plan_or_our_error(lambda: Plan.parse(path))


@FAST
@given(st.one_of(numbers_as_text, st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**15)),
       st.one_of(st.none(), st.integers(1, 10**9)))
def test_parameter_budgets(spec, original):
    try:
        value = parse_params(spec, original=original)
    except BudgetError:
        return
    assert isinstance(value, int) and value >= 0


@FAST
@given(params=st.one_of(st.none(), numbers_as_text), memory=st.one_of(st.none(), st.floats(allow_nan=True)),
       kind=st.sampled_from(["total", "non_embedding", "non-embedding", "all", ""]),
       batch=st.integers(-2, 4), seq_len=st.integers(-2, 4096), dtype=st.sampled_from(["bf16", "float32", "int4", ""]))
def test_budgets(params, memory, kind, batch, seq_len, dtype):
    try:
        Budget(params=params, memory_mb=memory, params_kind=kind, batch=batch, seq_len=seq_len, dtype=dtype)
    except BudgetError:
        pass


@FAST
@given(width=st.floats(allow_nan=True, allow_infinity=True), depth=st.floats(-1, 2),
       divisors=st.dictionaries(st.sampled_from(["hidden_size", "ffn_hidden_size", "mamba_head_dim", "bogus"]),
                                st.integers(-3, 100), max_size=2),
       skip=st.lists(st.sampled_from(["hidden_size", "num_layers", "mamba_num_heads", "x"]), max_size=2))
def test_search_space_settings(width, depth, divisors, skip):
    try:
        space = SearchSpace(max_width_pruning=width, max_depth_pruning=depth, divisors=divisors, skip=tuple(skip))
        space.axis_choices(DIMS)
    except SearchSpaceError:
        pass


@FAST
@given(top_k=st.one_of(st.integers(-2, 5), st.floats(allow_nan=True)), tol=st.one_of(st.floats(allow_nan=True), st.none()),
       band=st.one_of(st.none(), st.floats(allow_nan=True)), tie=st.sampled_from(["cost", "speed", "loss"]),
       kd=st.one_of(st.none(), st.dictionaries(st.sampled_from(["steps", "tokens", "global_batch", "micro_batch",
                                                                  "lr", "bogus"]), scalars, max_size=3)))
def test_search_settings(top_k, tol, band, tie, kd):
    try:
        SearchConfig(top_k=top_k, tie_tolerance=tol, band=band, tie_break=tie, kd=kd).validate()
    except SearchError:
        pass


# ---- the command line: random option values, a checkpoint that is never reached ------------------
runner = CliRunner()
OPTIONS = {
    "calibrate": ["--samples", "--seq-len", "--batch-size", "--depth-samples", "--seed", "--text-field", "--dtype"],
    "search": ["--params", "--params-kind", "--memory-mb", "--seq-len", "--batch", "--memory-dtype", "--top-k",
               "--kd-tokens", "--kd-steps", "--kd-lr", "--kd-batch", "--kd-micro-batch", "--skip", "--divisors",
               "--max-width-pruning", "--max-depth-pruning", "--band", "--max-candidates", "--eval-samples",
               "--eval-seq-len", "--batch-size", "--calib-samples", "--depth-samples", "--tie-tolerance",
               "--tie-break", "--speed-batch", "--show", "--seed"],
    "distill": ["--seq-len", "--global-batch", "--micro-batch", "--lr", "--min-lr", "--warmup", "--tokens",
                "--save-every", "--keep-last", "--stop-at-step", "--eval-every", "--val-samples", "--num-samples",
                "--temperature", "--kd-loss", "--kd-weight", "--ce-weight", "--chunk-size", "--weight-decay",
                "--grad-clip", "--precision", "--parallel", "--seed"],
    "eval": ["--samples", "--seq-len", "--batch-size", "--seed", "--split"],
    "demo": ["--target-params", "--kd-steps", "--search-kd-steps", "--top-k", "--calib-samples", "--seq-len", "--seed"],
    "prune": ["--plan"],
}


def _base(command: str, root) -> list[str]:
    model, out = str(root / "missing-model"), str(root / "out")
    return {
        "calibrate": ["calibrate", "--model", model, "--data", "shakespeare", "--out", out],
        "search": ["search", "--model", model, "--data", "shakespeare", "--out", out, "--params", "0.5x"],
        "distill": ["distill", "--teacher", model, "--student", model, "--data", "shakespeare", "--out", out,
                    "--steps", "1"],
        "eval": ["eval", model, "--data", "shakespeare"],
        # an existing, non-empty --out stops a demo whose options are all valid before it runs
        "demo": ["demo", "--out", str(root / "busy")],
        "prune": ["prune", "--model", model, "--scores", str(root / "scores"), "--out", out],
    }[command]


@CLI
@given(command=st.sampled_from(sorted(OPTIONS)), data=st.data())
def test_command_line_options(tmp_path_factory, command, data):
    root = tmp_path_factory.mktemp("cli")
    (root / "busy").mkdir()
    (root / "busy" / "keep.txt").write_text("not ours")
    flags = data.draw(st.lists(st.sampled_from(OPTIONS[command]), max_size=4, unique=True))
    argv = _base(command, root)
    for flag in flags:
        argv += [flag, data.draw(numbers_as_text if flag != "--plan" else st.text(max_size=20))]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, (argv, result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, (argv, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (argv, repr(result.exception))
    assert not (root / "out").exists()
    assert (root / "busy" / "keep.txt").read_text() == "not ours"


# ---- data files: random bytes under every supported name ------------------------------------------
json_lines = st.lists(st.one_of(yaml_values.map(json.dumps), st.text(max_size=10)), max_size=4).map("\n".join)


@settings(FAST, max_examples=30)
@given(suffix=st.sampled_from([".txt", ".jsonl", ".json", ".txt.gz", ".jsonl.gz", ".json.gz", ".parquet"]),
       content=st.one_of(st.binary(max_size=64), json_lines.map(str.encode)), compress=st.booleans())
def test_data_files(tmp_path_factory, suffix, content, compress):
    import gzip

    from hybridprune.data import DataError, read_documents

    path = tmp_path_factory.mktemp("d") / f"data{suffix}"
    path.write_bytes(gzip.compress(content) if compress else content)
    try:
        docs = read_documents(path, "all")
    except DataError as exc:
        assert str(path) in str(exc)
        return
    assert docs and all(isinstance(d, str) and d.strip() for d in docs)


# ---- scores on disk: random metadata and tensors --------------------------------------------------
entry_names = st.one_of(st.sampled_from(["hidden", "depth_kld", "depth_bi", "meta", "origin"]),
                        st.tuples(st.sampled_from(["mamba", "ffn", "attention", "moe"]),
                                  st.sampled_from(["0", "1", "2", "5", "9", "x", "-1", ""])).map(".".join))
shapes = st.lists(st.sampled_from([0, 1, 6, 8, 12, 48, 64]), min_size=0, max_size=2)


@settings(FAST, max_examples=40)
@given(meta=yaml_values, entries=st.dictionaries(entry_names, st.tuples(shapes, st.sampled_from(
    ["float32", "float16", "int64", "bool"]), st.sampled_from([0.0, 1.0, float("nan"), float("inf")])), max_size=5))
def test_scores_on_disk(tmp_path_factory, meta, entries):
    import torch
    from safetensors.torch import save_file

    from hybridprune.importance.scores import Scores, ScoresError

    d = tmp_path_factory.mktemp("scores")
    tensors = {k: torch.full(shape, fill).to(getattr(torch, dtype)) for k, (shape, dtype, fill) in entries.items()}
    save_file(tensors, str(d / "scores.safetensors"))
    (d / "scores.json").write_text(json.dumps(meta))
    try:
        Scores.load(d).check_against(DIMS)
    except ScoresError as exc:
        assert str(d) in str(exc)
