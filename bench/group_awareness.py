"""Does group-awareness matter? Zero-shot validation loss of the shipped teacher with its Mamba heads
pruned three ways, all else unchanged, measured side by side:

- group-aware: heads ranked inside their B/C group, the same number kept per group (hybridprune);
- group-agnostic: the global top-k heads by the same scores, laid into the groups in order, so a head
  can end up paired with another group's B and C (what a permutation-blind pruner would do);
- random in-group: the same per-group counts, heads drawn at random (the scores' contribution).

    .venv/bin/python bench/group_awareness.py [--samples 64] [--seq-len 256]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import hybridprune as hp
from hybridprune.data import load_token_samples, teacher_path
from hybridprune.evaluate import evaluate_loss
from hybridprune.pruning.apply import apply_selection
from hybridprune.pruning.selection import Selection, select_mamba, top_k_sorted


def selection_for(dims, scores, heads_per_layer) -> Selection:
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    for i, heads in heads_per_layer.items():
        sel.mamba_heads[i] = heads
        sel.mamba_channels[i] = torch.arange(dims.mamba_head_dim)
    return sel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--random-seeds", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(teacher_path(), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(teacher_path())
    kw = dict(seq_len=args.seq_len, num_samples=args.samples, seed=0)
    calib = load_token_samples("shakespeare", tok, split="calibration", **kw)
    val = load_token_samples("shakespeare", tok, split="validation", **kw)
    scores = hp.calibrate(model, calib, batch_size=8, progress=False)
    dims = hp.get_adapter(model).dims(model.config)
    g, per_group = dims.mamba_n_groups, dims.mamba_num_heads // dims.mamba_n_groups
    rows = [{"mamba_num_heads": dims.mamba_num_heads, "method": "unpruned",
             "loss": evaluate_loss(model, val)["loss"]}]
    for target in range(dims.mamba_num_heads - g, 0, -g):
        new_dims = dims.replace(mamba_num_heads=target)
        layers = dims.layers_of("mamba")
        aware = {i: select_mamba(scores.mamba[i], g, target, dims.mamba_head_dim)[0] for i in layers}
        agnostic = {i: top_k_sorted(scores.mamba[i].double().norm(dim=1), target) for i in layers}
        results = {}
        for name, heads in (("group-aware", aware), ("group-agnostic", agnostic)):
            pruned = apply_selection(model, selection_for(dims, scores, heads), new_dims)
            results[name] = evaluate_loss(pruned, val)["loss"]
        random_losses = []
        for seed in range(args.random_seeds):
            gen = torch.Generator().manual_seed(seed)
            heads = {i: torch.cat([k * per_group + torch.sort(torch.randperm(per_group, generator=gen)[:target // g]).values
                                   for k in range(g)]) for i in layers}
            random_losses.append(evaluate_loss(apply_selection(model, selection_for(dims, scores, heads), new_dims), val)["loss"])
        results["random in-group (median)"] = statistics.median(random_losses)
        moved = sum(int((heads // per_group != torch.arange(target) // (target // g)).sum()) for heads in agnostic.values())
        for name, loss in results.items():
            rows.append({"mamba_num_heads": target, "method": name, "loss": loss,
                         **({"heads_in_wrong_group": moved} if name == "group-agnostic" else {})})
    print(json.dumps(rows, indent=2))
    print("\n| heads kept | method | zero-shot val loss |\n|---|---|---|")
    for r in rows:
        extra = f" ({r['heads_in_wrong_group']} heads in a foreign group)" if "heads_in_wrong_group" in r else ""
        print(f"| {r['mamba_num_heads']} | {r['method']}{extra} | {r['loss']:.4f} |")


if __name__ == "__main__":
    main()
