"""Issue 21, the numbers: eval scores each model on its own tokens of the same text (bits per byte
compares tokenizers), and refusals of bad devices, empty lists and unroutable MoE configs before loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from hybridprune.cli import app
from hybridprune.data import teacher_path

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _permuted_teacher(dst: Path, seed: int = 0) -> Path:
    """The shipped teacher with its vocabulary permuted (ids >= 2; the special tokens stay): embedding rows,
    lm_head rows and the tokenizer's vocab moved together, so it is the same function of text."""
    src = teacher_path()
    shutil.copytree(src, dst)
    tok = json.loads((src / "tokenizer.json").read_text())
    n = len(tok["model"]["vocab"])
    perm = torch.cat([torch.arange(2), 2 + torch.randperm(n - 2, generator=torch.Generator().manual_seed(seed))])
    tok["model"]["vocab"] = {t: int(perm[i]) for t, i in tok["model"]["vocab"].items()}
    (dst / "tokenizer.json").write_text(json.dumps(tok))
    weights = load_file(src / "model.safetensors")
    for key in ("backbone.embeddings.weight", "lm_head.weight"):
        moved = torch.empty_like(weights[key])
        moved[perm] = weights[key]
        weights[key] = moved
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def permuted(tmp_path_factory) -> Path:
    return _permuted_teacher(tmp_path_factory.mktemp("perm") / "teacher-permuted")


def test_eval_scores_a_permuted_vocabulary_like_the_teacher(permuted, tmp_path):
    out = tmp_path / "eval"
    result = _invoke("eval", teacher_path(), permuted, "--data", "shakespeare", "--samples", "3", "--seq-len", "64",
                     "--batch-size", "3", "--device", "cpu", "--dtype", "float32", "--out", out)
    assert result.exit_code == 0, result.output
    assert "do not share one tokenizer" in result.output
    evaluation = json.loads((out / "eval.json").read_text())
    teacher, other = evaluation["models"]
    assert teacher["tokenizer"] == "A" and other["tokenizer"] == "B"
    assert evaluation["tokenizers"] == {"A": [teacher["name"]], "B": [other["name"]]}
    assert other["bits_per_byte"] == pytest.approx(teacher["bits_per_byte"], abs=1e-5)
    assert other["loss"] == pytest.approx(teacher["loss"], abs=1e-5)
    assert other["bytes"] == teacher["bytes"] and other["tokens"] == teacher["tokens"]
    md = (out / "eval.md").read_text()
    assert "| tokenizer |" in md and "bits per byte compares them all" in md
    assert md.count("n/a (other tokenizer)") == 4  # loss and perplexity of both: neither shares its tokenizer


def test_eval_of_models_sharing_a_tokenizer_shows_their_loss(tmp_path):
    out = tmp_path / "eval"
    result = _invoke("eval", teacher_path(), teacher_path(), "--data", "shakespeare", "--samples", "2",
                     "--seq-len", "32", "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    evaluation = json.loads((out / "eval.json").read_text())
    a, b = evaluation["models"]
    assert a["loss"] == b["loss"] and a["tokenizer"] == b["tokenizer"] == "A"
    assert "n/a" not in (out / "eval.md").read_text()


# ---- MoE source configs that cannot route ------------------------------------------------------------

@pytest.fixture(scope="module")
def moe_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny Nemotron-H MoE (8 experts in 2 groups, top-2 from 1 group) with its scores."""
    from conftest import build, tiny_config
    from hybridprune import calibrate
    from hybridprune.data import tokenizer_path
    from hybridprune.pruning.export import copy_tokenizer_files

    root = tmp_path_factory.mktemp("moe")
    model = build(tiny_config("nemotron_h_moe", vocab_size=4096))
    model.save_pretrained(root / "model")
    copy_tokenizer_files(tokenizer_path(), root / "model")
    calibrate(model, torch.randint(3, 96, (2, 8)), progress=False).save(root / "scores")
    return root / "model", root / "scores"


UNROUTABLE = [  # (config edits, the words the message must hold)
    ({"n_group": 3}, ["n_routed_experts=8", "n_group=3", "multiple"]),
    ({"num_experts_per_tok": 10}, ["num_experts_per_tok=10", "n_routed_experts=8", "more experts than there are"]),
    ({"topk_group": 3}, ["topk_group=3", "n_group=2", "more routing groups"]),
    ({"num_experts_per_tok": 6}, ["num_experts_per_tok=6", "topk_group=1", "fewer than the 6"]),
    ({"n_group": 8, "topk_group": 4}, ["n_routed_experts=8", "n_group=8", "at least 2"]),
    ({"num_experts_per_tok": 0}, ["num_experts_per_tok=0", ">= 1"]),
]


def _commands(model: Path, scores: Path, good: Path, out: Path) -> dict[str, list]:
    data = ["--data", "shakespeare"]
    return {
        "calibrate": ["calibrate", "--model", model, *data, "--samples", "2", "--seq-len", "16", "--out", out],
        "prune": ["prune", "--model", model, "--scores", scores, "--plan", "num_moe_experts=4", "--out", out],
        "prune-in-memory": ["prune", "--model", model, "--scores", scores, "--plan", "num_moe_experts=4",
                            "--in-memory", "--out", out],
        "search": ["search", "--model", model, *data, "--params", "0.8x", "--scores", scores, "--out", out],
        "distill-teacher": ["distill", "--teacher", model, "--student", good, *data, "--steps", "1", "--out", out],
        "distill-student": ["distill", "--teacher", good, "--student", model, *data, "--steps", "1", "--out", out],
        "eval": ["eval", model, *data, "--samples", "2", "--seq-len", "16", "--out", out],
    }


@pytest.mark.parametrize("edits,words", UNROUTABLE,
                         ids=[",".join(f"{k}={v}" for k, v in e.items()) for e, _ in UNROUTABLE])
def test_an_unroutable_moe_config_is_refused_by_prune_and_calibrate(moe_checkpoint, tmp_path, edits, words):
    good, scores = moe_checkpoint
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, **edits}))
    for name in ("calibrate", "prune", "prune-in-memory"):
        out = tmp_path / name
        result = _invoke(*_commands(bad, scores, good, out)[name])
        assert result.exit_code == 2, (name, result.output)
        text = " ".join(result.output.split())
        assert "cannot route tokens to its experts" in text
        for word in words:
            assert word in text, (name, word, text)
        assert "Traceback" not in result.output and not out.exists()


@pytest.mark.parametrize("name", ["search", "distill-teacher", "distill-student", "eval"])
def test_every_command_that_loads_a_model_refuses_an_unroutable_config(moe_checkpoint, tmp_path, name):
    good, scores = moe_checkpoint
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "n_group": 3}))
    out = tmp_path / "out"
    result = _invoke(*_commands(bad, scores, good, out)[name])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "cannot route tokens to its experts" in text and "n_routed_experts=8, n_group=3" in text
    assert "Traceback" not in result.output and not out.exists()


# ---- devices that are not there, before anything is loaded -------------------------------------------

@pytest.fixture
def no_loading(monkeypatch):
    """No GPU, no MPS, and a model load fails the test: refusals must come first."""
    import transformers

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


def _device_commands(out: Path, flag: str, value: str) -> dict[str, list]:
    model, data = teacher_path(), ["--data", "shakespeare"]
    return {
        "calibrate": ["calibrate", "--model", model, *data, "--out", out, flag, value],
        "prune": ["prune", "--model", model, "--scores", out.parent / "scores", "--plan", "hidden_size=128",
                  "--in-memory", "--out", out, flag, value],
        "search": ["search", "--model", model, *data, "--params", "0.5x", "--out", out, flag, value],
        "distill": ["distill", "--teacher", model, "--student", model, *data, "--steps", "1", "--out", out,
                    flag, value],
        "eval": ["eval", model, *data, "--out", out, flag, value],
    }


@pytest.mark.parametrize("value,words", [
    ("cuda", "no cuda device"), ("gpu0", "is not a device name"), ("cuda:7", "no cuda device"),
    ("mps", "no mps device"), ("cpu:1", "no such device"), ("", "is not a device name"),
])
@pytest.mark.parametrize("command", ["calibrate", "prune", "search", "distill", "eval"])
def test_a_device_that_is_not_there_is_refused_before_loading(no_loading, tmp_path, command, value, words):
    out = tmp_path / "out"
    result = _invoke(*_device_commands(out, "--device", value)[command])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    # a misspelt name is refused without torch (it says how names are written); a device that is not
    # here, by the devices torch sees
    here = "cuda:N, mps or xpu" if "not a device name" in words else "devices here: cpu"
    assert words in text and here in text and "pass --device cpu" in text
    assert "Traceback" not in result.output and not out.exists()


@pytest.mark.parametrize("command", ["calibrate", "eval"])
def test_an_unknown_device_map_is_refused_before_loading(no_loading, tmp_path, command):
    out = tmp_path / "out"
    result = _invoke(*_device_commands(out, "--device-map", "everywhere")[command])
    assert result.exit_code == 2, result.output
    assert "not a placement strategy" in result.output and "auto, balanced" in " ".join(result.output.split())
    assert not out.exists()


def test_gpu_numbers_are_checked_against_the_gpus_present(monkeypatch):
    from hybridprune.checkpoint.devices import check_device  # below the command line: recipes check devices too
    from hybridprune.options import SettingError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda")
    check_device("cuda:1")
    with pytest.raises(SettingError, match=r"has 2 cuda device\(s\).*devices here: cpu, cuda:0, cuda:1; "
                                       r"pass --device cuda:0"):
        check_device("cuda:7")


# ---- list options that name nothing ------------------------------------------------------------------

@pytest.mark.parametrize("args,words", [
    (["eval", "MODEL", "--data", "shakespeare", "--tasks", ","], "--tasks ',' names nothing"),
    (["eval", "MODEL", "--data", "shakespeare", "--tasks", ""], "--tasks '' names nothing"),
    (["eval", "MODEL", "--tasks", " , "], "--tasks ' , ' names nothing"),
    (["eval", "MODEL", "--data", "shakespeare", "--tasks", "next_line_choice,missing.yaml"],
     "task file missing.yaml does not exist"),
    (["eval", "MODEL", "--data", " "], "--data is empty"),
    (["eval", "MODEL", "--speed", "--batch-sizes", ","], "--batch-sizes needs positive numbers"),
    (["search", "--model", "MODEL", "--data", "shakespeare", "--params", "0.5x", "--skip", ","],
     "--skip ',' names nothing"),
    (["search", "--model", "MODEL", "--data", "shakespeare", "--params", "0.5x", "--divisors", " , "],
     "--divisors ' , ' names nothing"),
    (["search", "--model", "MODEL", "--data", "", "--params", "0.5x"], "--data is empty"),
    (["calibrate", "--model", "MODEL", "--data", " "], "--data is empty"),
    (["distill", "--teacher", "MODEL", "--student", "MODEL", "--data", "", "--steps", "1"], "--data is empty"),
    (["calibrate", "--model", "MODEL", "--data", "shakespeare", "--text-field", ""], "--text-field is empty"),
    (["prune", "--model", "MODEL", "--scores", "SCORES", "--plan", ",", "--in-memory"], "--plan ',' names nothing"),
    (["prune", "--model", "MODEL", "--scores", "SCORES", "--plan", ""], "--plan '' names nothing"),
])
def test_a_list_option_that_names_nothing_is_refused_before_loading(no_loading, tmp_path, args, words):
    out = tmp_path / "out"
    swap = {"MODEL": str(teacher_path()), "SCORES": str(tmp_path / "scores")}
    result = _invoke(*[swap.get(a, a) for a in args], "--out", out)
    assert result.exit_code == 2, result.output
    assert words in " ".join(result.output.split())
    assert "Traceback" not in result.output and not out.exists()


def test_an_unknown_task_name_is_refused_before_loading(no_loading, monkeypatch, tmp_path):
    """lm-eval's own index of ~200 task folders takes many seconds to build; a stand-in knows three tasks."""
    from hybridprune.evaluate import harness

    lm_eval, hflm, _ = harness.require_lm_eval()

    class Tasks:
        def __init__(self, include_path, include_defaults, verbosity):
            self.all_tasks = ["next_line_choice", "corpus_bpb", "hellaswag"]

    monkeypatch.setattr(harness, "require_lm_eval", lambda: (lm_eval, hflm, Tasks))
    out = tmp_path / "out"
    result = _invoke("eval", teacher_path(), "--data", "shakespeare", "--tasks", "hellaswag,no_such_task", "--out", out)
    assert result.exit_code == 2, result.output
    assert ("does not know the task(s) no_such_task; valid tasks: next_line_choice, corpus_bpb (shipped)"
            in " ".join(result.output.split()))
    assert "Traceback" not in result.output and not out.exists()


# ---- report on an eval.json of an unexpected shape ---------------------------------------------------

def _row(name="teacher", **extra):
    return {"name": name, "parameters": 1000, "loss": 4.0, "perplexity": 54.6, "bits_per_byte": 1.9, **extra}


def _report(run_dir: Path, content) -> object:
    run_dir.mkdir(parents=True, exist_ok=True)
    text = content if isinstance(content, str) else json.dumps(content)
    (run_dir / "eval.json").write_text(text)
    return _invoke("report", run_dir)


@pytest.mark.parametrize("content,words", [
    ([_row()], "eval.json: the file is a list, not an object with 'models'"),
    ({"models": "teacher"}, "eval.json: models is a string, not a list"),
    ({"model": [_row()]}, "eval.json: has no 'models'"),
    ({"models": [5, {"parameters": 3}]}, "models[0] is a number, not an object"),
    ({"models": [{"name": ["a"], "parameters": 1}]}, "models[0].name is a list, not a string"),
    ('{"models": [', "cannot read"),
])
def test_report_refuses_an_eval_json_with_nothing_usable(tmp_path, content, words):
    run_dir = tmp_path / "run"
    result = _report(run_dir, content)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "nothing to report" in text and words in text and "eval.json" in text
    assert "Traceback" not in result.output
    assert sorted(p.name for p in run_dir.iterdir()) == ["eval.json"]


def test_report_renders_what_is_valid_and_names_what_it_left_out(tmp_path):
    bad_speed = {"cells": [{"model": "teacher", "batch": 1, "context": 8, "prefill_tokens_per_s": "fast"},
                           {"model": "teacher", "batch": "one"}], "kernels": [], "settings": 3}
    content = {"models": [_row(loss=float("nan"), parameters="many", tasks={"t": {"acc": float("inf"), "f1": 0.5}}),
                          _row("<script>alert(1)</script>"), 7, {"loss": 1.0}],
               "data": {"source": "x", "samples": -1}, "speed": bad_speed, "tokenizers": {"A": "teacher"}}
    run_dir = tmp_path / "run"
    result = _report(run_dir, content)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for words in ("models[0].loss is the non-finite number nan, not a finite number",
                  "models[0].parameters is a string", "models[0].tasks.t.acc is the non-finite number inf",
                  "models[2] is a number, not an object", "models[3] has no 'name'", "data.samples is a number",
                  "speed.cells[0].prefill_tokens_per_s is a string", "speed.cells[1].batch is a string",
                  "speed.kernels is a list", "speed.settings is a number", "tokenizers.A is a string"):
        assert words in text, words
    html = (run_dir / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    md = (run_dir / "report.md").read_text()
    assert "## Left out" in md and "0.5000" in md  # the valid task metric is shown


def _json_values():
    from hypothesis import strategies as st

    leaves = (st.none() | st.booleans() | st.integers(-3, 10**12) | st.floats(allow_nan=True, allow_infinity=True)
              | st.text(max_size=8) | st.just("<b>x</b>"))
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


def _evaluations():
    """eval.json shapes: each field either what `eval` writes or any JSON value, or missing."""
    from hypothesis import strategies as st

    def field(good):
        return st.one_of(good, _json_values())

    number = st.floats(0, 100)
    metrics = field(st.dictionaries(st.just("acc"), number))
    cell = st.fixed_dictionaries({"model": field(st.sampled_from(["a", "b"])), "batch": field(st.just(1)),
                                  "context": field(st.just(8))},
                                 optional={"decode_tokens_per_s": field(number), "ratios": field(st.just({})),
                                           "prefill_tokens_per_s": field(number), "ttft_s": field(number)})
    row = st.fixed_dictionaries({"name": field(st.sampled_from(["a", "b", "<i>c</i>"]))},
                                optional={"parameters": field(st.integers(0, 10**9)), "loss": field(number),
                                          "bits_per_byte": field(number), "tokenizer": field(st.just("A")),
                                          "active_parameters": field(st.integers(0, 10**9)),
                                          "tasks": field(st.dictionaries(st.sampled_from(["t", "u"]), metrics))})
    evaluation = st.fixed_dictionaries(
        {"models": field(st.lists(field(row), max_size=3))},
        optional={"data": field(st.fixed_dictionaries({}, optional={"samples": field(st.integers(0, 9)),
                                                                     "source": field(st.just("s"))})),
                  "speed": field(st.fixed_dictionaries({"cells": field(st.lists(field(cell), max_size=2))})),
                  "tokenizers": field(st.just({"A": ["a"], "B": ["b"]}))})
    return st.one_of(evaluation, _json_values())


def test_report_never_fails_with_a_traceback_on_any_eval_json_shape(tmp_path_factory):
    """Fuzzed: the report renders (exit 0) or refuses with one message naming eval.json (exit 2)."""
    from hypothesis import HealthCheck, given, settings

    from hybridprune.report import ReportError, build_run_report

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(content=_evaluations())
    def check(content):
        run_dir = tmp_path_factory.mktemp("fuzz")
        (run_dir / "eval.json").write_text(json.dumps(content))
        try:
            build_run_report(run_dir)
        except ReportError as exc:
            assert "eval.json" in str(exc)
        else:
            assert (run_dir / "report.html").is_file()

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check()


def test_report_leaves_out_search_and_log_rows_of_the_wrong_shape(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "search").mkdir(parents=True)
    good = {"key": "h64", "stage": "zero_shot", "loss": 4.0, "cost": {"params": 100}}
    rows = [good, {"key": "h32", "stage": "zero_shot", "loss": "low", "cost": {"params": 50}},
            {"key": "h16", "stage": "kd", "loss": 3.0, "cost": {}}, [1, 2], 5]
    (run_dir / "search" / "candidates.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (run_dir / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n"
                                       + json.dumps({"step": "two", "loss": [1]}) + "\n")
    (run_dir / "results.json").write_text(json.dumps({"teacher": {"params": "many", "val_loss": float("nan")}}))
    result = _invoke("report", run_dir)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "search/candidates.jsonl: 2 row(s) with fields of the wrong type left out" in text
    assert "log.jsonl: 1 row(s) with fields of the wrong type left out" in text
    assert "Traceback" not in result.output


def test_the_quality_table_shows_loss_only_within_a_tokenizer_group():
    from hybridprune.evaluate.tables import quality_table, tokenizer_note

    rows = [{"name": n, "parameters": 10, "tokenizer": t, "loss": 1.0, "perplexity": 2.7, "bits_per_byte": 0.5}
            for n, t in (("teacher", "A"), ("other", "B"), ("pruned", "A"))]
    evaluation = {"models": rows, "tokenizers": {"A": ["teacher", "pruned"], "B": ["other"]}}
    columns, table = quality_table(evaluation)
    assert columns[:5] == ["model", "tokenizer", "parameters", "loss", "perplexity"]
    assert [r[3] for r in table] == ["1.0000", "n/a (other tokenizer)", "1.0000"]
    assert [r[-1] for r in table] == ["0.5000"] * 3
    assert "A: teacher, pruned; B: other" in tokenizer_note(evaluation)
    one = {"models": [rows[0], rows[2]], "tokenizers": {"A": ["teacher", "pruned"]}}
    assert quality_table(one)[0][:3] == ["model", "parameters", "loss"] and tokenizer_note(one) == ""


def test_a_blank_data_source_is_not_the_working_directory():
    from hybridprune.data import load_token_samples
    from hybridprune.data.errors import DataError

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(teacher_path())
    for blank in ("", "  "):
        with pytest.raises(DataError, match="the data source is empty"):
            load_token_samples(blank, tokenizer, seq_len=4)
