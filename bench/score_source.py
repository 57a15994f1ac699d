"""Experiment 2 (paper Table 2): which activation should score Mamba heads and head channels?

Four sources, everything else equal (same calibration samples, same aggregation: mean |a| over the
sequence, L2 over samples; same group-aware selection; same KD):

- x: the x slice of the in_proj output, before conv1d and SiLU (the paper's choice, hybridprune's);
- z: the gate slice of the in_proj output;
- out_proj input: the gated, normalised SSM output that out_proj reads (the paper's W_O);
- x·z: the element-wise product of the x and z channel scores (a combination the paper does not test).

Only the Mamba axes are pruned (heads and head channels), at several sizes, zero-shot; one size is
also distilled.

With `--teacher tiny-qwen3-5` the same for Gated DeltaNet value heads and value-head channels, from the
two activations the library collects (`gdn_importance`):

- value branch: the value rows of the in_proj_qkv output, before the conv (Scores `gdn_value`);
- out_proj input: the gated, normalised delta-rule output that out_proj reads (Scores `gdn`).

    .venv/bin/python bench/score_source.py [--seeds 3] [--kd-steps 40] [--smoke] [--teacher tiny-qwen3-5]
"""

from __future__ import annotations

import copy
import sys

import torch

import experiment as ex
import hybridprune as hp
from group_awareness import mixer_of
from head_axis import GDN_VALUE_HEADS, axis_of

SOURCES = ("x", "z", "out_proj input", "x·z")
#: GDN sources: the Scores table each reads (`hybridprune.importance.scores.GDN_IMPORTANCE`)
GDN_SOURCES = {"value branch": "gdn_value", "out_proj input": "gdn"}


def mamba_source_scores(model, calib, dims, batch_size: int = 8) -> dict[str, dict[int, torch.Tensor]]:
    """Per Mamba block, [heads, head_dim] scores of z and of the out_proj input (mean |a| over tokens,
    L2 over samples), from one hooked pass; every window is full length (no padding)."""
    inner = dims.mamba_num_heads * dims.mamba_head_dim
    sums = {"z": {}, "out_proj input": {}}
    handles = []

    def add(kind, i, a):
        sq = a.detach().abs().float().mean(dim=1).double().pow(2).sum(dim=0)
        sums[kind][i] = sums[kind].get(i, 0) + sq

    for i in dims.layers_of("mamba"):
        mixer = mixer_of(model, i)
        handles.append(mixer.in_proj.register_forward_hook(lambda m, a, out, i=i: add("z", i, out[..., :inner])))
        handles.append(mixer.out_proj.register_forward_pre_hook(lambda m, a, i=i: add("out_proj input", i, a[0])))
    ids = calib if isinstance(calib, torch.Tensor) else calib.input_ids
    try:
        with torch.no_grad():
            for b in range(0, ids.shape[0], batch_size):
                model(input_ids=ids[b:b + batch_size], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    shape = (dims.mamba_num_heads, dims.mamba_head_dim)
    return {k: {i: v.sqrt().float().view(shape) for i, v in d.items()} for k, d in sums.items()}


def variants(scores, extra):
    out = {}
    for src in SOURCES:
        sc = copy.deepcopy(scores)
        for i, x in scores.mamba.items():
            sc.mamba[i] = {"x": x, "z": extra["z"].get(i), "out_proj input": extra["out_proj input"].get(i),
                           "x·z": x * extra["z"].get(i)}[src]
        out[src] = sc
    return out


def gdn_variants(scores):
    """One Scores per GDN source: its table in the place the default selection reads (`gdn`)."""
    out = {}
    for src, table in GDN_SOURCES.items():
        sc = copy.deepcopy(scores)
        sc.gdn = dict(getattr(scores, table))
        out[src] = sc
    return out


def main(argv=None) -> None:
    ap = ex.parser(__doc__)
    ap.add_argument("--shapes", default=None, help="heads x channels to prune to, e.g. 12x32,8x32,12x24 "
                    "(default: 3/4 and 1/2 of the heads, 1/2 of the channels, 3/4 x 3/4, 1/2 x 1/2)")
    ap.add_argument("--merge", nargs="+", default=None, help="build the table from these runs' JSON (no compute)")
    args = ap.parse_args(argv)
    s = ex.setup(args, "score_source")
    t = s.teacher
    dims = hp.get_adapter(t).dims(t.config)
    axis = axis_of(dims)
    gdn = axis is GDN_VALUE_HEADS
    sources = tuple(GDN_SOURCES) if gdn else SOURCES
    H, D, g = axis.sizes(dims)
    configs = [(H * 3 // 4, D), (H // 2, D), (H, D // 2), (H * 3 // 4, D * 3 // 4), (H // 2, D // 2)]
    if args.shapes:
        configs = [tuple(int(v) for v in shape.split("x")) for shape in args.shapes.split(",")]
        configs += [] if (H * 3 // 4, D * 3 // 4) in configs else [(H * 3 // 4, D * 3 // 4)]  # the KD shape
    configs = [(h, d) for h, d in configs if h % g == 0 and d >= 1]
    kd_config = (H * 3 // 4, D * 3 // 4)
    if args.merge:
        rows = ex.merge_runs(args.merge)[0]
        s.seeds = sorted({r["seed"] for r in rows if r["seed"] is not None})
    else:
        rows = [{"config": [H, D], "source": "unpruned", "seed": None, "zero_shot": s.loss(t)}]
    for seed in s.seeds if not args.merge else ():
        calib = s.calib(seed)
        scores = hp.calibrate(t, calib, batch_size=8, progress=False)
        by_source = gdn_variants(scores) if gdn else variants(scores, mamba_source_scores(t, calib, dims))
        for h, d in configs:
            for src, sc in by_source.items():
                pruned = hp.prune(t, sc, {axis.heads_field: h, axis.channels_field: d})
                row = {"config": [h, d], "source": src, "seed": seed, "zero_shot": s.loss(pruned),
                       "params": s.params(pruned)}
                if (h, d) == kd_config:
                    row["after_kd"] = s.loss(s.kd(pruned, seed))
                rows.append(row)
                print(row, flush=True)

    lines = [f"| {axis.head}s × head channels | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources),
             f"| {H} × {D} (unpruned) | " + " | ".join(f"{rows[0]['zero_shot']:.3f}" for _ in sources) + " |"]
    for h, d in configs:
        means = {src: ex.mean([r["zero_shot"] for r in rows if r["config"] == [h, d] and r["source"] == src])
                 for src in sources}
        best = min(means, key=means.get)
        cells = [("**%s**" if src == best else "%s") % ex.spread(
            [r["zero_shot"] for r in rows if r["config"] == [h, d] and r["source"] == src]) for src in sources]
        lines.append(f"| {h} × {d} zero-shot | " + " | ".join(cells) + " |")
    kd_rows = {src: [r["after_kd"] for r in rows if "after_kd" in r and r["source"] == src] for src in sources}
    best = min(kd_rows, key=lambda k: ex.mean(kd_rows[k]))
    lines.append(f"| {kd_config[0]} × {kd_config[1]} after KD | " + " | ".join(
        ("**%s**" if src == best else "%s") % ex.spread(kd_rows[src]) for src in sources) + " |")
    lines += ["", "Each cell: mean ± sd over seeds (min–max); bold = lowest mean in the row."]

    fig, (ax,) = ex.figure(1, 7)
    labels = [f"{h}×{d}" for h, d in configs] + [f"{kd_config[0]}×{kd_config[1]}\nafter KD"]
    width = 0.8 / len(sources)
    for k, src in enumerate(sources):
        ys = [ex.mean([r["zero_shot"] for r in rows if r["config"] == [h, d] and r["source"] == src])
              for h, d in configs] + [ex.mean(kd_rows[src])]
        ax.bar([j + (k - (len(sources) - 1) / 2) * width for j in range(len(labels))], ys, width, label=src)
    ax.axhline(rows[0]["zero_shot"], color="k", lw=0.8, ls="--", label="unpruned")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("validation loss")
    lo = min(r.get("after_kd", r["zero_shot"]) for r in rows) - 0.2
    ax.set_ylim(bottom=max(0, lo))
    ax.set_title(f"{axis.head} score source (heads × head channels kept)")
    ax.legend(fontsize=7)
    s.write(rows, "\n".join(lines), {"configs": configs, "kd_config": kd_config}, fig)


if __name__ == "__main__":
    sys.exit(main())
