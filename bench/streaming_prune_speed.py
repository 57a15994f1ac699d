"""Streaming prune of a ~2.5 GiB bf16 Nemotron-H against copying the same files.

1. Writes a random Nemotron-H checkpoint (26 blocks `M-M-M-M*-M-M-M-M*-M-M-M-M-`, hidden 2048, FFN 8192,
   64 Mamba heads x 64 in 8 groups, state 128, 16 query / 4 KV heads x 128, vocabulary 131072, untied):
   1,314,062,336 parameters, 2.45 GiB in bf16, in shards of at most 400 MB with an index, in the Hub's
   key layout (`backbone.*`), into a temporary directory that is removed afterwards.
2. Derives scores of the right shapes from the weights (column norms of each unit's outgoing projection,
   as `prune_8b.py` does), so no forward pass is needed.
3. Reads the checkpoint once (page cache warm), then times `cp -r` + `sync` and `hybridprune prune`
   (streaming, + `sync`) to a plan at the 8B -> 4B ratios, in alternating pairs, with peak RSS from
   `/usr/bin/time`; prints the medians and their ratio as JSON.

    python bench/streaming_prune_speed.py [--pairs 3] [--dir PARENT_OF_THE_TEMP_DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prune_8b import derived_scores, timed  # noqa: E402

PATTERN = "M-M-M-M*-M-M-M-M*-M-M-M-M-"
TYPES = {"M": "linear_attention", "-": "mlp", "*": "full_attention"}
PLAN = "hidden_size={h},ffn_hidden_size={f},mamba_num_heads=56"  # the 8B -> 4B ratios
SHARD_BYTES = 400 * 10**6


def config(scale: int = 1):
    """The benchmark's Nemotron-H; `scale` > 1 divides its hidden, FFN and vocabulary sizes (a quick run)."""
    from transformers import AutoConfig

    return AutoConfig.for_model(
        "nemotron_h", layers_block_type=[TYPES[c] for c in PATTERN], hidden_size=2048 // scale,
        intermediate_size=8192 // scale, mamba_num_heads=64, mamba_head_dim=64, n_groups=8,
        ssm_state_size=128, conv_kernel=4, chunk_size=128, use_conv_bias=True, num_attention_heads=16,
        num_key_value_heads=4, head_dim=128, vocab_size=131072 // scale, dtype="bfloat16",
    )


def random_bf16(shape, generator) -> torch.Tensor:
    """Finite random bf16 values, fast: random bits with the top exponent bit cleared (|x| < 2)."""
    bits = torch.randint(-(2**15), 2**15, shape, dtype=torch.int32, generator=generator).to(torch.int16)
    return (bits & ~0x4000).view(torch.bfloat16)


def write_checkpoint(out: Path, scale: int = 1) -> None:
    """Random bf16 weights written tensor by tensor into shards of at most SHARD_BYTES, with an index."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from prune_8b import write_checkpoint as write_random_checkpoint

    write_random_checkpoint(out, SHARD_BYTES, config=config(scale), weights=random_bf16)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3, help="alternating cp / prune pairs")
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary directory goes")
    parser.add_argument("--scale", type=int, default=1, help="divide the widths (quick runs; 1 = the benchmark)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="hybridprune-bench-", dir=args.dir))
    try:
        src, scores = work / "source", work / "scores"
        start = time.perf_counter()
        write_checkpoint(src, args.scale)
        derived_scores(src, scores)
        print(f"wrote {src} in {time.perf_counter() - start:.0f} s", flush=True)
        for p in sorted(src.iterdir()):  # warm the page cache
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass
        exe = str(Path(sys.executable).with_name("hybridprune"))
        load = os.getloadavg()[0]
        rows: dict[str, list[tuple[float, int]]] = {"cp": [], "prune": []}
        for r in range(args.pairs):
            for what in ("cp", "prune"):
                dest = work / f"{what}-out"
                shutil.rmtree(dest, ignore_errors=True)
                subprocess.run(["sync"], check=True)
                cmd = (["cp", "-r", str(src), str(dest)] if what == "cp" else
                       [exe, "prune", "--model", str(src), "--scores", str(scores), "--plan", PLAN.format(h=1536 // args.scale, f=6144 // args.scale), "--out", str(dest)])
                seconds, rss_kib = timed(cmd)
                rows[what].append((seconds, rss_kib))
                print(f"pair {r}: {what}: {seconds:.2f} s, peak RSS {rss_kib / 2**20:.2f} GiB", flush=True)
        cp = statistics.median(s for s, _ in rows["cp"])
        prune = statistics.median(s for s, _ in rows["prune"])
        result = {
            "scale": args.scale, "cpus": os.cpu_count(), "load_average_before": load,
            "checkpoint_bytes": sum(p.stat().st_size for p in src.glob("*.safetensors")),
            "shards": len(list(src.glob("*.safetensors"))),
            "cp_seconds": [s for s, _ in rows["cp"]], "prune_seconds": [s for s, _ in rows["prune"]],
            "prune_peak_rss_gib": [k / 2**20 for _, k in rows["prune"]],
            "cp_median_s": cp, "prune_median_s": prune, "ratio": prune / cp,
        }
        from hybridprune.checkpoint.files import CheckpointFiles

        result["largest_tensor_bytes"] = max(t.nbytes for t in CheckpointFiles(src).tensors.values())
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
