"""The prepared GPU script (bench/gpu/) runs end to end at a toy shape on the CPU, so it never rots."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "gpu" / "nemotron_8b_speed.py"


def _load():
    spec = importlib.util.spec_from_file_location("nemotron_8b_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_8b_shape_and_the_4b_plan_are_the_papers():
    import hybridprune as hp

    bench = _load()
    config = bench.build_config(bench.SHAPES["8b"])
    dims = hp.get_adapter(config).dims(config)
    assert dims.block_kinds.count("mamba") == 24 and dims.block_kinds.count("attention") == 4
    assert [i for i, k in enumerate(dims.block_kinds) if k == "attention"] == [7, 18, 29, 40]
    assert hp.count_parameters(dims) == pytest.approx(8.1e9, rel=0.02)
    hp.Plan(**bench.PLANS["8b"]).validate(dims)  # representable: 112 heads = 14 per group x 8 groups


@pytest.mark.slow
def test_tiny_mode_runs_every_step_on_the_cpu(tmp_path):
    bench = _load()
    assert bench.main(["--tiny", "--out", str(tmp_path), "--no-vllm"]) == 0
    evaluation = json.loads((tmp_path / "eval-0" / "eval.json").read_text())
    assert [m["name"] for m in evaluation["models"]] == ["teacher", "pruned"]
    assert all(c["decode_tokens_per_s"] > 0 for c in evaluation["speed"]["cells"])
    summary = (tmp_path / "summary.md").read_text()
    assert "| pruned | 1 | 16 |" in summary and "PyTorch fallback" in summary


def _load_vllm_serve():
    _load()  # puts bench/gpu on sys.path
    import vllm_serve

    return vllm_serve


def test_vllm_runs_at_the_papers_setting_beside_a_transformers_run_at_the_same_context():
    bench, serve = _load(), _load_vllm_serve()
    assert serve.SETTINGS["paper"]["prompt_len"] == 65536 and serve.SETTINGS["paper"]["new_tokens"] == 1024
    assert ("1", "65536", 1024, 1) in bench.RUNS["8b"]  # transformers at batch 1, 64K in, 1K out


def test_summary_puts_the_vllm_ratio_beside_transformers():
    serve = _load_vllm_serve()

    def cell(model, ttft, decode, prefill):
        return {"model": model, "batch": 1, "context": 65536, "ttft_s": ttft, "decode_tokens_per_s": decode,
                "prefill_tokens_per_s": prefill}

    evaluations = [{"speed": {"cells": [cell("teacher", 4.0, 20.0, 16000.0), cell("pruned", 2.0, 30.0, 32000.0)]}}]
    vllm = {"paper": {"setting": serve.SETTINGS["paper"], "teacher": {"output_tokens_per_s": 100.0},
                      "pruned": {"output_tokens_per_s": 150.0}, "ratio": 1.5}}
    ratios = serve.transformers_ratio(evaluations, 65536, 1024)
    assert ratios["prefill"] == pytest.approx(2.0) and ratios["decode"] == pytest.approx(1.5)
    e2e = lambda ttft, dec: 1024 / (ttft + 1023 / dec)  # noqa: E731
    assert ratios["end_to_end"] == pytest.approx(e2e(2.0, 30.0) / e2e(4.0, 20.0))
    table = "\n".join(serve.comparison_lines(vllm, evaluations))
    assert "| paper (4 x 65536 in, 1024 out) | 100.0 | 150.0 | 1.50x | 2.00x / 1.50x / " in table


def test_a_failed_vllm_run_is_recorded_not_raised(tmp_path):
    """The dry path on any CPU: an interpreter without vLLM fails each run; the step records why and goes on."""
    import sys
    import time

    serve = _load_vllm_serve()
    logged = []
    results = serve.serve_ratio((tmp_path / "t", tmp_path / "p"), tmp_path, time.time() + 120,
                                lambda out, msg: logged.append(msg), settings=("tiny",), python=sys.executable,
                                dtype="float32", extra={})
    assert "error" in results["tiny"]["teacher"] and "ratio" not in results["tiny"]
    assert json.loads((tmp_path / "vllm.json").read_text()) == results
    assert "not run" in "\n".join(serve.comparison_lines(results, []))
