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
