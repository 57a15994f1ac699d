"""Experiment 1: does group-aware Mamba head selection matter, zero-shot and after the same short KD?

Only the Mamba heads of the shipped teacher are pruned (every other size unchanged), four ways, from
the same scores (one calibration per seed):

- group-aware: heads ranked inside their B/C group, the same number kept per group (hybridprune);
- group-agnostic: the global top-k heads by the same scores, laid into the groups by position, so a
  head can end up paired with another group's B and C (what a permutation-blind pruner would do);
- agnostic, B/C re-paired: the same heads, each new group's B and C rows (in_proj and conv1d) set to
  the mean of the B/C of the groups its heads came from;
- random in-group: the same per-group counts, heads drawn at random (the scores' contribution).

Every arm gets the same KD (bench/experiment.py). To explain the result, each head is also ablated
alone (its out_proj columns zeroed) on 16 validation windows, and the rank correlation between its
activation score and its ablation loss is reported; an "oracle in-group" arm keeps, per group, the
heads whose ablation hurts most (zero-shot only; chosen on validation data, so optimistic).

    .venv/bin/python bench/group_awareness.py [--seeds 3] [--kd-steps 40] [--smoke]
"""

from __future__ import annotations

import sys

import torch

import experiment as ex
import hybridprune as hp
from hybridprune.pruning.apply import apply_selection
from hybridprune.pruning.selection import Selection, select_mamba, top_k_sorted

ARMS = ("group-aware", "group-agnostic", "agnostic, B/C re-paired", "random in-group")


def selection_for(dims, heads_per_layer) -> Selection:
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    for i, heads in heads_per_layer.items():
        sel.mamba_heads[i] = heads
        sel.mamba_channels[i] = torch.arange(dims.mamba_head_dim)
    return sel


def mixer_of(model, i):
    """The Mamba mixer of block i (the module that owns in_proj and conv1d)."""
    block = hp.get_adapter(model).blocks(model)[i]
    return next(m for m in block.module.modules() if hasattr(m, "in_proj") and hasattr(m, "conv1d"))


def repair_bc(pruned, teacher, dims, heads_per_layer) -> None:
    """Set each new group's B/C (in_proj rows, conv1d channels) to the mean B/C of its heads' original groups."""
    g, ds, per = dims.mamba_n_groups, dims.mamba_state_size, dims.mamba_num_heads // dims.mamba_n_groups
    inner = dims.mamba_num_heads * dims.mamba_head_dim
    for i, heads in heads_per_layer.items():
        new_inner = heads.numel() * dims.mamba_head_dim
        src, dst = mixer_of(teacher, i), mixer_of(pruned, i)
        k = heads.numel() // g
        with torch.no_grad():
            for j in range(g):
                w = torch.bincount(heads[j * k:(j + 1) * k] // per, minlength=g).double() / k
                for part in (0, 1):  # B then C
                    def rows(base, grp):
                        start = base + part * g * ds + grp * ds
                        return slice(start, start + ds)
                    mix = lambda t, base: sum(float(w[o]) * t[rows(base, o)] for o in range(g) if w[o] > 0)  # noqa: E731
                    dst.in_proj.weight[rows(2 * new_inner, j)] = mix(src.in_proj.weight, 2 * inner)
                    dst.conv1d.weight[rows(new_inner, j)] = mix(src.conv1d.weight, inner)
                    if dst.conv1d.bias is not None:
                        dst.conv1d.bias[rows(new_inner, j)] = mix(src.conv1d.bias, inner)


def head_ablation(setup, dims, windows: int = 16) -> dict[int, torch.Tensor]:
    """Validation-loss increase when each Mamba head alone is silenced (its out_proj columns zeroed)."""
    from hybridprune.evaluate import evaluate_loss
    val = setup.val[:windows] if isinstance(setup.val, torch.Tensor) else setup.val.input_ids[:windows]
    base = evaluate_loss(setup.teacher, val)["loss"]
    hd, out = dims.mamba_head_dim, {}
    for i in dims.layers_of("mamba"):
        w = mixer_of(setup.teacher, i).out_proj.weight
        deltas = []
        for h in range(dims.mamba_num_heads):
            saved = w[:, h * hd:(h + 1) * hd].clone()
            with torch.no_grad():
                w[:, h * hd:(h + 1) * hd] = 0
            deltas.append(evaluate_loss(setup.teacher, val)["loss"] - base)
            with torch.no_grad():
                w[:, h * hd:(h + 1) * hd] = saved
        out[i] = torch.tensor(deltas)
    return out


def arms_for(dims, scores, target, seed):
    g, per = dims.mamba_n_groups, dims.mamba_num_heads // dims.mamba_n_groups
    layers = dims.layers_of("mamba")
    aware = {i: select_mamba(scores.mamba[i], g, target, dims.mamba_head_dim)[0] for i in layers}
    agnostic = {i: top_k_sorted(scores.mamba[i].double().norm(dim=1), target) for i in layers}
    gen = torch.Generator().manual_seed(seed)
    rand = {i: torch.cat([k * per + torch.sort(torch.randperm(per, generator=gen)[:target // g]).values
                          for k in range(g)]) for i in layers}
    return {"group-aware": aware, "group-agnostic": agnostic, "agnostic, B/C re-paired": agnostic,
            "random in-group": rand}


def main(argv=None) -> None:
    args = ex.parser(__doc__).parse_args(argv)
    s = ex.setup(args, "group_awareness")
    t = s.teacher
    dims = hp.get_adapter(t).dims(t.config)
    g, per = dims.mamba_n_groups, dims.mamba_num_heads // dims.mamba_n_groups
    targets = list(range(dims.mamba_num_heads - g, 0, -g))
    kd_targets = [h for h in (dims.mamba_num_heads // 2, dims.mamba_num_heads // 4) if h >= g and h % g == 0]
    rows = [{"heads": dims.mamba_num_heads, "arm": "unpruned", "seed": None, "zero_shot": s.loss(t)}]
    ablation = head_ablation(s, dims)
    layers = dims.layers_of("mamba")
    corr = {}
    for seed in s.seeds:
        scores = hp.calibrate(t, s.calib(seed), batch_size=8, progress=False)
        corr[seed] = {i: ex.spearman(scores.mamba[i].double().norm(dim=1), ablation[i]) for i in layers}
        for target in targets:
            for arm, heads in arms_for(dims, scores, target, seed).items():
                pruned = apply_selection(t, selection_for(dims, heads), dims.replace(mamba_num_heads=target))
                if arm == "agnostic, B/C re-paired":
                    repair_bc(pruned, t, dims, heads)
                row = {"heads": target, "arm": arm, "seed": seed, "zero_shot": s.loss(pruned)}
                if arm == "group-agnostic":
                    row["heads_in_foreign_group"] = sum(
                        int((h // per != torch.arange(target) // (target // g)).sum()) for h in heads.values())
                if target in kd_targets:
                    row["after_kd"] = s.loss(s.kd(pruned, seed))
                rows.append(row)
                print(row, flush=True)
    for target in targets:  # oracle: per group, the heads whose ablation hurts most (seed-independent)
        oracle = {i: select_mamba(ablation[i].clamp(min=0).unsqueeze(1) + 1e-9, g, target, 1)[0] for i in layers}
        pruned = apply_selection(t, selection_for(dims, oracle), dims.replace(mamba_num_heads=target))
        rows.append({"heads": target, "arm": "oracle in-group (ablation)", "seed": None, "zero_shot": s.loss(pruned)})

    lines = ["| heads kept | arm | zero-shot val loss | after KD |", "|---|---|---|---|",
             f"| {dims.mamba_num_heads} | unpruned | {rows[0]['zero_shot']:.3f} | |"]
    for target in targets:
        for arm in ARMS + ("oracle in-group (ablation)",):
            rs = [r for r in rows if r["heads"] == target and r["arm"] == arm]
            kd = [r["after_kd"] for r in rs if "after_kd" in r]
            extra = ""
            if arm == "group-agnostic":
                extra = f" ({ex.mean([r['heads_in_foreign_group'] for r in rs]):.0f} heads in a foreign group)"
            lines.append(f"| {target} | {arm}{extra} | {ex.spread([r['zero_shot'] for r in rs])} | "
                         f"{ex.spread(kd) if kd else ''} |")
    per_layer = {i: ex.mean([corr[sd][i] for sd in s.seeds]) for i in layers}
    lines += ["", "Spearman correlation, head activation score vs loss increase when the head alone is silenced "
              "(mean over seeds):", "", "| block | " + " | ".join(str(i) for i in layers) + " | all |",
              "|---|" + "---|" * (len(layers) + 1),
              "| ρ | " + " | ".join(f"{per_layer[i]:.2f}" for i in layers) + f" | {ex.mean(list(per_layer.values())):.2f} |"]
    share = {i: float(ablation[i].clamp(min=0).max() / ablation[i].clamp(min=0).sum().clamp(min=1e-9)) for i in layers}
    lines += ["", "Largest single-head ablation loss increase per block: " + ", ".join(
        f"block {i}: {float(ablation[i].max()):+.3f} ({share[i]:.0%} of the block's total)" for i in layers)]

    fig, (a0, a1) = ex.figure(2)
    for ax, key in ((a0, "zero_shot"), (a1, "after_kd")):
        for arm in ARMS:
            xs, ys, es = [], [], []
            for target in targets:
                vals = [r[key] for r in rows if r["heads"] == target and r["arm"] == arm and key in r]
                if vals:
                    xs.append(target)
                    ys.append(ex.mean(vals))
                    es.append(torch.tensor(vals).std().item() if len(vals) > 1 else 0.0)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=arm)
        ax.set_xlabel("Mamba heads kept (of %d)" % dims.mamba_num_heads)
        ax.set_ylabel("validation loss")
        ax.set_title("zero-shot" if key == "zero_shot" else f"after {s.kd_steps}-step KD")
    a0.legend(fontsize=7)
    s.write(rows, "\n".join(lines), {"targets": targets, "kd_targets": kd_targets,
                                     "spearman_score_vs_ablation": {str(k): v for k, v in corr.items()}}, fig)


if __name__ == "__main__":
    sys.exit(main())
