"""Experiment 1: does group-aware head selection matter, zero-shot and after the same short KD?

Only the grouped heads of the teacher's linear mixers are pruned (every other size unchanged): Mamba2
heads under their B/C groups (the default teacher), or, with `--teacher tiny-qwen3-5`, Gated DeltaNet
value heads under their key heads (bench/head_axis.py). Four ways, from the same scores (one
calibration per seed):

- group-aware: heads ranked inside their group, the same number kept per group (hybridprune);
- group-agnostic: the global top-k heads by the same scores, laid into the groups by position, so a
  head can end up paired with another group's B and C, or reading another key head (what a
  permutation-blind pruner would do);
- agnostic, B/C (key heads) re-paired: the same heads, each new group's shared rows (B and C of in_proj
  and conv1d; the query and key rows of in_proj_qkv and conv1d) set to the mean of those of the
  groups its heads came from;
- random in-group: the same per-group counts, heads drawn at random (the scores' contribution).

Every arm gets the same KD (bench/experiment.py). To explain the result, each head is also ablated
alone (its out_proj columns zeroed) on 16 validation windows, and the rank correlation between its
activation score and its ablation loss is reported; an "oracle in-group" arm keeps, per group, the
heads whose ablation hurts most (zero-shot only; chosen on validation data, so optimistic).

    .venv/bin/python bench/group_awareness.py [--seeds 3] [--kd-steps 40] [--smoke] [--teacher tiny-qwen3-5]
        [--kd-targets 12,8,4] [--kd-arms group-aware,group-agnostic]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import experiment as ex
import hybridprune as hp
from hybridprune.pruning.apply import apply_selection
from head_axis import GDN_VALUE_HEADS, MAMBA_HEADS, axis_of, mixer_of  # noqa: F401  (mixer_of re-exported)
from hybridprune.pruning.selection import Selection, select_mamba, top_k_sorted


def arm_names(axis) -> tuple[str, ...]:
    repaired = "agnostic, B/C re-paired" if axis.group == "B/C" else f"agnostic, {axis.group}s re-paired"
    return ("group-aware", "group-agnostic", repaired, "random in-group")


ARMS = arm_names(MAMBA_HEADS)


def selection_for(dims, heads_per_layer) -> Selection:
    return axis_of(dims).selection(dims, heads_per_layer)


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


def repair_keys(pruned, teacher, dims, heads_per_layer) -> None:
    """GDN: set each new key head's query and key rows (in_proj_qkv, conv1d) to the mean of those of
    the key heads its value heads came from."""
    hk, dk = dims.linear_num_key_heads, dims.linear_key_head_dim
    per, kd = dims.linear_num_value_heads // hk, hk * dk
    for i, heads in heads_per_layer.items():
        src, dst = mixer_of(teacher, i), mixer_of(pruned, i)
        k = heads.numel() // hk
        with torch.no_grad():
            for j in range(hk):
                w = torch.bincount(heads[j * k:(j + 1) * k] // per, minlength=hk).double() / k
                for base in (0, kd):  # q rows, then k rows
                    rows = lambda g: slice(base + g * dk, base + (g + 1) * dk)  # noqa: E731
                    for name in ("in_proj_qkv", "conv1d"):
                        t = getattr(src, name).weight
                        getattr(dst, name).weight[rows(j)] = sum(float(w[o]) * t[rows(o)] for o in range(hk) if w[o] > 0)


def repair(pruned, teacher, dims, heads_per_layer) -> None:
    (repair_keys if axis_of(dims) is GDN_VALUE_HEADS else repair_bc)(pruned, teacher, dims, heads_per_layer)


def head_ablation(setup, dims, windows: int = 16) -> dict[int, torch.Tensor]:
    """Validation-loss increase when each head alone is silenced (its out_proj columns zeroed)."""
    from hybridprune.evaluate import evaluate_loss
    axis = axis_of(dims)
    val = setup.val[:windows] if isinstance(setup.val, torch.Tensor) else setup.val.input_ids[:windows]
    base = evaluate_loss(setup.teacher, val)["loss"]
    n_heads, hd, _ = axis.sizes(dims)
    out = {}
    for i in axis.layers(dims):
        w = mixer_of(setup.teacher, i).out_proj.weight
        deltas = []
        for h in range(n_heads):
            saved = w[:, h * hd:(h + 1) * hd].clone()
            with torch.no_grad():
                w[:, h * hd:(h + 1) * hd] = 0
            deltas.append(evaluate_loss(setup.teacher, val)["loss"] - base)
            with torch.no_grad():
                w[:, h * hd:(h + 1) * hd] = saved
        out[i] = torch.tensor(deltas)
    return out


def arms_for(dims, scores, target, seed):
    axis = axis_of(dims)
    n_heads, d, g = axis.sizes(dims)
    per, table = n_heads // g, axis.scores(scores)
    layers = axis.layers(dims)
    # in-group top-k by the L2 over channels (select_mamba ranks any [heads, channels] matrix in its groups;
    # with every channel kept it is also what select_gdn does inside the kept key heads)
    aware = {i: torch.from_numpy(select_mamba(table[i], g, target, d)[0]) for i in layers}  # numpy indices
    agnostic = {i: torch.from_numpy(top_k_sorted(table[i].double().norm(dim=1), target)) for i in layers}
    gen = torch.Generator().manual_seed(seed)
    rand = {i: torch.cat([k * per + torch.sort(torch.randperm(per, generator=gen)[:target // g]).values
                          for k in range(g)]) for i in layers}
    names = arm_names(axis)
    return dict(zip(names, (aware, agnostic, agnostic, rand)))


def _ints(text: str | None) -> list[int] | None:
    return None if text is None else [int(x) for x in text.split(",") if x]


def _merged_rows(paths) -> list[dict]:
    """The rows of several runs (e.g. one seed per process), each seedless row (unpruned, oracle) once."""
    import json
    rows, seen = [], set()
    for path in paths:
        for r in json.loads(Path(path).read_text())["rows"]:
            key = (r["heads"], r["arm"])
            if r["seed"] is not None or key not in seen:
                rows.append(r)
                seen.add(key)
    return rows


def _merged_ablation(paths) -> tuple[dict[int, dict[int, float]], dict[int, torch.Tensor]]:
    """Per-seed Spearman ρ and the (seed-independent) head ablation of runs that measured them."""
    import json
    corr, ablation = {}, {}
    for path in paths:
        settings = json.loads(Path(path).read_text())["settings"]
        for seed, per_layer in settings.get("spearman_score_vs_ablation", {}).items():
            corr[int(seed)] = {int(i): v for i, v in per_layer.items()}
        if not ablation and settings.get("ablation"):
            ablation = {int(i): torch.tensor(v) for i, v in settings["ablation"].items()}
    return corr, ablation


def main(argv=None) -> None:
    ap = ex.parser(__doc__)
    ap.add_argument("--kd-targets", default=None, help="head counts that get the KD (default: 1/2 and 1/4 of the heads)")
    ap.add_argument("--kd-arms", default=None, help="arms that get the KD, comma-separated (default: all four)")
    ap.add_argument("--merge", nargs="+", default=None, help="build the table from these runs' JSON (no compute)")
    ap.add_argument("--ablation-windows", type=int, default=16, help="validation windows of the head ablation (0: no ablation, Spearman or oracle)")
    args = ap.parse_args(argv)
    s = ex.setup(args, "group_awareness")
    t = s.teacher
    dims = hp.get_adapter(t).dims(t.config)
    axis = axis_of(dims)
    arms = arm_names(axis)
    n_heads, _, g = axis.sizes(dims)
    per = n_heads // g
    targets = list(range(n_heads - g, 0, -g))
    kd_targets = _ints(args.kd_targets)
    if kd_targets is None:
        kd_targets = [h for h in (n_heads // 2, n_heads // 4) if h >= g and h % g == 0]
    kd_arms = args.kd_arms.split(",") if args.kd_arms else list(arms)
    layers = axis.layers(dims)
    if args.merge:
        rows = _merged_rows(args.merge)
        s.seeds = sorted({r["seed"] for r in rows if r["seed"] is not None})
        corr, ablation = _merged_ablation(args.merge)
        ablate = bool(ablation) and set(corr) >= set(s.seeds)
    else:
        rows = [{"heads": n_heads, "arm": "unpruned", "seed": None, "zero_shot": s.loss(t)}]
        ablate = args.ablation_windows > 0
        ablation, corr = (head_ablation(s, dims, args.ablation_windows) if ablate else {}), {}
    for seed in s.seeds if not args.merge else ():
        scores = hp.calibrate(t, s.calib(seed), batch_size=8, progress=False)
        if ablate:
            corr[seed] = {i: ex.spearman(axis.scores(scores)[i].double().norm(dim=1), ablation[i]) for i in layers}
        for target in targets:
            for arm, heads in arms_for(dims, scores, target, seed).items():
                pruned = apply_selection(t, selection_for(dims, heads), dims.replace(**{axis.heads_field: target}))
                if arm == arms[2]:
                    repair(pruned, t, dims, heads)
                row = {"heads": target, "arm": arm, "seed": seed, "zero_shot": s.loss(pruned)}
                if arm == "group-agnostic":
                    row["heads_in_foreign_group"] = sum(
                        int((h // per != torch.arange(target) // (target // g)).sum()) for h in heads.values())
                if target in kd_targets and arm in kd_arms:
                    row["after_kd"] = s.loss(s.kd(pruned, seed))
                rows.append(row)
                print(row, flush=True)
    for target in targets if ablate and not args.merge else ():  # oracle: per group, the heads whose ablation hurts most
        oracle = {i: torch.from_numpy(select_mamba(ablation[i].clamp(min=0).unsqueeze(1) + 1e-9, g, target, 1)[0])
                  for i in layers}
        pruned = apply_selection(t, selection_for(dims, oracle), dims.replace(**{axis.heads_field: target}))
        rows.append({"heads": target, "arm": "oracle in-group (ablation)", "seed": None, "zero_shot": s.loss(pruned)})

    lines = ["| heads kept | arm | zero-shot val loss | after KD |", "|---|---|---|---|",
             f"| {n_heads} | unpruned | {rows[0]['zero_shot']:.3f} | |"]
    for target in targets:
        for arm in arms + (("oracle in-group (ablation)",) if ablate else ()):
            rs = [r for r in rows if r["heads"] == target and r["arm"] == arm]
            kd = [r["after_kd"] for r in rs if "after_kd" in r]
            extra = ""
            if arm == "group-agnostic":
                extra = f" ({ex.mean([r['heads_in_foreign_group'] for r in rs]):.0f} heads in a foreign group)"
            lines.append(f"| {target} | {arm}{extra} | {ex.spread([r['zero_shot'] for r in rs])} | "
                         f"{ex.spread(kd) if kd else ''} |")
    if ablate:
        lines += _ablation_lines(s, layers, corr, ablation)

    fig, (a0, a1) = ex.figure(2)
    for ax, key in ((a0, "zero_shot"), (a1, "after_kd")):
        for arm in arms:
            xs, ys, es = [], [], []
            for target in targets:
                vals = [r[key] for r in rows if r["heads"] == target and r["arm"] == arm and key in r]
                if vals:
                    xs.append(target)
                    ys.append(ex.mean(vals))
                    es.append(torch.tensor(vals).std().item() if len(vals) > 1 else 0.0)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=arm)
        ax.set_xlabel(f"{axis.head}s kept (of {n_heads})")
        ax.set_ylabel("validation loss")
        ax.set_title("zero-shot" if key == "zero_shot" else f"after {s.kd_steps}-step KD")
    a0.legend(fontsize=7)
    s.write(rows, "\n".join(lines), {"targets": targets, "kd_targets": kd_targets, "kd_arms": kd_arms,
                                     "ablation_windows": args.ablation_windows,
                                     "spearman_score_vs_ablation": {str(k): v for k, v in corr.items()},
                                     "ablation": {str(i): v.tolist() for i, v in ablation.items()}}, fig)


def _ablation_lines(s, layers, corr, ablation) -> list[str]:
    per_layer = {i: ex.mean([corr[sd][i] for sd in s.seeds]) for i in layers}
    lines = ["", "Spearman correlation, head activation score vs loss increase when the head alone is silenced "
              "(mean over seeds):", "", "| block | " + " | ".join(str(i) for i in layers) + " | all |",
              "|---|" + "---|" * (len(layers) + 1),
              "| ρ | " + " | ".join(f"{per_layer[i]:.2f}" for i in layers) + f" | {ex.mean(list(per_layer.values())):.2f} |"]
    share = {i: float(ablation[i].clamp(min=0).max() / ablation[i].clamp(min=0).sum().clamp(min=1e-9)) for i in layers}
    lines += ["", "Largest single-head ablation loss increase per block: " + ", ".join(
        f"block {i}: {float(ablation[i].max()):+.3f} ({share[i]:.0%} of the block's total)" for i in layers)]

    return lines


if __name__ == "__main__":
    sys.exit(main())
