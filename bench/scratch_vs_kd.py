"""Experiment 5: pruned + KD vs the same architecture trained from random initialisation.

The paper's headline ("40x fewer tokens") compares distilling a pruned model with pretraining. Here one
architecture of about half the teacher's non-embedding parameters (`--plan`) is:

- pruned from the teacher and distilled with the short KD every experiment uses (N tokens);
- pruned and distilled with 10 N tokens (one seed), to see how far KD itself still climbs;
- trained from random initialisation with cross-entropy on the same `train` split, with N tokens,
  10 N tokens and the teacher's whole training budget (the tokens `scripts/train_tiny_teacher.py`
  used, read from the teacher's training log), using the teacher's own recipe (AdamW 0.9/0.95, weight
  decay 0.1, peak LR 2e-3 with warmup, cosine to 1e-4, clipping 1.0, batch 8).

The longest scratch run logs its validation loss as it goes, so the table says where (if anywhere)
scratch reaches the N-token KD student.

    .venv/bin/python bench/scratch_vs_kd.py [--seeds 3] [--kd-steps 40] [--smoke]
"""

from __future__ import annotations

import json
import math
import sys

import torch

import experiment as ex
import hybridprune as hp
from hybridprune.data.assets import TEACHER_DIR

PLAN = "hidden_size=192,ffn_hidden_size=512,mamba_num_heads=8"
SMOKE_PLAN = "hidden_size=32,ffn_hidden_size=32,mamba_num_heads=4"


def teacher_tokens() -> int:
    log = [json.loads(line) for line in (TEACHER_DIR / "training_log.jsonl").read_text().splitlines() if line.strip()]
    return max(r["tokens"] for r in log if "tokens" in r)


def train_scratch(s, config, seed: int, steps: int, evals: list[int] = ()) -> tuple[torch.nn.Module, list[dict]]:
    """Cross-entropy training from random init with the teacher's recipe; returns the model and its curve."""
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).float().train()
    data = s.train(seed, 8 * steps)
    ids = data if isinstance(data, torch.Tensor) else data.input_ids
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=2e-3, betas=(0.9, 0.95), eps=1e-8)
    warmup = max(1, min(50, steps // 10))
    curve = []
    for step in range(steps):
        lr = 2e-3 * (step + 1) / warmup if step < warmup else \
            1e-4 + 0.5 * (2e-3 - 1e-4) * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        for group in opt.param_groups:
            group["lr"] = lr
        batch = ids[(8 * step) % ids.shape[0]:][:8]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step + 1 in evals:
            model.eval()
            curve.append({"step": step + 1, "tokens": (step + 1) * int(batch.numel()), "val_loss": s.loss(model)})
            model.train()
            print(curve[-1], flush=True)
    return model.eval(), curve


def main(argv=None) -> None:
    ap = ex.parser(__doc__)
    ap.add_argument("--plan", default=None, help=f"the architecture, as a pruning plan (default {PLAN})")
    ap.add_argument("--no-full", action="store_true", help="skip the scratch run with the teacher's whole budget")
    args = ap.parse_args(argv)
    s = ex.setup(args, "scratch_vs_kd")
    t = s.teacher
    args.plan = args.plan or (SMOKE_PLAN if s.smoke else PLAN)
    n_steps = s.kd_steps
    tokens_per_step = 8 * (16 if s.smoke else ex.TRAIN_SEQ)
    full_steps = 4 * n_steps if s.smoke else math.ceil(teacher_tokens() / tokens_per_step)
    rows = [{"arm": "teacher", "seed": None, "tokens": teacher_tokens() if not s.smoke else None,
             "val_loss": s.loss(t), "params": s.params(t)}]
    config = None
    for seed in s.seeds:
        scores = hp.calibrate(t, s.calib(seed), batch_size=8, progress=False)
        pruned = hp.prune(t, scores, args.plan)
        config = pruned.config
        rows.append({"arm": "pruned, zero-shot", "seed": seed, "tokens": 0, "val_loss": s.loss(pruned),
                     "params": s.params(pruned)})
        rows.append({"arm": "pruned + KD", "seed": seed, "tokens": n_steps * tokens_per_step,
                     "val_loss": s.loss(s.kd(pruned, seed))})
        if seed == s.seeds[0]:
            rows.append({"arm": "pruned + KD", "seed": seed, "tokens": 10 * n_steps * tokens_per_step,
                         "val_loss": s.loss(s.kd(hp.prune(t, scores, args.plan), seed, steps=10 * n_steps))})
        for mult in (1, 10):
            model, _ = train_scratch(s, config, seed, mult * n_steps)
            rows.append({"arm": "scratch", "seed": seed, "tokens": mult * n_steps * tokens_per_step,
                         "val_loss": s.loss(model)})
        print(rows[-5:], flush=True)
    curve = []
    if not args.no_full:
        evals = sorted({full_steps * k // 8 for k in range(1, 9)} | {n_steps, 10 * n_steps} - {0})
        model, curve = train_scratch(s, config, s.seeds[0], full_steps, evals)
        rows.append({"arm": "scratch", "seed": s.seeds[0], "tokens": full_steps * tokens_per_step,
                     "val_loss": curve[-1]["val_loss"], "curve": curve})

    kd_n = [r["val_loss"] for r in rows if r["arm"] == "pruned + KD" and r["tokens"] == n_steps * tokens_per_step]
    lines = ["| arm | training tokens | val loss |", "|---|---|---|",
             f"| teacher ({rows[0]['params']['total']:,} params) | {format(rows[0]['tokens'] or 0, ',')} | {rows[0]['val_loss']:.3f} |"]
    for arm in ("pruned, zero-shot", "pruned + KD", "scratch"):
        for tok in sorted({r["tokens"] for r in rows if r["arm"] == arm}):
            vals = [r["val_loss"] for r in rows if r["arm"] == arm and r["tokens"] == tok]
            lines.append(f"| {arm} | {tok:,} ({tok / (n_steps * tokens_per_step):.0f} N) | {ex.spread(vals)} |")
    caught = next((c for c in curve if c["val_loss"] <= ex.mean(kd_n)), None)
    lines += ["", f"N = {n_steps * tokens_per_step:,} tokens ({n_steps} steps × 8 × {tokens_per_step // 8}). "
              f"Architecture: `{args.plan}`, {rows[1]['params']['non_embedding']:,} non-embedding parameters "
              f"({rows[1]['params']['non_embedding'] / rows[0]['params']['non_embedding']:.0%} of the teacher's)."]
    if curve:
        lines += ["", "Scratch learning curve (one run with the teacher's budget; cosine over the whole run): " +
                  ", ".join(f"{c['tokens']:,} tokens → {c['val_loss']:.3f}" for c in curve),
                  "", (f"Scratch reaches the N-token KD student's mean loss ({ex.mean(kd_n):.3f}) after "
                       f"{caught['tokens']:,} tokens ({caught['tokens'] / (n_steps * tokens_per_step):.0f}× N)."
                       if caught else f"Scratch never reaches the N-token KD student's mean loss ({ex.mean(kd_n):.3f}) "
                       f"within the teacher's whole budget ({full_steps * tokens_per_step:,} tokens, "
                       f"{full_steps * tokens_per_step / (n_steps * tokens_per_step):.0f}× N).")]

    fig, (ax,) = ex.figure(1, 6)
    for arm, marker in (("pruned + KD", "o"), ("scratch", "s")):
        pts = [(r["tokens"], r["val_loss"]) for r in rows if r["arm"] == arm and "curve" not in r]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=arm)
    if curve:
        ax.plot([c["tokens"] for c in curve], [c["val_loss"] for c in curve], color="C1", lw=1,
                label="scratch, teacher's budget (curve)")
    ax.axhline(rows[0]["val_loss"], color="k", lw=0.8, ls="--", label="teacher")
    ax.set_xscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation loss")
    ax.legend(fontsize=8)
    s.write(rows, "\n".join(lines), {"plan": args.plan, "n_tokens": n_steps * tokens_per_step,
                                     "full_steps": full_steps}, fig)


if __name__ == "__main__":
    sys.exit(main())
