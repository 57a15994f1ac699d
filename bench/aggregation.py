"""Experiment 6 (Minitron Table 11): how to aggregate activations into importance, and how many
calibration samples the ranking needs.

Aggregations (sequence first, then batch), applied to every scored activation (Mamba x, FFN
down-projection input, o_proj input, every pre-norm output for the hidden channels):

- L2 / mean: mean |a| over the sequence, L2 over samples (Minitron's choice and hybridprune's);
- mean / mean: mean |a| over the sequence, mean over samples;
- L2 / L2: L2 over the sequence, L2 over samples;
- max / max: max |a| over the sequence, max over samples.

They are swapped into `hybridprune.calibrate` for the run only (the library has one aggregation);
everything else (hooks, selection, plan, KD) is the same. The architecture is the half-size plan of
bench/scratch_vs_kd.py. Then, with hybridprune's aggregation, the number of calibration samples
(windows of 128 tokens of the `train` split): the Spearman rank correlation of the scores from
8, 32 and 128 samples (3 draws each) with those from 1024 samples, per axis, and the zero-shot loss
of the pruned model; a second, disjoint draw of 1024 gives the noise floor.

    .venv/bin/python bench/aggregation.py [--seeds 3] [--kd-steps 40] [--smoke]
"""

from __future__ import annotations

import contextlib
import importlib
import sys

import torch

import experiment as ex
import hybridprune as hp
from scratch_vs_kd import PLAN, SMOKE_PLAN

CAL = importlib.import_module("hybridprune.importance.calibrate")
AGGREGATIONS = ("L2 / mean", "mean / mean", "L2 / L2", "max / max")
COUNTS = (8, 32, 128, 1024)


def _seq(kind: str, a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    a = a.detach().abs().float()
    m = mask.to(a.dtype).unsqueeze(-1)
    if kind == "mean":
        return (a * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
    if kind == "L2":
        return (a.pow(2) * m).sum(dim=1).sqrt()
    return (a * m).amax(dim=1)


@contextlib.contextmanager
def aggregation(name: str):
    """Make `hybridprune.calibrate` aggregate with `name` (batch / sequence). The library takes the square
    root of what it accumulated, so the batch aggregate is stored squared."""
    batch, seq = name.split(" / ")
    original = CAL._Accumulator.add

    def add(self, key, activation):
        a = _seq(seq, activation, self.mask).double()
        state = self.__dict__.setdefault("_agg", {})
        if batch == "L2":
            state[key] = state.get(key, 0) + a.pow(2).sum(dim=0)
            self.sumsq[key] = state[key]
        elif batch == "mean":
            s, n = state.get(key, (0, 0))
            state[key] = (s + a.sum(dim=0), n + a.shape[0])
            self.sumsq[key] = (state[key][0] / state[key][1]).pow(2)
        else:
            m = a.amax(dim=0)
            state[key] = torch.maximum(state[key], m) if key in state else m
            self.sumsq[key] = state[key].pow(2)

    CAL._Accumulator.add = add if name != "L2 / mean" else original
    try:
        yield
    finally:
        CAL._Accumulator.add = original


def axis_vectors(scores) -> dict[str, list[torch.Tensor]]:
    """The ranked quantities per axis: hidden channels, FFN neurons, Mamba heads (L2 over channels), attention heads."""
    return {"hidden": [scores.hidden],
            "ffn": list(scores.ffn.values()),
            "mamba heads": [v.double().norm(dim=1) for v in scores.mamba.values()],
            "attention heads": [v.double().norm(dim=1) for v in scores.attention.values()]}


def rank_corr(a, b) -> dict[str, float]:
    va, vb = axis_vectors(a), axis_vectors(b)
    return {k: ex.mean([ex.spearman(x, y) for x, y in zip(va[k], vb[k])]) for k in va}


def main(argv=None) -> None:
    args = ex.parser(__doc__).parse_args(argv)
    s = ex.setup(args, "aggregation")
    t = s.teacher
    plan = SMOKE_PLAN if s.smoke else PLAN
    rows = [{"part": "aggregation", "arm": "teacher", "seed": None, "zero_shot": s.loss(t)}]
    for seed in s.seeds:
        calib = s.calib(seed)
        for name in AGGREGATIONS:
            with aggregation(name):
                scores = hp.calibrate(t, calib, batch_size=8, progress=False)
            pruned = hp.prune(t, scores, plan)
            row = {"part": "aggregation", "arm": name, "seed": seed, "zero_shot": s.loss(pruned),
                   "after_kd": None}
            row["after_kd"] = s.loss(s.kd(pruned, seed))
            rows.append(row)
            print(row, flush=True)

    counts = sorted({min(c, 16) for c in COUNTS}) if s.smoke else list(COUNTS)
    ref_n = counts[-1]

    def calib_n(n, seed):
        return s.calib(seed, num_samples=n, split="train")

    reference = hp.calibrate(t, calib_n(ref_n, 0), batch_size=8, progress=False)
    second = hp.calibrate(t, calib_n(ref_n, 1), batch_size=8, progress=False)
    rows.append({"part": "samples", "n": ref_n, "seed": 1, "rho": rank_corr(second, reference),
                 "zero_shot": s.loss(hp.prune(t, second, plan))})
    rows.append({"part": "samples", "n": ref_n, "seed": 0, "rho": None, "zero_shot": s.loss(hp.prune(t, reference, plan))})
    for n in counts[:-1]:
        for seed in s.seeds:
            sc = hp.calibrate(t, calib_n(n, 10 + seed), batch_size=8, progress=False)
            rows.append({"part": "samples", "n": n, "seed": 10 + seed, "rho": rank_corr(sc, reference),
                         "zero_shot": s.loss(hp.prune(t, sc, plan))})
            print(rows[-1], flush=True)

    lines = [f"Pruned to `{plan}`.", "", "| aggregation (batch / sequence) | zero-shot val loss | after KD |",
             "|---|---|---|", f"| teacher | {rows[0]['zero_shot']:.3f} | |"]
    for name in AGGREGATIONS:
        rs = [r for r in rows if r.get("arm") == name]
        lines.append(f"| {name}{' (hybridprune)' if name == 'L2 / mean' else ''} | "
                     f"{ex.spread([r['zero_shot'] for r in rs])} | {ex.spread([r['after_kd'] for r in rs])} |")
    axes = list(axis_vectors(reference))
    lines += ["", f"Calibration samples (windows of {ex.CALIB['seq_len']} tokens): Spearman ρ of the scores with "
              f"those from {ref_n} samples (mean over draws and layers; min over draws in brackets), and the "
              "zero-shot loss of the pruned model:", "",
              "| samples | " + " | ".join(f"ρ {a}" for a in axes) + " | zero-shot val loss |",
              "|---|" + "---|" * (len(axes) + 1)]
    for n in counts:
        rs = [r for r in rows if r["part"] == "samples" and r["n"] == n and r["rho"] is not None]
        label = f"{n} (another {n})" if n == ref_n else str(n)
        cells = [f"{ex.mean([r['rho'][a] for r in rs]):.3f} ({min(r['rho'][a] for r in rs):.3f})" for a in axes]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ex.spread([r['zero_shot'] for r in rs])} |")
    ref_row = next(r for r in rows if r["part"] == "samples" and r["rho"] is None)
    lines.append(f"| {ref_n} (the reference) | " + " | ".join("1" for _ in axes) + f" | {ref_row['zero_shot']:.3f} |")

    fig, (a0, a1) = ex.figure(2)
    for k, key in enumerate(("zero_shot", "after_kd")):
        ys = [ex.mean([r[key] for r in rows if r.get("arm") == n]) for n in AGGREGATIONS]
        a0.bar([j + (k - 0.5) * 0.35 for j in range(len(AGGREGATIONS))], ys, 0.35,
               label="zero-shot" if key == "zero_shot" else f"after {s.kd_steps}-step KD")
    a0.set_xticks(range(len(AGGREGATIONS)), AGGREGATIONS, fontsize=8)
    a0.set_yscale("log")
    a0.set_ylabel("validation loss (log scale)")
    a0.legend(fontsize=8)
    for a in axes:
        xs = counts[:-1]
        a1.plot(xs, [ex.mean([r["rho"][a] for r in rows if r["part"] == "samples" and r["n"] == n and r["rho"]])
                     for n in xs], marker="o", label=a)
    a1.set_xscale("log")
    a1.set_xlabel("calibration samples")
    a1.set_ylabel(f"Spearman ρ vs {ref_n} samples")
    a1.legend(fontsize=8)
    s.write(rows, "\n".join(lines), {"plan": plan, "counts": counts}, fig)


if __name__ == "__main__":
    sys.exit(main())
