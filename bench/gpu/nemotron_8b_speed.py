#!/usr/bin/env python
"""Nemotron-H 8B against its 4B Minitron-SSM prune, side by side, on a lent GPU (random weights).

1. Builds a Nemotron-H at the 8B shape (arXiv 2504.11409 / the released config: 52 blocks
   `M-M-M-M*-...`, hidden 4096, FFN 21504, 128 Mamba heads × 64 in 8 groups, state 128, attention
   32 q / 8 KV heads × 128, vocab 131072) with random bf16 weights, directly on the GPU.
2. Calibrates it on a few random-token samples (the weights are random, so the scores only steer
   which units are kept) and prunes it to the paper's 4B plan: `hidden_size=3072,
   ffn_hidden_size=12288, mamba_num_heads=112`.
3. Saves both checkpoints and runs `hybridprune eval TEACHER PRUNED --speed` on them: batch 1 and 8
   at 8K context, then batch 1 at the paper's 64K context where memory and time allow, with the
   paper's 1,024 new tokens. The CLI reports which kernels ran (mamba_ssm / causal_conv1d or the
   PyTorch fallback; SDPA or eager).
4. If vLLM imports, serves both checkpoints in vLLM at the paper's setting (64K tokens in, 1K out;
   bench/gpu/vllm_serve.py) and records vLLM's throughput ratio beside transformers' at the same context.

Everything is written under `--out` (default `$OUT`): `eval-*/eval.json|eval.md`, `vllm.json`,
`summary.md`, `log.txt`. A time budget (default 420 s) skips the later measurements rather than run
over. `--tiny` runs the same steps at a toy shape on the CPU (the test suite does, so this never rots).

    bash bench/gpu/run.sh                  # on the GPU machine: installs, then runs this script
    python bench/gpu/nemotron_8b_speed.py --tiny --out /tmp/gpu-tiny
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vllm_serve  # noqa: E402  (beside this file)

PATTERN_8B = "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-"
KINDS = {"M": "linear_attention", "-": "mlp", "*": "full_attention"}

SHAPES = {
    "8b": dict(vocab_size=131072, hidden_size=4096, intermediate_size=21504, mamba_num_heads=128,
               mamba_head_dim=64, n_groups=8, ssm_state_size=128, conv_kernel=4, chunk_size=128,
               num_attention_heads=32, num_key_value_heads=8, head_dim=128, pattern=PATTERN_8B),
    # head sizes vLLM's CPU backend takes (attention >= 32), so the vLLM step runs on the CPU too
    "tiny": dict(vocab_size=256, hidden_size=64, intermediate_size=168, mamba_num_heads=16, mamba_head_dim=8,
                 n_groups=2, ssm_state_size=8, conv_kernel=4, chunk_size=8, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=32, pattern="M-M*-M-"),
}
PLANS = {
    "8b": {"hidden_size": 3072, "ffn_hidden_size": 12288, "mamba_num_heads": 112},
    # the same fractions: hidden 3/4, FFN 4/7, Mamba heads 7/8
    "tiny": {"hidden_size": 48, "ffn_hidden_size": 96, "mamba_num_heads": 14},
}
#: (batch sizes, contexts, new tokens, repeats) per speed run, in order; later runs are skipped when time is short
RUNS = {
    "8b": [("1,8", "8192", 1024, 2), ("1", "65536", 1024, 1)],
    "tiny": [("1,2", "16", 4, 1)],
}


def log(out: Path, msg: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    with open(out / "log.txt", "a") as f:
        f.write(line + "\n")


def build_config(shape: dict):
    from transformers import AutoConfig

    kw = {k: v for k, v in shape.items() if k != "pattern"}
    return AutoConfig.for_model(
        "nemotron_h", layers_block_type=[KINDS[c] for c in shape["pattern"]], mlp_hidden_act="relu2",
        use_conv_bias=True, mamba_proj_bias=False, attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
        max_position_embeddings=131072, pad_token_id=0, bos_token_id=1, eos_token_id=2, **kw)


def build_and_prune(size: str, device: str, workdir: Path, out: Path) -> tuple[Path, Path]:
    import torch
    from transformers import AutoModelForCausalLM

    import hybridprune as hp

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):
        teacher = AutoModelForCausalLM.from_config(build_config(SHAPES[size]), dtype=dtype).eval()
    n = sum(p.numel() for p in teacher.parameters())
    log(out, f"built {size} teacher: {n / 1e9:.3f}B parameters on {device} in {time.perf_counter() - t0:.0f}s")
    g = torch.Generator().manual_seed(0)
    calib = torch.randint(3, teacher.config.vocab_size, (4, 256 if size == "8b" else 16), generator=g)
    t0 = time.perf_counter()
    scores = hp.calibrate(teacher, calib, batch_size=1, progress=False)
    pruned = hp.prune(teacher, scores, hp.Plan(**PLANS[size])).eval()
    m = sum(p.numel() for p in pruned.parameters())
    log(out, f"pruned to {PLANS[size]}: {m / 1e9:.3f}B parameters ({m / n:.3f}x) in {time.perf_counter() - t0:.0f}s")
    dirs = workdir / "teacher", workdir / "pruned"
    t0 = time.perf_counter()
    teacher.save_pretrained(dirs[0])
    pruned.save_pretrained(dirs[1])
    del teacher, pruned, scores
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    log(out, f"saved both checkpoints in {time.perf_counter() - t0:.0f}s")
    return dirs


def speed_runs(size: str, dirs: tuple[Path, Path], device: str, out: Path, deadline: float) -> list[dict]:
    done = []
    for i, (batches, contexts, new_tokens, repeats) in enumerate(RUNS[size]):
        if time.time() > deadline:
            log(out, f"skipped speed run {i} ({batches} x {contexts}): out of time")
            continue
        target = out / f"eval-{i}"
        cmd = [sys.executable, "-m", "hybridprune", "eval", dirs[0].name, dirs[1].name, "--speed",
               "--batch-sizes", batches, "--context", contexts, "--new-tokens", str(new_tokens),
               "--repeats", str(repeats), "--warmup", "1", "--device", device, "--out", str(target), "--overwrite"]
        target = target.resolve()
        cmd[cmd.index("--out") + 1] = str(target)
        log(out, "running: hybridprune " + " ".join(cmd[3:]))
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=dirs[0].parent,
                                  timeout=max(30, deadline - time.time() + 60))
        except subprocess.TimeoutExpired:
            log(out, f"speed run {i} timed out")
            continue
        (out / f"eval-{i}.stderr.txt").write_text(proc.stderr[-20000:])
        if proc.returncode != 0:
            log(out, f"speed run {i} failed (exit {proc.returncode}); last lines:\n{proc.stderr[-1500:]}")
            continue
        log(out, f"speed run {i} done in {time.perf_counter() - t0:.0f}s")
        done.append(json.loads((target / "eval.json").read_text()))
    return done


def vllm_available(out: Path, python: str) -> bool:
    proc = subprocess.run([python, "-c", "import vllm; print(vllm.__version__)"], capture_output=True, text=True)
    if proc.returncode != 0:
        log(out, f"vLLM not available ({proc.stderr.strip().splitlines()[-1:] or proc.returncode}); skipped")
        return False
    log(out, f"vLLM {proc.stdout.strip()}")
    return True


def summarise(out: Path, size: str, evaluations: list[dict], vllm: dict | None) -> None:
    from hybridprune.evaluate.tables import kernels_text, speed_table

    lines = [f"# Nemotron-H {size}: teacher vs Minitron-SSM plan {PLANS[size]}", ""]
    for ev in evaluations:
        columns, rows = speed_table(ev)
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + ["", "```", kernels_text(ev), "```", ""]
    if vllm:
        lines += ["## vLLM beside transformers", ""] + vllm_serve.comparison_lines(vllm, evaluations) + [""]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="toy shape on the CPU (what the tests run)")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench-gpu-out"))
    ap.add_argument("--budget-s", type=float, default=420.0, help="skip later measurements past this many seconds")
    ap.add_argument("--device", default=None, help="default: cuda when available, cpu with --tiny")
    ap.add_argument("--no-vllm", action="store_true")
    ap.add_argument("--vllm-settings", default="paper",
                    help=f"comma-separated, of {', '.join(vllm_serve.SETTINGS)} (paper: 64K in, 1K out)")
    ap.add_argument("--vllm-budget-s", type=float, default=300.0, help="seconds for the vLLM step, after the rest")
    ap.add_argument("--vllm-python", default=sys.executable, help="interpreter with vLLM (default: this one)")
    args = ap.parse_args(argv)
    import torch

    size = "tiny" if args.tiny else "8b"
    device = args.device or ("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if size == "8b" and not device.startswith("cuda"):
        print("the 8B shape needs a GPU; use --tiny on a CPU", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.budget_s
    if device.startswith("cuda"):
        log(out, f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    workdir = Path(tempfile.mkdtemp(prefix="hybridprune-gpu-"))
    try:
        dirs = build_and_prune(size, device, workdir, out)
        evaluations = speed_runs(size, dirs, device, out, deadline)
        vllm = None
        if not args.no_vllm and vllm_available(out, args.vllm_python):
            on_gpu = device.startswith("cuda")
            vllm = vllm_serve.serve_ratio(
                dirs, out, max(deadline, time.time()) + args.vllm_budget_s, log,
                settings=tuple(args.vllm_settings.split(",")), python=args.vllm_python,
                dtype="bfloat16" if on_gpu else "float32",
                extra=vllm_serve.gpu_kwargs() if on_gpu else {"enforce_eager": True})
        summarise(out, size, evaluations, vllm)
        log(out, f"summary: {out / 'summary.md'}")
        return 0 if evaluations else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
