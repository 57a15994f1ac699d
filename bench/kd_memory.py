"""Peak memory of one KD step, chunked vs naive, as the vocabulary grows (CPU, peak RSS).

Each configuration runs in a fresh subprocess, which

1. imports torch and transformers and records its RSS (the baseline);
2. builds a tiny-hidden teacher and student with vocabulary V, and for training modes an AdamW;
3. runs one warm-up step (so the optimizer state exists, as in any step after the first);
4. resets the kernel's peak-RSS counter (`echo 5 > /proc/self/clear_refs`), runs one more step and
   reads `VmHWM`. The number reported is that peak minus the baseline.

glibc is told to serve large allocations with mmap (`MALLOC_MMAP_THRESHOLD_`), so that freed tensors
return to the OS and the peak is the step's own.

Modes:
- `kd_chunked`: one step of the real trainer (`Distiller.train_step`: teacher hidden states under
  no_grad, chunked KD loss, backward, clipping, AdamW);
- `kd_naive`: teacher `.logits` under no_grad, student `.logits`, `kd_loss_from_logits`, backward, AdamW;
- `student_ce`: the student's own training step as transformers does it (`model(ids, labels=ids)`, full
  logits), backward, AdamW;
- `student_chunked_ce`: the student's training step with the same chunked head (CE only): the least
  memory a student step can take;
- `teacher_weights` (computed, not measured): bytes of the teacher's parameters.

Target: kd_chunked ≤ 1.25 × (student step + teacher weights).

Usage: python bench/kd_memory.py [--vocabs 16384,32768,65536,131072] [--seq-len 2048] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MODES = ("student_ce", "student_chunked_ce", "kd_naive", "kd_chunked")


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def _build(hidden: int, vocab: int, seed: int):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(
        "nemotron_h", vocab_size=vocab, hidden_size=hidden,
        layers_block_type=["linear_attention", "mlp", "full_attention", "mlp"],
        mamba_num_heads=hidden // 16, mamba_head_dim=16, n_groups=2, ssm_state_size=16,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=2 * hidden,
        chunk_size=64, conv_kernel=4,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg)


def child(mode: str, vocab: int, seq_len: int, batch: int, chunk_size: int | None = None) -> dict:
    import torch

    torch.set_num_threads(2)
    import transformers  # noqa: F401  (part of the baseline)

    from hybridprune.distillation import DistillConfig, chunked_kd_loss, kd_loss_from_logits
    from hybridprune.distillation.trainer import Distiller, final_hidden, head_of

    base_kb = _rss_kb("VmRSS")
    teacher = _build(64, vocab, 0).eval().requires_grad_(False)
    student = _build(32, vocab, 1)
    teacher_bytes = sum(p.numel() * p.element_size() for p in teacher.parameters())
    student_bytes = sum(p.numel() * p.element_size() for p in student.parameters())
    ids = torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(0))

    if mode == "kd_chunked":
        cfg = DistillConfig(steps=10, global_batch=batch, micro_batch=batch, warmup=1, progress=False,
                            precision="fp32", check_heads=False, chunk_size=chunk_size)
        trainer = Distiller(teacher, student, ids, cfg)

        def step():
            trainer.train_step()
    else:
        if mode.startswith("student"):
            del teacher  # the student's own step holds no teacher
        opt = torch.optim.AdamW(student.parameters(), lr=1e-4)

        def step():
            if mode == "student_ce":
                loss = student(input_ids=ids, labels=ids).loss
            elif mode == "student_chunked_ce":
                h = final_hidden(student, ids, None)
                loss = chunked_kd_loss(h, head_of(student), None, None, None, ids, kd_weight=0.0,
                                       ce_weight=1.0, chunk_size=chunk_size).loss
            else:  # kd_naive
                with torch.no_grad():
                    t_logits = teacher(input_ids=ids).logits
                loss = kd_loss_from_logits(student(input_ids=ids).logits, t_logits)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

    step()  # warm-up: allocates the optimizer state
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before_kb = _rss_kb("VmRSS")
    t0 = time.perf_counter()
    step()
    dt = time.perf_counter() - t0
    peak_kb = _rss_kb("VmHWM")
    return {
        "mode": mode, "vocab": vocab, "seq_len": seq_len, "batch": batch,
        "peak_mb": (peak_kb - base_kb) / 1024, "before_step_mb": (before_kb - base_kb) / 1024,
        "teacher_weights_mb": teacher_bytes / 2**20, "student_weights_mb": student_bytes / 2**20,
        "step_s": dt, "chunk_size": chunk_size,
    }


def run(mode: str, vocab: int, seq_len: int, batch: int, chunk_size: int | None = None) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0",
               TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, __file__, "--child", mode, "--vocab", str(vocab), "--seq-len", str(seq_len),
           "--batch", str(batch)] + (["--chunk-size", str(chunk_size)] if chunk_size else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} V={vocab} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child")
    ap.add_argument("--vocab", type=int, default=131072)
    ap.add_argument("--vocabs", default="16384,32768,65536,131072")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--chunk-size", type=int, default=None, help="positions per logits chunk (default: automatic)")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.vocab, args.seq_len, args.batch, args.chunk_size)))
        return
    rows = []
    print(f"seq_len {args.seq_len}, batch {args.batch}; peak RSS of one step above the import baseline (MiB)")
    print(f"{'V':>7} {'mode':>19} {'peak MiB':>9} {'step s':>7}")
    for vocab in [int(v) for v in args.vocabs.split(",")]:
        for mode in args.modes.split(","):
            r = run(mode, vocab, args.seq_len, args.batch, args.chunk_size)
            rows.append(r)
            print(f"{vocab:>7} {mode:>19} {r['peak_mb']:>9.0f} {r['step_s']:>7.2f}", flush=True)
    print()
    by = {(r["vocab"], r["mode"]): r for r in rows}
    for vocab in sorted({r["vocab"] for r in rows}):
        kd = by.get((vocab, "kd_chunked"))
        if not kd:
            continue
        tw = kd["teacher_weights_mb"]
        for ref in ("student_chunked_ce", "student_ce"):
            if (vocab, ref) in by:
                denom = by[(vocab, ref)]["peak_mb"] + tw
                print(f"V={vocab}: kd_chunked / ({ref} + teacher weights {tw:.0f} MiB) = "
                      f"{kd['peak_mb']:.0f} / {denom:.0f} = {kd['peak_mb'] / denom:.2f}")
        if (vocab, "kd_naive") in by:
            print(f"V={vocab}: kd_naive / kd_chunked = {by[(vocab, 'kd_naive')]['peak_mb'] / kd['peak_mb']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
