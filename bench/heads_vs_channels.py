"""Experiment 3 (paper Fig. 7): prune Mamba heads or Mamba head channels, at equal parameters?

Each axis alone, everything else unchanged: keeping a fraction f of the heads (mamba_num_heads) or the
same fraction f of the head channels (mamba_head_dim) removes the same x/z/out_proj/conv/norm weights
(heads also take their few dt/A/D entries). Zero-shot loss at f = 3/4, 1/2, 1/4; after the same KD at
f = 1/2; and generation speed (the `hybridprune.evaluate.measure_generation` harness: prefill, then
greedy decode with the cache; models interleaved, medians, ratios to the teacher).

With `--teacher tiny-qwen3-5`, the Gated DeltaNet axes: value heads (linear_num_value_heads, inside
their key heads) vs value-head channels (linear_value_head_dim) at f = 3/4, 1/2, 1/4 (equal parameters
by construction), and key-head channels (linear_key_head_dim, the delta rule's state dimension) vs
value-head channels at equal parameters. A key channel costs q and k rows of every key head
(2·Hk·(hidden + conv) weights), a value channel a v row, a z row and an out_proj column of every value
head (Hv·(3·hidden + conv)): on the tiny teacher one value channel weighs as much as ~6 key channels,
so the key arm is matched to the value-channel cuts it can reach (dv 32→30 ≈ dk 32→20, dv 32→28 ≈
dk 32→8), and value heads, cut one per key head at least, cannot be matched there.

    .venv/bin/python bench/heads_vs_channels.py [--seeds 3] [--kd-steps 40] [--smoke] [--teacher tiny-qwen3-5]
"""

from __future__ import annotations

import sys

import experiment as ex
import hybridprune as hp
from head_axis import GDN_VALUE_HEADS, axis_of
from hybridprune.evaluate import SpeedResult, measure_generation

ARMS = ("heads", "head channels")
GDN_ARMS = ("value heads", "value-head channels", "key-head channels")


def key_match(adapter, dims, value_channels_cut: int) -> int:
    """The linear_key_head_dim whose cut removes the number of parameters nearest to that of cutting
    `value_channels_cut` channels of every value head."""
    count = lambda **kw: adapter.num_parameters(dims.replace(**kw))  # noqa: E731
    target = count() - count(linear_value_head_dim=dims.linear_value_head_dim - value_channels_cut)
    return min(range(1, dims.linear_key_head_dim), key=lambda k: abs(count() - count(linear_key_head_dim=k) - target))


def gdn_arms(adapter, dims, fractions=((3, 4), (1, 2), (1, 4)), cuts=None,
             kd_fractions=((1, 2),)) -> list[tuple[str, str, dict, bool]]:
    """(kept label, arm, plan, gets KD) of the GDN experiment."""
    H, D = dims.linear_num_value_heads, dims.linear_value_head_dim
    out = []
    for num, den in fractions:
        kd = (num, den) in kd_fractions
        out.append((f"{num}/{den}", "value heads", {"linear_num_value_heads": H * num // den}, kd))
        out.append((f"{num}/{den}", "value-head channels", {"linear_value_head_dim": D * num // den}, kd))
    cuts = cuts or (max(1, D // 16), max(1, D // 8))  # 32 -> 30 and 32 -> 28 on the tiny teacher
    for cut in cuts:
        kd = cut == max(cuts)
        label = f"-{cut} value ch."
        out.append((label, "value-head channels", {"linear_value_head_dim": D - cut}, kd))
        out.append((label, "key-head channels", {"linear_key_head_dim": key_match(adapter, dims, cut)}, kd))
    return out


def _gdn_shape(dims, plan) -> str:
    get = lambda f: plan.get(f, getattr(dims, f))  # noqa: E731
    return (f"{get('linear_num_value_heads')} × {get('linear_value_head_dim')} values, "
            f"{dims.linear_num_key_heads} × {get('linear_key_head_dim')} keys")


def _speed_lines(speed) -> list[str]:
    """The generation-speed table of the report, one row per model, ratios to the teacher."""
    lines = ["", f"Generation speed, batch 1, {speed.settings['contexts'][0]}-token prompt, "
             f"{speed.settings['new_tokens']} new tokens, median of {speed.settings['repeats']} interleaved runs, "
             "ratio to the teacher (one thread; the machine was shared, so only the ratios mean anything):", "",
             "| model | decode tokens/s (ratio) | prefill tokens/s (ratio) | cache MiB/seq |", "|---|---|---|---|"]
    for c in speed.cells:
        lines.append(f"| {c['model']} | {c['decode_tokens_per_s']:.0f} ({c['ratios']['decode_tokens_per_s']:.2f}×) | "
                     f"{c['prefill_tokens_per_s']:.0f} ({c['ratios']['prefill_tokens_per_s']:.2f}×) | "
                     f"{c['cache_mib_per_seq']:.3f} |")
    return lines


def main(argv=None) -> None:
    ap = ex.parser(__doc__)
    ap.add_argument("--context", type=int, default=256, help="prompt tokens for the speed measurement")
    ap.add_argument("--new-tokens", type=int, default=64, help="decoded tokens for the speed measurement")
    ap.add_argument("--fractions", default="3/4,1/2,1/4", help="GDN: fractions of value heads / channels kept")
    ap.add_argument("--value-cuts", default=None,
                    help="GDN: value channels cut for the key-vs-value comparison (default: dv/16 and dv/8)")
    ap.add_argument("--kd-fractions", default="1/2", help="GDN: fractions whose two arms get the KD ('' for none)")
    ap.add_argument("--no-speed", action="store_true", help="GDN: skip the speed measurement (a run merged "
                    "with one that has it)")
    ap.add_argument("--merge", nargs="+", default=None, help="GDN: build the report from these runs' JSON (no "
                    "compute; the speed table of the first run that measured one)")
    args = ap.parse_args(argv)
    s = ex.setup(args, "heads_vs_channels")
    t = s.teacher
    dims = hp.get_adapter(t).dims(t.config)
    if axis_of(dims) is GDN_VALUE_HEADS:
        return gdn_main(s, dims, args)
    H, D, g = dims.mamba_num_heads, dims.mamba_head_dim, dims.mamba_n_groups
    fractions = [(3, 4), (1, 2), (1, 4)]

    def plan(arm, num, den):
        return {"mamba_num_heads": H * num // den} if arm == "heads" else {"mamba_head_dim": D * num // den}

    rows = [{"fraction": 1.0, "arm": "unpruned", "seed": None, "zero_shot": s.loss(t), "params": s.params(t)}]
    models = {"teacher": t}
    for seed in s.seeds:
        scores = hp.calibrate(t, s.calib(seed), batch_size=8, progress=False)
        for num, den in fractions:
            for arm in ARMS:
                p = plan(arm, num, den)
                if p.get("mamba_num_heads", g) % g:
                    continue
                pruned = hp.prune(t, scores, p)
                row = {"fraction": num / den, "arm": arm, "plan": p, "seed": seed, "zero_shot": s.loss(pruned),
                       "params": s.params(pruned)}
                if (num, den) == (1, 2):
                    if seed == s.seeds[0]:
                        models[f"{arm} 1/2"] = pruned
                    row["after_kd"] = s.loss(s.kd(pruned, seed))
                rows.append(row)
                print(row, flush=True)
    smoke = dict(contexts=(8,), new_tokens=4, repeats=1, warmup=0) if s.smoke else \
        dict(contexts=(args.context,), new_tokens=args.new_tokens, repeats=5, warmup=1)
    speed = measure_generation(models, batch_sizes=(1,), **smoke)

    lines = ["| kept | arm | parameters (non-embedding) | zero-shot val loss | after KD |", "|---|---|---|---|---|",
             f"| all | unpruned ({H} heads × {D}) | {rows[0]['params']['non_embedding']:,} | {rows[0]['zero_shot']:.3f} | |"]
    for num, den in fractions:
        for arm in ARMS:
            rs = [r for r in rows if r["fraction"] == num / den and r["arm"] == arm]
            if not rs:
                continue
            kd = [r["after_kd"] for r in rs if "after_kd" in r]
            shape = f"{rs[0]['plan'].get('mamba_num_heads', H)} × {rs[0]['plan'].get('mamba_head_dim', D)}"
            lines.append(f"| {num}/{den} | {arm} ({shape}) | {rs[0]['params']['non_embedding']:,} | "
                         f"{ex.spread([r['zero_shot'] for r in rs])} | {ex.spread(kd) if kd else ''} |")
    lines += _speed_lines(speed)

    fig, (a0, a1) = ex.figure(2)
    for arm in ARMS:
        xs = [num / den for num, den in fractions if any(r["arm"] == arm and r["fraction"] == num / den for r in rows)]
        ys = [ex.mean([r["zero_shot"] for r in rows if r["arm"] == arm and r["fraction"] == x]) for x in xs]
        a0.plot([1.0] + xs, [rows[0]["zero_shot"]] + ys, marker="o", label=f"prune {arm}")
    a0.set_xlabel("fraction of the axis kept")
    a0.set_ylabel("zero-shot validation loss")
    a0.legend()
    names = [c["model"] for c in speed.cells]
    a1.bar(names, [c["ratios"]["decode_tokens_per_s"] for c in speed.cells])
    a1.set_ylabel("decode tokens/s, ratio to teacher")
    a1.set_title("generation speed (shared CPU, 1 thread)")
    s.write(rows, "\n".join(lines), {"fractions": fractions, "speed": speed.to_dict()}, fig)



def gdn_main(s, dims, args) -> None:
    """The Gated DeltaNet version (see the module docstring); the same measurements and output files."""
    t = s.teacher
    frac = lambda text: [tuple(int(v) for v in f.split("/")) for f in text.split(",") if f]  # noqa: E731
    cuts = [int(c) for c in args.value_cuts.split(",")] if args.value_cuts else None
    arms = gdn_arms(hp.get_adapter(t), dims, frac(args.fractions), cuts, frac(args.kd_fractions))
    if args.merge:
        rows, runs = ex.merge_runs(args.merge)
        s.seeds = sorted({r["seed"] for r in rows if r["seed"] is not None})
    else:
        rows = [{"kept": "all", "arm": "unpruned", "seed": None, "zero_shot": s.loss(t), "params": s.params(t)}]
    models = {"teacher": t}
    for seed in s.seeds if not args.merge else ():
        scores = hp.calibrate(t, s.calib(seed), batch_size=8, progress=False)
        for kept, arm, plan, kd in arms:
            pruned = hp.prune(t, scores, plan)
            row = {"kept": kept, "arm": arm, "plan": plan, "seed": seed, "zero_shot": s.loss(pruned),
                   "params": s.params(pruned)}
            if kd:
                if seed == s.seeds[0]:
                    models[f"{arm} {kept}"] = pruned
                row["after_kd"] = s.loss(s.kd(pruned, seed))
            rows.append(row)
            print(row, flush=True)
    smoke = dict(contexts=(8,), new_tokens=4, repeats=1, warmup=0) if s.smoke else \
        dict(contexts=(args.context,), new_tokens=args.new_tokens, repeats=5, warmup=1)
    if args.merge:
        measured = [r["speed"] for r in runs if r.get("speed")]
        speed = SpeedResult(**measured[0]) if measured else None
    else:
        speed = None if args.no_speed else measure_generation(models, batch_sizes=(1,), **smoke)

    base = rows[0]["params"]["non_embedding"]
    lines = ["| kept | arm (shape) | parameters (non-embedding) | recurrent state / layer | zero-shot val loss | after KD |",
             "|---|---|---|---|---|---|",
             f"| all | unpruned ({_gdn_shape(dims, {})}) | {base:,} | "
             f"{dims.linear_num_value_heads * dims.linear_key_head_dim * dims.linear_value_head_dim:,} | "
             f"{rows[0]['zero_shot']:.3f} | |"]
    for kept, arm, plan, _ in arms:
        rs = [r for r in rows if r["kept"] == kept and r["arm"] == arm]
        kd = [r["after_kd"] for r in rs if "after_kd" in r]
        get = lambda f: plan.get(f, getattr(dims, f))  # noqa: E731
        state = get("linear_num_value_heads") * get("linear_key_head_dim") * get("linear_value_head_dim")
        lines.append(f"| {kept} | {arm} ({_gdn_shape(dims, plan)}) | {rs[0]['params']['non_embedding']:,} | {state:,} | "
                     f"{ex.spread([r['zero_shot'] for r in rs])} | {ex.spread(kd) if kd else ''} |")
    lines += _speed_lines(speed) if speed else []

    fig, (a0, a1) = ex.figure(2)
    for arm in GDN_ARMS:
        pts = sorted({(base - r["params"]["non_embedding"], r["kept"]) for r in rows if r["arm"] == arm})
        ys = [ex.mean([r["zero_shot"] for r in rows if r["arm"] == arm and r["kept"] == k]) for _, k in pts]
        a0.plot([0] + [p for p, _ in pts], [rows[0]["zero_shot"]] + ys, marker="o", label=f"prune {arm}")
    a0.set_xlabel("non-embedding parameters removed")
    a0.set_ylabel("zero-shot validation loss")
    a0.legend(fontsize=7)
    cells = speed.cells if speed else []
    a1.bar([c["model"] for c in cells], [c["ratios"]["decode_tokens_per_s"] for c in cells])
    a1.tick_params(axis="x", labelrotation=30, labelsize=7)
    a1.set_ylabel("decode tokens/s, ratio to teacher")
    a1.set_title("generation speed (shared CPU, 1 thread)")
    s.write(rows, "\n".join(lines), {"arms": [list(a) for a in arms], "speed": speed.to_dict() if speed else None}, fig)


if __name__ == "__main__":
    sys.exit(main())
