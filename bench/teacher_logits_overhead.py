"""`hybridprune teacher-logits` against a plain batched teacher forward over the same tokens, measured
side by side in one process (interleaved, median of repeats).

- plain: `model(input_ids=...).logits` of every training window, `--plain-batch` windows at a time
  (default: 16,384 tokens per forward, as one would write it), with the windows already in memory
  (nothing else: no top-k, no files).
- cache: the command's compute-and-write loop (`teacher_logits_store.write`) at the command's batch
  size (`--batch-size`, default the command's own) into a fresh directory: reading the windows, the
  teacher's hidden states, top-k and tail mass, the memory-mapped files and the resume records.
- command (with `--command`): the whole command in this process (imports warm), model loading and the
  fingerprints included.

    .venv/bin/python bench/teacher_logits_overhead.py [--samples 200] [--seq 64] [--batch-size B] [--top-k 128]

Run with another checkout's PYTHONPATH (and `--batch-size` of its default) to compare versions.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch


def tokens_dir(root: Path, teacher: str) -> Path:
    from hybridprune.checkpoint.load import load_tokenizer
    from hybridprune.data.tokenize import tokenize_to

    out = root / "tokens"
    tokenize_to(out, "shakespeare", load_tokenizer(teacher))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--teacher", default="tiny-nemotron-h")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch-size", type=int, help="the command's (default: its default for --seq)")
    ap.add_argument("--plain-batch", type=int, help="windows per plain forward (default: 16,384 tokens' worth)")
    ap.add_argument("--top-k", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--command", action="store_true", help="also time the whole command in-process")
    ap.add_argument("--json", help="also write the result to this file")
    args = ap.parse_args()

    from hybridprune.cli.common import load_model
    from hybridprune.cli.distill import _train_data
    from hybridprune.data.shards import read_manifest
    from hybridprune.distillation import teacher_logits_store as store
    from hybridprune.distillation.data import as_token_data
    from hybridprune.distillation.models import final_hidden, head_of

    if args.batch_size is None:
        from hybridprune.cli.teacher_logits import default_batch_size

        args.batch_size = default_batch_size(args.seq)
    args.plain_batch = args.plain_batch or max(1, 16_384 // args.seq)
    root = Path(tempfile.mkdtemp(prefix="teacher-logits-bench-"))
    try:
        token_dir = tokens_dir(root, args.teacher)
        train = as_token_data(_train_data(token_dir, args.seq, 0, args.samples))
        model = load_model(args.teacher, dtype="auto", device=args.device)
        head = head_of(model)
        plan = store.plan(train, read_manifest(token_dir), min(args.top_k, head.vocab_size),
                          batch_size=args.batch_size, teacher_fingerprint="bench")
        windows = train.batch(list(range(len(train))))[0].to(args.device)
        batches = windows.split(args.plain_batch)

        @torch.no_grad()
        def plain() -> None:
            for ids in batches:
                model(input_ids=ids, use_cache=False).logits

        @torch.no_grad()
        def hidden(ids, mask):
            return final_hidden(model, ids, mask)

        def cache() -> None:
            out = root / "cache"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            store.write(out, hidden, head, train, plan, device=torch.device(args.device))

        def command() -> None:
            from typer.testing import CliRunner

            from hybridprune.cli import app

            out = root / "command"
            result = CliRunner().invoke(app, [
                "-q", "teacher-logits", "--teacher", args.teacher, "--data", str(token_dir), "--out", str(out),
                "--seq-len", str(args.seq), "--num-samples", str(args.samples), "--top-k", str(args.top_k),
                "--batch-size", str(args.batch_size), "--device", args.device, "--overwrite"])
            assert result.exit_code == 0, result.output

        def timed(fn) -> float:
            t0 = time.perf_counter()
            fn()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - t0

        runs = {"plain": plain, "cache": cache, **({"command": command} if args.command else {})}
        for fn in runs.values():  # warm-up
            fn()
        times = {name: [] for name in runs}
        for _ in range(args.repeats):  # interleaved so drifts in machine load hit all alike
            for name, fn in runs.items():
                times[name].append(timed(fn))
        med = {name: statistics.median(t) for name, t in times.items()}
        result = {
            "teacher": args.teacher, "params": sum(p.numel() for p in model.parameters()),
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""), "device": args.device,
            "samples": len(train), "seq": args.seq, "batch_size": args.batch_size, "plain_batch": args.plain_batch,
            "k": plan["k"],
            "repeats": args.repeats, **{f"{name}_median_s": round(m, 4) for name, m in med.items()},
            **{f"{name}_over_plain": round(m / med["plain"], 3) for name, m in med.items() if name != "plain"},
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
