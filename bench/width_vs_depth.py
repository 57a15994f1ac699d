"""Experiment 4 (paper Table 1, #1 vs #24): width vs depth at an equal parameter budget.

Three architectures under the same budget (half of the teacher's non-embedding parameters), each the
winner of `hybridprune.search` over its own space, with the paper's procedure (zero-shot loss of every
candidate on a ranking set, the same short KD for the top 3, lowest loss wins):

- width-only: every width axis (hidden, FFN, Mamba heads and head channels, attention heads), no depth;
- depth-only: whole blocks dropped by their KL-divergence depth scores, no width. This arm applies the
  search's procedure to `prune`'s `num_layers=n` directly (every n whose model fits), which keeps the
  most important block of each kind the model needs, the same rule the search's depth candidates use;
- mixed: width and depth together (the search's best mix).

The winners are then pruned again from each seed's calibration and given the same KD, for the spread.
The ranking set (16 windows of 256 tokens of the calibration split) is not the validation set the
table reports.

    .venv/bin/python bench/width_vs_depth.py [--seeds 3] [--kd-steps 40] [--smoke]
"""

from __future__ import annotations

import sys

import experiment as ex
import hybridprune as hp
from hybridprune.archsearch.space import AXES, SearchSpace

WIDTH_AXES = [a for a in AXES if a != "num_layers"]
ARMS = ("width-only", "depth-only", "mixed")


def depth_only(s, scores, ranking, budget):
    """The search's procedure over `num_layers` alone, through `prune` (see the module docstring)."""
    from hybridprune.evaluate import evaluate_loss
    t = s.teacher
    limit = s.params(t)["non_embedding"] * float(str(budget.params).rstrip("%")) / 100
    fits = []
    for n in range(t.config.num_hidden_layers - 1, 0, -1):
        try:
            pruned = hp.prune(t, scores, {"num_layers": n})
        except hp.PlanError:
            break
        if s.params(pruned)["non_embedding"] <= limit:
            fits.append((evaluate_loss(pruned, ranking)["loss"], n))
    top = sorted(fits)[:3]
    after = [(evaluate_loss(s.kd(hp.prune(t, scores, {"num_layers": n}), 0), ranking)["loss"], n) for _, n in top]
    best = min(after)
    plan = hp.Plan(drop_layers=tuple(i for i in range(t.config.num_hidden_layers) if i not in
                                     hp.prune(t, scores, {"num_layers": best[1]}).hybridprune_info["kept_blocks"]))
    return plan, {"candidates": len(fits), "best": {"key": f"L{best[1]}", "loss": best[0]}}
SPACES = {
    "width-only": SearchSpace(max_width_pruning=0.6, max_depth_pruning=0.0, skip=["num_layers"]),
    "mixed": SearchSpace(max_width_pruning=0.6, max_depth_pruning=0.5),
}


def main(argv=None) -> None:
    ap = ex.parser(__doc__)
    ap.add_argument("--max-candidates", type=int, default=40, help="zero-shot evaluations per search")
    ap.add_argument("--budget", default=None, help="parameter budget, non-embedding (default 50%%; smoke 80%%)")
    args = ap.parse_args(argv)
    s = ex.setup(args, "width_vs_depth")
    t = s.teacher
    budget = hp.Budget(params=args.budget or ("80%" if s.smoke else "50%"), params_kind="non_embedding")
    ranking = s.calib(99, num_samples=16, seq_len=256) if not s.smoke else s.calib(99, num_samples=8)
    scores0 = hp.calibrate(t, s.calib(0), batch_size=8, progress=False, depth_samples=16)
    plans, searched = {}, {}
    plans["depth-only"], searched["depth-only"] = depth_only(s, scores0, ranking, budget)
    for arm, space in SPACES.items():
        res = hp.search(t, scores0, ranking, budget, space=space, top_k=3, band=0.1,
                        max_candidates=args.max_candidates, measure_speed=False, progress=False,
                        kd=dict(steps=s.kd_steps, **ex.KD), train_data=s.train(0))
        plans[arm] = res.best
        searched[arm] = {"candidates": len(res.candidates), "best": res.best_candidate}
        print(arm, res.best, res.best_candidate, flush=True)
    rows = [{"arm": "teacher", "seed": None, "zero_shot": s.loss(t), "params": s.params(t)}]
    for seed in s.seeds:
        scores = hp.calibrate(t, s.calib(seed), batch_size=8, progress=False, depth_samples=16)
        for arm in ARMS:
            plan = plans[arm]
            pruned = hp.prune(t, scores, plan)
            row = {"arm": arm, "plan": plan.to_dict(), "seed": seed, "zero_shot": s.loss(pruned),
                   "params": s.params(pruned), "kept_blocks": pruned.hybridprune_info["kept_blocks"]}
            row["after_kd"] = s.loss(s.kd(pruned, seed))
            rows.append(row)
            print(row, flush=True)

    tp = rows[0]["params"]["non_embedding"]
    lines = ["| arm | plan (search winner) | blocks kept | non-embedding params | zero-shot val loss | after KD |",
             "|---|---|---|---|---|---|",
             f"| teacher | — | all {t.config.num_hidden_layers} | {tp:,} | {rows[0]['zero_shot']:.3f} | |"]
    for arm in ARMS:
        rs = [r for r in rows if r["arm"] == arm]
        full = hp.get_adapter(t).dims(t.config).as_dict()
        plan = ", ".join(f"{k}={v}" for k, v in rs[0]["plan"].items() if k != "drop_layers" and full.get(k) != v) or "—"
        lines.append(f"| {arm} | {plan} | {rs[0]['kept_blocks']} | {rs[0]['params']['non_embedding']:,} "
                     f"({rs[0]['params']['non_embedding'] / tp:.0%}) | {ex.spread([r['zero_shot'] for r in rs])} | "
                     f"{ex.spread([r['after_kd'] for r in rs])} |")
    lines += ["", "Search: " + "; ".join(f"{arm}: {v['candidates']} candidates evaluated, winner's ranking-set "
                                          f"loss {v['best']['loss']:.3f} after KD" for arm, v in searched.items())]
    spaces = {**{k: v.to_dict() for k, v in SPACES.items()}, "depth-only": "prune num_layers=n, n < all"}

    fig, (ax,) = ex.figure(1, 6)
    for k, key in enumerate(("zero_shot", "after_kd")):
        ys = [ex.mean([r[key] for r in rows if r["arm"] == arm]) for arm in ARMS]
        es = [ex.statistics.stdev([r[key] for r in rows if r["arm"] == arm]) if len(s.seeds) > 1 else 0 for arm in ARMS]
        ax.bar([j + (k - 0.5) * 0.35 for j in range(len(ARMS))], ys, 0.35, yerr=es, capsize=3,
               label="zero-shot" if key == "zero_shot" else f"after {s.kd_steps}-step KD")
    ax.axhline(rows[0]["zero_shot"], color="k", lw=0.8, ls="--", label="teacher")
    ax.set_xticks(range(len(ARMS)), list(ARMS))
    ax.set_yscale("log")
    ax.set_ylabel("validation loss (log scale)")
    ax.set_title(f"budget: {budget.params} of non-embedding parameters")
    ax.legend(fontsize=8)
    s.write(rows, "\n".join(lines), {"budget": budget.to_dict(), "plans": {k: v.to_dict() for k, v in plans.items()},
                                     "search": searched, "spaces": spaces}, fig)


if __name__ == "__main__":
    sys.exit(main())
