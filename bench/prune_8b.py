"""Streaming prune at the real Nemotron-H 8B shape, against copying the same files.

1. Writes a random Nemotron-H checkpoint at the 8B shape (52 blocks `M-M-M-M*-...`, hidden 4096, FFN
   21504, 128 Mamba heads x 64 in 8 groups, state 128, 32 query / 8 KV heads x 128, vocab 131072,
   untied) in bf16, in the Hub's key layout (`backbone.*`) and sharded with an index, tensor by tensor:
   the model is never built in memory.
2. Derives scores of the right shapes deterministically from the weights (no forward pass at this size
   on a CPU): the L2 norm of each Mamba channel's, FFN neuron's and attention head channel's outgoing
   weights (`out_proj`, `down_proj`, `o_proj` columns) and of each embedding column.
3. Times `cp -r` + `sync` of the checkpoint and `hybridprune prune` (streaming, + `sync`) to the paper's
   4B plan side by side, alternating, with peak RSS from `/usr/bin/time`; checks that the output holds
   exactly the parameter count the analytic model gives.

    python bench/prune_8b.py --dir /path/with/50GB/free [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

PATTERN = "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-"
TYPES = {"M": "linear_attention", "-": "mlp", "*": "full_attention"}
PLAN = "hidden_size=3072,ffn_hidden_size=12288,mamba_num_heads=112"
EXPECTED_AFTER = 4_489_223_040  # the paper digest's count for this plan (shared/research/paper.md §1)


def config_8b():
    from transformers import AutoConfig

    return AutoConfig.for_model(
        "nemotron_h", layers_block_type=[TYPES[c] for c in PATTERN], hidden_size=4096, intermediate_size=21504,
        mamba_num_heads=128, mamba_head_dim=64, n_groups=8, ssm_state_size=128, conv_kernel=4, chunk_size=128,
        use_conv_bias=True, num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=131072,
        dtype="bfloat16",
    )


def gaussian_bf16(shape, generator) -> torch.Tensor:
    return (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)


def write_checkpoint(out: Path, shard_bytes: int = 5 * 10**9, config=None, weights=gaussian_bf16) -> None:
    """Random bf16 weights (`weights(shape, generator)`; norms and D are ones) of `config` (default: the
    8B), written tensor by tensor into shards of at most `shard_bytes`, with an index."""
    from hybridprune.architectures import get_adapter
    from hybridprune.checkpoint.files import INDEX_FILE, KeyMap, ShardWriter

    config = config or config_8b()
    with torch.device("meta"):
        meta = get_adapter(config).build_model(config)
    keymap = KeyMap(config.model_type)
    layout = [(keymap.checkpoint_key(k), torch.bfloat16, tuple(v.shape)) for k, v in meta.state_dict().items()]
    shards, size = [[]], 0
    for item in layout:
        n = 2 * torch.Size(item[2]).numel()
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += n
    out.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        writer = ShardWriter(out / name, shard)
        for key, dtype, shape in shard:
            ones = key.endswith(("norm.weight", "norm_f.weight", "D"))
            tensor = torch.ones(shape, dtype=dtype) if ones else weights(shape, g)
            writer.write(key, _stored(tensor))
            weight_map[key] = name
        writer.close()
    total = sum(2 * torch.Size(s).numel() for _, _, s in layout)
    (out / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    config.save_pretrained(out)


def _stored(tensor):
    """A tensor as the shard writer takes it: a numpy array of its dtype's storage type (bf16 as uint16)."""
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view("uint16")
    return tensor.numpy()


def derived_scores(src: Path, scores_dir: Path) -> None:
    """Scores of the right shapes from the weights: column norms of each unit's outgoing projection."""
    from hybridprune.architectures import get_adapter
    from hybridprune.checkpoint.files import CheckpointFiles, KeyMap
    from hybridprune.checkpoint.fingerprint import checkpoint_fingerprint
    from hybridprune.importance.scores import Scores
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(src)
    dims = get_adapter(config).dims(config)
    files, keymap = CheckpointFiles(src), KeyMap(config.model_type)
    by_model_key = {keymap.model_key(k): k for k in files.tensors}

    def column_norms(model_key: str) -> torch.Tensor:
        key = by_model_key[model_key]
        return files.read(key).float().norm(dim=0)

    scores = Scores()
    for i, kind in enumerate(dims.block_kinds):
        p = f"model.layers.{i}.mixer."
        if kind == "mamba":
            scores.mamba[i] = column_norms(p + "out_proj.weight").view(dims.mamba_num_heads, dims.mamba_head_dim)
        elif kind == "mlp":
            scores.ffn[i] = column_norms(p + "down_proj.weight")
        elif kind == "attention":
            scores.attention[i] = column_norms(p + "o_proj.weight").view(dims.num_attention_heads, dims.attention_head_dim)
    scores.hidden = column_norms("model.embeddings.weight")
    scores.meta = {"model_type": config.model_type, "fingerprint": checkpoint_fingerprint(files, config),
                   "dims": dims.as_dict(), "aggregation": "derived from weights (benchmark only)"}
    scores.save(scores_dir)


def timed(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds (including a final `sync`) and peak RSS in KiB of `cmd`."""
    start = time.perf_counter()
    run = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
    subprocess.run(["sync"], check=True)
    seconds = time.perf_counter() - start
    if run.returncode:
        raise SystemExit(f"{cmd} failed:\n{run.stdout}\n{run.stderr}")
    return seconds, int(run.stderr.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("runs/bench-8b"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoint for another run")
    args = parser.parse_args()
    src, scores = args.dir / "nemotron-h-8b-random", args.dir / "scores"
    if not (src / "config.json").exists():  # the config is written last: without it, start over
        shutil.rmtree(src, ignore_errors=True)
        start = time.perf_counter()
        write_checkpoint(src)
        print(f"wrote {src} in {time.perf_counter() - start:.0f} s", flush=True)
    if not (scores / "scores.json").exists():
        derived_scores(src, scores)
    size = sum(p.stat().st_size for p in src.iterdir())
    shard = max(p.stat().st_size for p in src.glob("*.safetensors"))
    rows = {"cp": [], "prune": []}
    exe = str(Path(sys.executable).with_name("hybridprune"))
    for r in range(args.repeats):
        for what in ("cp", "prune"):
            dest = args.dir / f"{what}-out"
            shutil.rmtree(dest, ignore_errors=True)
            cmd = (["cp", "-r", str(src), str(dest)] if what == "cp" else
                   [exe, "prune", "--model", str(src), "--scores", str(scores), "--plan", PLAN, "--out", str(dest)])
            seconds, rss_kib = timed(cmd)
            rows[what].append((seconds, rss_kib))
            print(f"repeat {r}: {what}: {seconds:.1f} s, peak RSS {rss_kib / 2**20:.2f} GiB", flush=True)
    out = args.dir / "prune-out"
    from hybridprune.checkpoint.files import CheckpointFiles

    params = sum(torch.Size(t.shape).numel() for t in CheckpointFiles(out).tensors.values())
    info = json.loads((out / "hybridprune.json").read_text())
    result = {
        "checkpoint_bytes": size, "largest_shard_bytes": shard,
        "cp_seconds": [s for s, _ in rows["cp"]], "prune_seconds": [s for s, _ in rows["prune"]],
        "prune_peak_rss_gib": [k / 2**20 for _, k in rows["prune"]],
        "time_ratio_median": statistics.median(p for p, _ in rows["prune"]) / statistics.median(c for c, _ in rows["cp"]),
        "rss_target_gib": (2 * shard + 2**30) / 2**30,
        "params_after": params, "params_analytic": info["parameters"]["after"], "params_expected": EXPECTED_AFTER,
    }
    print(json.dumps(result, indent=2))
    (args.dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    assert params == info["parameters"]["after"] == EXPECTED_AFTER, "parameter count differs from the analytic one"
    if not args.keep:
        shutil.rmtree(src)


if __name__ == "__main__":
    main()
