"""KD step throughput against the ideal 1 / (teacher forward + student train step).

The ideal assumes distillation costs nothing beyond running the teacher forward (with its logits) and
training the student as usual (forward with its own cross-entropy, backward, AdamW). In each
repetition, in one process and interleaved call by call so that they share the machine's conditions, the
script times

- the teacher's forward, `teacher(input_ids).logits` under no_grad;
- the student's ordinary train step, `student(input_ids, labels=input_ids).loss.backward()`, gradient
  clipping, `AdamW.step()`;
- one step of the real trainer, `Distiller.train_step()` (teacher hidden states, chunked KD loss,
  backward, clipping, AdamW), on the same batch size;

each as the median of `--inner` calls after a warm-up, and reports
`efficiency = (t_teacher + t_student) / t_kd` per repetition and its median (target >= 0.9).

Models: the 21.6M-parameter teacher and the 4.3M student of research/hf-layouts.md §1.8 (NemotronH),
the student with the teacher's vocabulary of 8192 (6.4M parameters), batch 8 x 256 tokens, fp32, on the CPU, one thread by default.

Usage: python bench/kd_throughput.py [--reps 5] [--inner 3] [--batch 8] [--seq-len 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build(kind: str, vocab: int):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if kind == "teacher":  # 21.6M
        kw = dict(hidden_size=512, hybrid_override_pattern="M-M*M-M-M*M-", mamba_num_heads=16, mamba_head_dim=32,
                  n_groups=4, ssm_state_size=32, num_attention_heads=8, num_key_value_heads=2, head_dim=64,
                  intermediate_size=1536)
    else:  # 4.3M
        kw = dict(hidden_size=256, hybrid_override_pattern="M-M*M-M-", mamba_num_heads=8, mamba_head_dim=32,
                  n_groups=2, ssm_state_size=16, num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                  intermediate_size=768)
    cfg = AutoConfig.for_model("nemotron_h", vocab_size=vocab, chunk_size=64, conv_kernel=4, **kw)
    torch.manual_seed(0 if kind == "teacher" else 1)
    return AutoModelForCausalLM.from_config(cfg)


def median_time(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--inner", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 by default: on a shared 2-core machine, 2 OpenMP threads are "
                         "descheduled in turn and the times swing by 3x)")
    ap.add_argument("--json")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from hybridprune.distillation import DistillConfig
    from hybridprune.distillation.trainer import Distiller

    teacher = build("teacher", args.vocab).eval().requires_grad_(False)
    student_kd = build("student", args.vocab)
    student_ce = build("student", args.vocab)
    n = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    print(f"teacher {n(teacher):.1f}M params, student {n(student_ce):.1f}M, batch {args.batch} x {args.seq_len}, "
          f"{torch.get_num_threads()} threads")

    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, args.vocab, (args.batch * 4, args.seq_len), generator=g)
    ids = data[: args.batch]
    cfg = DistillConfig(steps=10_000, global_batch=args.batch, micro_batch=args.batch, warmup=10, progress=False,
                        precision="fp32")
    trainer = Distiller(teacher, student_kd, data, cfg)
    opt = torch.optim.AdamW(student_ce.parameters(), lr=1e-4, weight_decay=0.1)

    @torch.no_grad()
    def teacher_forward():
        teacher(input_ids=ids).logits

    def student_step():
        student_ce(input_ids=ids, labels=ids).loss.backward()
        torch.nn.utils.clip_grad_norm_(student_ce.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def kd_step():
        trainer.train_step()

    for fn in (teacher_forward, student_step, kd_step):  # warm-up
        fn()
    rows = []
    for rep in range(args.reps):
        times = {teacher_forward: [], student_step: [], kd_step: []}
        for _ in range(args.inner):  # interleaved call by call: the three share the machine's conditions
            for fn, acc in times.items():
                acc.append(median_time(fn, 1))
        t_t, t_s, t_kd = (statistics.median(v) for v in times.values())
        eff = (t_t + t_s) / t_kd
        tok = args.batch * args.seq_len
        rows.append({"rep": rep, "teacher_fwd_s": t_t, "student_step_s": t_s, "kd_step_s": t_kd, "efficiency": eff,
                     "kd_tokens_per_s": tok / t_kd, "ideal_tokens_per_s": tok / (t_t + t_s)})
        print(f"rep {rep}: teacher fwd {t_t:.3f} s, student step {t_s:.3f} s, KD step {t_kd:.3f} s -> "
              f"{tok / t_kd:,.0f} tok/s vs ideal {tok / (t_t + t_s):,.0f} tok/s, efficiency {eff:.3f}", flush=True)
    med = statistics.median(r["efficiency"] for r in rows)
    print(f"median efficiency over {args.reps} repetitions: {med:.3f} (target >= 0.9)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "median_efficiency": med}, f, indent=2)


if __name__ == "__main__":
    main()
