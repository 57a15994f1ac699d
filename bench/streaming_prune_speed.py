"""Streaming prune of a ~2.5 GiB bf16 Nemotron-H against copying the same files.

1. Writes a random Nemotron-H checkpoint (26 blocks `M-M-M-M*-M-M-M-M*-M-M-M-M-`, hidden 2048, FFN 8192,
   64 Mamba heads x 64 in 8 groups, state 128, 16 query / 4 KV heads x 128, vocabulary 131072, untied):
   1,314,062,336 parameters, 2.45 GiB in bf16, in shards of at most 400 MB with an index, in the Hub's
   key layout (`backbone.*`), into a temporary directory that is removed afterwards.
2. Derives scores of the right shapes from the weights (column norms of each unit's outgoing projection,
   as `prune_8b.py` does), so no forward pass is needed.
3. Reads the checkpoint once (page cache warm), then times `cp -r` + `sync` and `hybridprune prune`
   (streaming, + `sync`) to a plan at the 8B -> 4B ratios, in alternating pairs, with peak RSS from
   `/usr/bin/time`; prints the medians and their ratio as JSON, with the load average before and after.
4. Each prune runs the command line's own `main` in a fresh interpreter that notes when each phase ends,
   so the same runs give the breakdown (medians, seconds): `startup` (the interpreter), `import` (the
   command line and the streaming prune's modules; torch and transformers only if the prune needs them:
   `prune_imported` says which it imported), `planning` (config, scores,
   fingerprint, selection, the source checked against its config's shapes), `tensor work` (reading,
   cutting and writing every tensor, into the page cache), `write` (index, provenance, model card,
   config, the output checked against the new config's shapes, the rename into place, the summary),
   `exit` (the interpreter's), `sync` (the written bytes to disk). `fixed` is all but the tensor work
   and the sync: what a prune costs whatever the checkpoint's size. The same phases in CPU seconds of the
   prune's process (all its threads) come too: on a shared machine they show what the wall times hide.

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
PHASES = ("startup", "import", "planning", "tensor work", "write", "exit", "sync")

# The prune, run in a fresh interpreter: `hybridprune prune ARGS` through the command line's `main`, noting the
# time (wall, and CPU of all threads) at each phase's end. Phases inside the streaming prune are marked by
# wrapping the functions that open them. argv: the parent's time.time() at the spawn, then the arguments.
_CHILD = """
import sys, time, json
now = lambda: (time.time(), time.process_time())  # noqa: E731
spawned, marks = float(sys.argv[1]), {"startup": now()}
import hybridprune.cli as cli
from hybridprune.pruning import streaming  # what the command imports before it reads the checkpoint
marks["import"] = now()
atomic_directory, progress = streaming.atomic_directory, streaming._progress


def atomic(*args, **kwargs):
    marks["planning"] = now()
    return atomic_directory(*args, **kwargs)


class Progress:
    def __init__(self, *args):
        self.inner = progress(*args)

    def __enter__(self):
        marks["write-start"] = now()
        return self.inner.__enter__()

    def __exit__(self, *exc):
        marks["tensor work"] = now()
        return self.inner.__exit__(*exc)


streaming.atomic_directory, streaming._progress = atomic, Progress
sys.argv = ["hybridprune", *sys.argv[2:]]
try:
    cli.main()
except SystemExit as exc:
    if exc.code:
        raise
marks["end"] = now()
between = lambda a, b, i: marks[b][i] - marks[a][i]  # noqa: E731
phases = [{"startup": marks["startup"][0] - spawned if i == 0 else marks["startup"][1],
           "import": between("startup", "import", i), "planning": between("import", "planning", i),
           "tensor work": between("write-start", "tensor work", i),
           "write": between("planning", "write-start", i) + between("tensor work", "end", i)} for i in (0, 1)]
print("PHASES " + json.dumps(phases), file=sys.stderr)
print("IMPORTED " + json.dumps(sorted(m for m in ("torch", "transformers") if m in sys.modules)), file=sys.stderr)
"""


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


def timed_prune(args: list[str]) -> tuple[float, int, dict[str, float], dict[str, float], list[str]]:
    """Wall seconds (with the final `sync`), peak RSS in KiB, the phases of `hybridprune prune ARGS` in
    wall seconds and in CPU seconds of the prune's process, and which of torch and transformers it imported."""
    start, spawned = time.perf_counter(), time.time()
    run = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-c", _CHILD, str(spawned), "prune", *args],
                         capture_output=True, text=True)
    ran = time.perf_counter()
    subprocess.run(["sync"], check=True)
    seconds = time.perf_counter() - start
    if run.returncode:
        raise SystemExit(f"hybridprune prune {args} failed:\n{run.stdout}\n{run.stderr}")
    lines = run.stderr.strip().splitlines()
    phases, cpu = json.loads(next(line for line in lines if line.startswith("PHASES "))[len("PHASES "):])
    phases["exit"] = (ran - start) - sum(phases.values())  # the interpreter's exit, and /usr/bin/time's
    phases["sync"] = seconds - (ran - start)
    imported = json.loads(next(line for line in lines if line.startswith("IMPORTED "))[len("IMPORTED "):])
    return seconds, int(lines[-1]), phases, cpu, imported


def breakdown(runs: list[dict[str, float]]) -> dict[str, float]:
    """Median seconds of each phase over `runs`, with `fixed`: all but the tensor work and the sync."""
    out = {name: statistics.median(r[name] for r in runs) for name in PHASES if name in runs[0]}
    out["fixed"] = statistics.median(sum(v for k, v in r.items() if k not in ("tensor work", "sync")) for r in runs)
    return out


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
        load = os.getloadavg()[0]
        rows: dict[str, list[tuple[float, int]]] = {"cp": [], "prune": []}
        phases, cpu, imported = [], [], set()
        plan = PLAN.format(h=1536 // args.scale, f=6144 // args.scale)
        for r in range(args.pairs):
            for what in ("prune", "cp"):
                dest = work / f"{what}-out"
                shutil.rmtree(dest, ignore_errors=True)
                subprocess.run(["sync"], check=True)
                if what == "cp":
                    seconds, rss_kib = timed(["cp", "-r", str(src), str(dest)])
                    note = ""
                else:
                    seconds, rss_kib, run_phases, run_cpu, run_imported = timed_prune(
                        ["--model", str(src), "--scores", str(scores), "--plan", plan, "--out", str(dest)])
                    phases.append(run_phases)
                    cpu.append(run_cpu)
                    imported.update(run_imported)
                    note = " (" + ", ".join(f"{k} {v:.2f}" for k, v in run_phases.items()) + ")"
                rows[what].append((seconds, rss_kib))
                print(f"pair {r}: {what}: {seconds:.2f} s, peak RSS {rss_kib / 2**20:.2f} GiB{note}", flush=True)
        cp = statistics.median(s for s, _ in rows["cp"])
        prune = statistics.median(s for s, _ in rows["prune"])
        result = {
            "scale": args.scale, "cpus": os.cpu_count(), "load_average_before": load,
            "checkpoint_bytes": sum(p.stat().st_size for p in src.glob("*.safetensors")),
            "shards": len(list(src.glob("*.safetensors"))),
            "cp_seconds": [s for s, _ in rows["cp"]], "prune_seconds": [s for s, _ in rows["prune"]],
            "prune_peak_rss_gib": [k / 2**20 for _, k in rows["prune"]],
            "cp_median_s": cp, "prune_median_s": prune, "ratio": prune / cp,
            "prune_phases_median_s": breakdown(phases), "prune_phases_cpu_median_s": breakdown(cpu),
            "load_average_after": os.getloadavg()[0], "prune_imported": sorted(imported),
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
