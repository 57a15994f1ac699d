"""`kill -9` of `hybridprune run` in each stage, one after the other: every rerun skips the stages
that finished (their records untouched), resumes the killed one (the search from its candidate log,
the distillation from its last checkpoint) and the run ends with the numbers of an uninterrupted run."""

from __future__ import annotations

import json
import signal

import pytest

from ckpt_helpers import invoke, run_cli

pytestmark = pytest.mark.slow

RECIPE = """model: shipped:tiny-nemotron-h
dtype: float32
calibrate: {samples: 8, seq_len: 32, batch_size: 4, depth_samples: 2}
search: {params: 0.5x, params_kind: non-embedding, seq_len: 32, batch: 4, top_k: 1, max_candidates: 2,
         kd_steps: 1, kd_batch: 4, kd_micro_batch: 4, eval_samples: 8, eval_seq_len: 32, batch_size: 4,
         speed: false}
distill: {steps: 3, seq_len: 32, global_batch: 4, micro_batch: 4, lr: 1.0e-3, min_lr: 1.0e-4, warmup: 1,
          val_samples: 8, eval_every: 1, save_every: 1}
eval: {samples: 8, seq_len: 32, batch_size: 4}
report: {title: killed and resumed}
"""
#: where each stage is killed: (stage, path the write goes to, which write there); in a stage directory the
#: first four are its creation and its "running" record (mkdir, mkdir, the record's temporary, its rename)
KILLS = [
    ("01-calibrate", "01-calibrate", 5),  # the scores' staging directory: calibration computed, nothing kept
    ("02-search", "02-search/search/candidates.jsonl", 2),  # after the first candidate is logged
    ("03-prune", "03-prune", 5),  # the pruned checkpoint's staging directory
    ("04-distill", "04-distill/student/log.jsonl", 4),  # step 2's log line: step 1's checkpoint exists
    ("05-eval", "05-eval", 5),  # results.json, after every measurement
    ("06-report", "06-report", 5),  # the finished record, after the report is written
]
NUMBERS = ("params", "non_embedding_params", "val_loss", "perplexity", "bits_per_byte")


def _records(out):
    return {p.name: json.loads((p / "record.json").read_text()) for p in sorted(out.glob("0*-*"))
            if (p / "record.json").is_file()}


def _numbers(out):
    results = json.loads((out / "results.json").read_text())
    models = {m["name"]: {k: m.get(k) for k in ("loss", "perplexity", "bits_per_byte")}
              for m in results["evaluation"]["models"]}
    return {n: {k: results[n][k] for k in NUMBERS} for n in ("teacher", "pruned", "distilled")}, \
        results["plan"], models


def test_killed_in_each_stage_the_rerun_finishes_with_the_same_numbers(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    reference = tmp_path / "reference"
    result = invoke("run", recipe, "--out", reference)
    assert result.exit_code == 0, result.output

    out = tmp_path / "out"
    done: dict[str, str] = {}
    for stage, where, k in KILLS:
        proc = run_cli(["run", recipe, "--out", out], audit_kill_at=k, kill_under=str(out / where))
        assert proc.returncode == -signal.SIGKILL, (stage, proc.stderr[-3000:])
        records = _records(out)
        assert {n: r["finished"] for n, r in records.items() if n in done} == done, stage  # not redone
        assert records[stage]["status"] == "running", stage
        for name in done:
            assert f"{name}: skipped" in proc.stderr
        done = {n: r["finished"] for n, r in records.items() if r["status"] == "done"}
        assert list(done) == [s for s, _, _ in KILLS[: KILLS.index((stage, where, k))]]
    rerun = invoke("run", recipe, "--out", out)  # in process: only the killed runs need a process of their own
    assert rerun.exit_code == 0, rerun.output[-3000:]
    assert "06-report" in rerun.stderr and "interrupted" in rerun.stderr
    records = _records(out)
    assert {n: r["finished"] for n, r in records.items() if n in done} == done
    assert all(r["status"] == "done" for r in records.values())
    assert _numbers(out) == _numbers(reference)
    candidates = (out / "02-search" / "search" / "candidates.jsonl").read_text().splitlines()
    assert len(candidates) == len((reference / "02-search" / "search" / "candidates.jsonl").read_text().splitlines())
