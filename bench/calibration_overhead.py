"""Calibration overhead: `hybridprune.calibrate` (hooks + statistics) vs a plain no-grad forward pass
over the same batches, measured side by side in one process (interleaved, median of repeats).

    .venv/bin/python bench/calibration_overhead.py [--hidden 256] [--batch 8] [--seq 256] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

import hybridprune as hp


def build(hidden: int, vocab: int, device: str, dtype: torch.dtype):
    heads = max(8, hidden // 16)
    config = AutoConfig.for_model(
        "nemotron_h", vocab_size=vocab, hidden_size=hidden,
        layers_block_type=["linear_attention", "mlp", "linear_attention", "full_attention",
                           "linear_attention", "mlp", "linear_attention", "mlp"],
        mamba_num_heads=heads, mamba_head_dim=32, n_groups=4, ssm_state_size=16, chunk_size=64,
        num_attention_heads=8, num_key_value_heads=2, head_dim=hidden // 8, intermediate_size=3 * hidden,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).to(device=device, dtype=dtype).eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--json", help="also write the result to this file")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    model = build(args.hidden, args.vocab, args.device, dtype)
    data = torch.randint(0, args.vocab, (args.batch * args.batches, args.seq), device=args.device)

    def plain() -> None:
        with torch.no_grad():
            for ids in data.split(args.batch):
                model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)

    def hooked() -> None:
        hp.calibrate(model, data, batch_size=args.batch, progress=False)

    def timed(fn) -> float:
        sync(args.device)
        t0 = time.perf_counter()
        fn()
        sync(args.device)
        return time.perf_counter() - t0

    plain(), hooked()  # warm-up
    plain_times, hooked_times = [], []
    for _ in range(args.repeats):  # interleaved so drifts in machine load hit both alike
        plain_times.append(timed(plain))
        hooked_times.append(timed(hooked))
    p, h = statistics.median(plain_times), statistics.median(hooked_times)
    tokens = data.numel()
    result = {
        "device": args.device, "dtype": args.dtype, "params": sum(x.numel() for x in model.parameters()),
        "batch": args.batch, "seq": args.seq, "batches": args.batches, "repeats": args.repeats,
        "plain_median_s": round(p, 4), "calibrate_median_s": round(h, 4),
        "overhead": round(h / p - 1, 4), "plain_tok_s": round(tokens / p), "calibrate_tok_s": round(tokens / h),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
