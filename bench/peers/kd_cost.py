"""Distillation cost at equal work: hybridprune's distiller against TRL's GKDTrainer and NVIDIA ModelOpt.

"Distillation cost at equal work" of "Against the peers" (docs/benchmarks.md). The same random-weight Llama teacher and student, the same batch of
random tokens, the same optimizer and the same loss (forward KL on the logits at temperature 1) are
trained by three tools, with a large vocabulary (131,072, Nemotron-H's) and a small one (49,152,
SmolLM2's). For each (tool, vocabulary) the script reports

- tokens per second over N timed steps (after one warm-up step);
- peak memory of those N steps: growth of the resident set's high-water mark (`VmHWM`, reset with
  `echo 5 > /proc/self/clear_refs` after the warm-up step) over the resident set after the imports and
  the model build, as bench/kd_memory.py measures it (glibc serves large blocks with mmap,
  `MALLOC_MMAP_THRESHOLD_`, so freed tensors go back to the OS). The teacher's and student's weights
  are in the baseline; the optimizer state, the gradients, the activations and the logits are not;
- the KD loss after the warm-up step and the N steps, measured by this script, not by the tool: the
  mean over the positions of a held-out batch of KL(teacher || student), in fp32. Same seeds, same
  data in the same order and the same update rule, so the tools should land on (nearly) the same loss:
  a different loss means a different computation, not noise.

The tools:

- `hybridprune`: `hybridprune.distillation.trainer.Distiller.train_step` (teacher hidden states under
  no_grad, chunked KD loss that never holds the full `[B, T, V]` logits, backward, clipping, AdamW);
- `trl_gkd`: TRL's `GKDTrainer` (trl.experimental.gkd) with `lmbda=0` (no on-policy generation, so
  no extra forward passes) and `beta=0` (the generalized JSD is then the forward KL), via
  `trainer.train()`; the timings come from a `TrainerCallback`;
- `modelopt`: `modelopt.torch.distill.convert(student, [("kd_loss", ...)])` with a
  `LogitsDistillationLoss` on the `lm_head` outputs, then a plain torch loop: forward, `compute_kd_loss()`,
  backward, clipping, AdamW.

What is made equal: fp32 everywhere (TRL defaults to bf16 and to activation (gradient) checkpointing:
both off here); AdamW with the same lr, betas (0.9, 0.95), eps 1e-8 and no weight decay; a constant lr
(hybridprune: warmup 0 and min_lr = lr; TRL: `lr_scheduler_type="constant"`); gradient clipping at 1.0;
one micro-batch per step; the samples in order (TRL: `train_sampling_strategy="sequential"`); the
KD loss averaged over the positions (ModelOpt's loss is built with `reduction="none"` and averaged over
the positions: its default `"mean"` also divides by the vocabulary size, which would change what the
clipping does). What is not: TRL's GKD, like causal-LM losses, shifts by one and leaves out the last
position of each row (T-1 of T positions in the loss); hybridprune and ModelOpt use all T. Every tool
runs both models on all T positions, so the work differs only in that loss term.

Sizes: a Llama teacher of 4 layers and a student of 2, hidden 256, untied heads, random token ids
(uniform over the vocabulary, seeded), batch 2 x 256 tokens, one warm-up step then N = 4 timed steps,
lr 1e-3. At V = 131,072 the heads dominate: on one core a step takes ~3 s in hybridprune and ~7 s in
TRL, so a batch of 2 x 256 rather than 4 x 256 keeps the full run (3 repetitions) near 8 minutes. For
every tool the peak includes AdamW's two moments and the gradients (3 x the student's weights, in the
JSON as `student_weights_mb`), created in the warm-up step: that part is the same for all three.

TRL runs `GKDTrainer`, not `DistillationTrainer`: the latter only trains on completions it generates from
prompts (on-policy), which is other work than distilling on fixed token batches. TRL's figure includes
what the transformers `Trainer` does around each step (the dataloader, the callbacks, logging every step
so that the per-step loss is recorded). Throughput is timed under the same `MALLOC_MMAP_THRESHOLD_` as the
memory, so the page faults of freshly mapped blocks count for every tool (the JSON keeps each run's user
and kernel CPU seconds, which tell the arithmetic from the page faults). `--allocator default` leaves glibc's thresholds alone, for throughput as a
user sees it (its peaks are then not the steps' own: freed heap pages stay resident).

Measurement: `torch.set_num_threads(1)`; each (tool, vocabulary, repetition) in a fresh subprocess;
the repetitions alternate the tools (A B C A B C ...); the table gives medians. A tool that fails gets a
row with its error.

Run (from the repository root, in an environment with trl and nvidia-modelopt, see bench/peers/setup.sh):

    .venv-peers/bin/python bench/peers/kd_cost.py           # full: 3 repetitions, about 8 minutes on one core
    .venv-peers/bin/python bench/peers/kd_cost.py --smoke      # tiny sizes, 1 repetition, under a minute

Writes bench/results/peers_kd_cost.json (`--json` to change; `--smoke` writes nothing unless given).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from run_facts import code_commit, cpu_model, versions

TOOLS = ("hybridprune", "trl_gkd", "modelopt")
VOCABS = {"nemotron-h": 131_072, "smollm2": 49_152}
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_JSON = ROOT / "bench" / "results" / "peers_kd_cost.json"

FULL = dict(batch=2, seq_len=256, steps=4, repeats=3, hidden=256, teacher_layers=4, student_layers=2,
            intermediate=768, heads=4, kv_heads=2, lr=1e-3)
SMOKE = dict(FULL, batch=2, seq_len=32, steps=2, repeats=1, hidden=64, intermediate=128)

# AdamW and clipping, the same for every tool
BETAS = (0.9, 0.95)
EPS = 1e-8
WEIGHT_DECAY = 0.0
GRAD_CLIP = 1.0


# ------------------------------------------------------------------------------------------ child side


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


class PeakMeter:
    """Between `start()` and `stop()`: the resident-set high-water mark of this process (KiB, returned by
    `stop()`) and the CPU time spent in user and kernel mode (`cpu`; much kernel time: page faults of
    freshly mapped blocks; wall time well above user + kernel: the process waited for the core)."""

    def start(self) -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self._ru = resource.getrusage(resource.RUSAGE_SELF)

    def stop(self) -> int:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu = {"user_s": ru.ru_utime - self._ru.ru_utime, "sys_s": ru.ru_stime - self._ru.ru_stime}
        return _status_kb("VmHWM")


def build_models(s: dict, vocab: int):
    """Teacher and student: random-weight Llama models from a config, the same for every tool (seeded)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    def build(layers: int, seed: int):
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=s["hidden"], intermediate_size=s["intermediate"],
                          num_hidden_layers=layers, num_attention_heads=s["heads"],
                          num_key_value_heads=s["kv_heads"], max_position_embeddings=s["seq_len"],
                          tie_word_embeddings=False)
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)

    teacher = build(s["teacher_layers"], 0).eval().requires_grad_(False)
    student = build(s["student_layers"], 1).train()
    return teacher, student


def make_data(s: dict, vocab: int):
    """Training rows (warm-up step + N steps, `batch` rows each, in order) and one held-out batch."""
    import torch

    g = torch.Generator().manual_seed(1234)
    train = torch.randint(0, vocab, ((1 + s["steps"]) * s["batch"], s["seq_len"]), generator=g)
    held_out = torch.randint(0, vocab, (s["batch"], s["seq_len"]), generator=g)
    return train, held_out


def kd_eval(teacher, student, ids) -> float:
    """Mean over all positions of KL(teacher || student) at temperature 1, fp32, one row at a time."""
    import torch
    import torch.nn.functional as F

    was_training = student.training
    student.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for row in ids:
            row = row[None]
            lt = F.log_softmax(teacher(input_ids=row).logits.float(), -1)
            ls = F.log_softmax(student(input_ids=row).logits.float(), -1)
            total += float((lt.exp() * (lt - ls)).sum())
            n += row.numel()
    student.train(was_training)
    return total / n


def checksum(model) -> float:
    import torch

    with torch.no_grad():
        return float(sum(p.double().abs().sum() for p in model.parameters()))


def run_hybridprune(s, teacher, student, train, meter):
    from hybridprune.distillation import DistillConfig
    from hybridprune.distillation.trainer import Distiller

    cfg = DistillConfig(steps=1 + s["steps"], global_batch=s["batch"], micro_batch=s["batch"], lr=s["lr"],
                        min_lr=s["lr"], warmup=0, weight_decay=WEIGHT_DECAY, betas=BETAS, eps=EPS,
                        grad_clip=GRAD_CLIP, temperature=1.0, kd_loss="forward", kd_weight=1.0, ce_weight=0.0,
                        precision="fp32", parallel="none", device="cpu", shuffle=False, progress=False,
                        check_heads=False, export=False, plot=False)
    trainer = Distiller(teacher, student, train, cfg)
    losses = [trainer.train_step()["loss"]]  # warm-up: the optimizer state exists from here on
    meter.start()
    t0 = time.perf_counter()
    for _ in range(s["steps"]):
        losses.append(trainer.train_step()["loss"])
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "peak_kb": meter.stop(), "train_losses": losses}


def run_trl_gkd(s, teacher, student, train, meter, tokenizer):
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    class Clock(TrainerCallback):
        """Starts the meter and the clock after the warm-up step, stops them after the last step."""

        def __init__(self):
            self.t_warm = self.t_end = None
            self.peak = None

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 1:
                meter.start()
                self.t_warm = time.perf_counter()
            elif state.global_step == 1 + s["steps"]:
                self.t_end = time.perf_counter()
                self.peak = meter.stop()

    def collate(rows):
        ids = torch.tensor([r["input_ids"] for r in rows], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        args = GKDConfig(
            output_dir=out, max_steps=1 + s["steps"], per_device_train_batch_size=s["batch"],
            gradient_accumulation_steps=1, learning_rate=s["lr"], lr_scheduler_type="constant", warmup_steps=0,
            weight_decay=WEIGHT_DECAY, adam_beta1=BETAS[0], adam_beta2=BETAS[1], adam_epsilon=EPS,
            optim="adamw_torch", max_grad_norm=GRAD_CLIP,
            lmbda=0.0, beta=0.0, seq_kd=False,  # off-policy only, forward KL
            bf16=False, fp16=False, activation_checkpointing=False,  # TRL's defaults: bf16, checkpointing on
            use_cpu=True, train_sampling_strategy="sequential", dataloader_num_workers=0,
            dataloader_pin_memory=False, max_length=None, report_to="none", save_strategy="no",
            eval_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
        )
        data = Dataset.from_dict({"input_ids": train.tolist()})
        trainer = GKDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data,
                             data_collator=collate, processing_class=tokenizer, callbacks=[clock])
        trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    checks = {"bf16": trainer.args.bf16, "activation_checkpointing": bool(student.is_activation_checkpointing),
              "optimizer": type(getattr(trainer.optimizer, "optimizer", trainer.optimizer)).__name__,  # unwrapped
              "lr_scheduler": type(trainer.lr_scheduler).__name__}
    return {"wall_s": clock.t_end - clock.t_warm, "peak_kb": clock.peak, "train_losses": losses, "checks": checks}


def run_modelopt(s, teacher, student, train, meter):
    import torch
    import modelopt.torch.distill as mtd

    kd_cfg = {"teacher_model": teacher,
              # the lm_head outputs are the logits; "none" + our own mean: the KL per position, averaged
              "criterion": {("lm_head", "lm_head"): mtd.LogitsDistillationLoss(temperature=1.0, reduction="none")},
              "loss_balancer": None}
    model = mtd.convert(student, mode=[("kd_loss", kd_cfg)])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s["lr"], betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    model.train()
    B = s["batch"]

    def step(i):
        ids = train[i * B:(i + 1) * B]
        model(input_ids=ids)
        loss = model.compute_kd_loss(loss_reduction_fn=lambda per_pos: per_pos.mean())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    losses = [step(0)]
    meter.start()
    t0 = time.perf_counter()
    for i in range(1, 1 + s["steps"]):
        losses.append(step(i))
    wall = time.perf_counter() - t0
    peak = meter.stop()
    mtd.export(model)  # the student alone again (hooks removed), for the evaluation after the run
    return {"wall_s": wall, "peak_kb": peak, "train_losses": losses}


def child(tool: str, vocab: int, s: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    import transformers  # noqa: F401  (part of the baseline, as is the tool's own package)

    extra = ()
    if tool == "hybridprune":
        import hybridprune.distillation.trainer  # noqa: F401
    elif tool == "trl_gkd":
        import datasets  # noqa: F401
        from transformers import AutoTokenizer
        import trl.experimental.gkd  # noqa: F401

        from hybridprune.data.assets import tokenizer_path

        # TRL's trainers need a processing class (pad id, generation config); the shipped tokenizer serves,
        # only its pad and eos ids are read: the data is already token ids
        extra = (AutoTokenizer.from_pretrained(tokenizer_path()),)
    elif tool == "modelopt":
        import modelopt.torch.distill  # noqa: F401
    else:
        raise ValueError(tool)

    teacher, student = build_models(s, vocab)
    train, held_out = make_data(s, vocab)
    mb = lambda m: sum(p.numel() * p.element_size() for p in m.parameters()) / 2**20  # noqa: E731
    student_sum0 = checksum(student)
    kd_before = kd_eval(teacher, student, held_out)
    base_kb = _status_kb("VmRSS")

    meter = PeakMeter()
    runner = {"hybridprune": run_hybridprune, "trl_gkd": run_trl_gkd, "modelopt": run_modelopt}[tool]
    r = runner(s, teacher, student, train, meter, *extra)

    kd_after = kd_eval(teacher, student, held_out)
    tokens = s["steps"] * s["batch"] * s["seq_len"]
    return {
        "tool": tool, "vocab": vocab, "tokens_per_s": tokens / r["wall_s"], "wall_s": r["wall_s"],
        "peak_mb": (r["peak_kb"] - base_kb) / 1024, "baseline_rss_mb": base_kb / 1024,
        "teacher_weights_mb": mb(teacher), "student_weights_mb": mb(student), "cpu": meter.cpu,
        "kd_before": kd_before, "kd_after": kd_after, "train_losses": r["train_losses"],
        "student_init_checksum": student_sum0,
        "threads": torch.get_num_threads(), "checks": r.get("checks", {}),
    }


# ----------------------------------------------------------------------------------------- parent side


def run_one(tool: str, vocab: int, s: dict, timeout: float) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TRL_EXPERIMENTAL_SILENCE="1", TOKENIZERS_PARALLELISM="false")
    if s["allocator"] == "mmap":  # as bench/kd_memory.py: freed blocks go back to the OS, the peak is the step's
        env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    else:  # glibc as it comes: throughput as a user would see it; the peak then also holds freed heap pages
        for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
            env.pop(k, None)
    cmd = [sys.executable, __file__, "--child", tool, "--vocab", str(vocab), "--settings", json.dumps(s)]
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "vocab": vocab, "error": f"timed out after {timeout:.0f} s"}
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    try:
        r = json.loads(last)
    except json.JSONDecodeError:
        tail = out.stderr.strip().splitlines()[-6:] or [f"exit status {out.returncode}"]
        if out.returncode < 0:
            tail.append(f"killed by signal {-out.returncode} (out of memory?)")
        r = {"tool": tool, "vocab": vocab, "error": " | ".join(tail)}
    r["process_s"] = time.perf_counter() - t0
    r["messages"] = messages(out.stderr)
    return r


def messages(stderr: str) -> list[str]:
    """The distinct warning lines a child printed (e.g. ModelOpt's about Megatron or transformers)."""
    seen = []
    for line in stderr.splitlines():
        line = line.strip()
        if line and not line.startswith(("File ", "Traceback", "^")) and line not in seen:
            seen.append(line)
    return seen[:20]


def summarise(runs: list[dict], tools, vocabs) -> list[dict]:
    rows = []
    for vocab in vocabs:
        for tool in tools:
            mine = [r for r in runs if r["tool"] == tool and r["vocab"] == vocab]
            ok = [r for r in mine if "error" not in r]
            if not ok:
                err = mine[0]["error"] if mine else "not run"
                rows.append({"tool": tool, "vocab": vocab, "error": err})
                continue
            med = lambda k: statistics.median(r[k] for r in ok)  # noqa: E731
            rows.append({"tool": tool, "vocab": vocab, "runs": len(ok), "failed_runs": len(mine) - len(ok),
                         "tokens_per_s": med("tokens_per_s"), "peak_mb": med("peak_mb"),
                         "kd_before": med("kd_before"),
                         "kd_after": med("kd_after"), "train_loss_last": med_last(ok)})
    for row in rows:  # ratios against hybridprune at the same vocabulary
        ref = next((r for r in rows if r["tool"] == "hybridprune" and r["vocab"] == row["vocab"]
                    and "error" not in r), None)
        if ref and "error" not in row:
            row["speed_vs_hybridprune"] = row["tokens_per_s"] / ref["tokens_per_s"]
            row["memory_vs_hybridprune"] = row["peak_mb"] / ref["peak_mb"]
    return rows


def med_last(runs: list[dict]) -> float | None:
    last = [r["train_losses"][-1] for r in runs if r.get("train_losses")]
    return statistics.median(last) if last else None


def table(rows: list[dict], s: dict) -> str:
    head = (f"| tool | vocab | tokens/s | peak MiB | KD loss after {s['steps']} steps | tokens/s vs hybridprune "
            f"| peak vs hybridprune |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['tool']} | {r['vocab']:,} | failed: {r['error'][-300:]} | | | | |")
            continue
        ratio = lambda k: f"{r[k]:.2f}" if k in r else "-"  # noqa: E731  (no hybridprune row to compare with)
        lines.append(f"| {r['tool']} | {r['vocab']:,} | {r['tokens_per_s']:,.0f} | {r['peak_mb']:,.0f} | "
                     f"{r['kd_after']:.4f} | {ratio('speed_vs_hybridprune')} | {ratio('memory_vs_hybridprune')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repetition")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--vocabs", help="comma-separated (default 131072,49152)")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--steps", type=int, help="timed steps after the warm-up step")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq-len", type=int)
    ap.add_argument("--allocator", choices=("mmap", "default"), default="mmap",
                    help="mmap (default): glibc maps every block over 64 KiB and returns it when freed, so the "
                         "peak is the step's own (bench/kd_memory.py); default: glibc's own thresholds, "
                         "for throughput as a user sees it (the peak is then not comparable)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per child process")
    ap.add_argument("--json", help=f"output (default {DEFAULT_JSON.relative_to(ROOT)}; none with --smoke)")
    ap.add_argument("--note", default="", help="free text stored in the JSON (e.g. the machine's conditions)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--settings", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        s = json.loads(args.settings)
        try:
            r = child(args.child, args.vocab, s)
        except Exception as e:  # a tool that cannot run gets a row with its error
            traceback.print_exc()
            r = {"tool": args.child, "vocab": args.vocab, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(r))
        return

    s = dict(SMOKE if args.smoke else FULL)
    vocabs_s = args.vocabs or ",".join(str(v) for v in VOCABS.values())
    s["allocator"] = args.allocator
    for k in ("repeats", "steps", "batch", "seq_len"):
        if getattr(args, k) is not None:
            s[k] = getattr(args, k)
    vocabs = [int(v) for v in vocabs_s.split(",")]
    tools = args.tools.split(",")
    print(f"{len(tools)} tools x {len(vocabs)} vocabularies x {s['repeats']} repetitions; batch {s['batch']} x "
          f"{s['seq_len']} tokens, {s['steps']} timed steps after 1 warm-up, 1 thread", flush=True)

    runs, t_start = [], time.time()
    for rep in range(s["repeats"]):
        for vocab in vocabs:
            for tool in tools:  # alternating: A B C A B C ...
                r = run_one(tool, vocab, s, args.timeout)
                r["repeat"] = rep
                runs.append(r)
                if "error" in r:
                    print(f"  rep {rep} V={vocab} {tool}: FAILED {r['error'][-400:]}", flush=True)
                else:
                    print(f"  rep {rep} V={vocab} {tool}: {r['tokens_per_s']:,.0f} tok/s, peak {r['peak_mb']:,.0f} "
                          f"MiB, KD {r['kd_before']:.4f} -> {r['kd_after']:.4f} ({r['process_s']:.0f} s)", flush=True)

    rows = summarise(runs, tools, vocabs)
    print()
    print(table(rows, s))
    out = args.json or (None if args.smoke else str(DEFAULT_JSON))
    if out:
        result = {
            "what": __doc__.splitlines()[0], "versions": versions("torch", "transformers", "trl", "nvidia-modelopt", "datasets", "accelerate", "hybridprune"), "settings": s, "tools": tools,
            "vocabs": vocabs, "optimizer": {"name": "AdamW", "lr": s["lr"], "betas": BETAS, "eps": EPS,
                                            "weight_decay": WEIGHT_DECAY, "grad_clip": GRAD_CLIP,
                                            "schedule": "constant"},
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "note": args.note},
            "code_commit": code_commit(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t_start)),
            "total_s": time.time() - t_start, "medians": rows, "runs": runs,
        }
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
