"""Which experts to keep? Zero-shot validation loss of a small trained MoE hybrid after removing 25 %
and 50 % of its routed experts, chosen four ways, everything else unchanged:

- output norm: the mean L2 norm of each expert's output over the tokens routed to it (Minitron);
- router-weighted: that norm weighted by the token's gate value (REAP, Lasby et al. 2025);
- frequency: the share of routed tokens the expert receives;
- random: the same per-group counts, experts drawn at random (several seeds; mean and range).

The model is a Nemotron-H with MoE blocks (`M E * E M E`: 16 experts of 64, top-2, a small shared
expert of 16, Nemotron 3 Nano's routed scaling factor 2.5, so the routed experts carry the block),
trained here from scratch on the bundled corpus for a few minutes on CPU (fixed seed, fixed data
order), so the experts have specialised. All four selections prune the same model with the same
calibration scores; the loss is measured on the validation split (documents disjoint from the
training and calibration windows).

    .venv/bin/python bench/expert_selection.py [--steps 400] [--random-seeds 5] [--out results.json]
    .venv/bin/python bench/expert_selection.py --smoke   # seconds: a tiny random model, for the tests
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import hybridprune as hp
from hybridprune.data import load_token_samples, tokenizer_path
from hybridprune.evaluate import evaluate_loss
from hybridprune.importance.scores import EXPERT_IMPORTANCE

METHODS = ("output_norm", "router_weighted", "frequency")


def moe_config(vocab_size: int, smoke: bool):
    small = dict(hidden_size=32, n_routed_experts=8, moe_intermediate_size=16, moe_shared_expert_intermediate_size=16,
                 mamba_num_heads=4, mamba_head_dim=8, n_groups=2, num_attention_heads=4, head_dim=8)
    full = dict(hidden_size=128, n_routed_experts=16, moe_intermediate_size=64, moe_shared_expert_intermediate_size=16,
                mamba_num_heads=8, mamba_head_dim=32, n_groups=2, num_attention_heads=4, head_dim=32)
    return AutoConfig.for_model(
        "nemotron_h", vocab_size=vocab_size, layers_block_type=["linear_attention", "moe", "full_attention", "moe",
                                                                "linear_attention", "moe"],
        ssm_state_size=16, conv_kernel=4, chunk_size=32, num_key_value_heads=2, intermediate_size=64,
        num_experts_per_tok=2, n_group=1, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, **(small if smoke else full))


def train(model, data, *, steps: int, lr: float, batch: int, seed: int, log) -> list[float]:
    """AdamW with linear warmup and cosine decay, fixed data order; returns the loss per step."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = max(1, steps // 10)
    losses = []
    model.train()
    for step in range(steps):
        scale = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        for group in opt.param_groups:
            group["lr"] = lr * max(scale, 0.05)
        rows = torch.randint(0, data.input_ids.shape[0], (batch,), generator=g)
        ids = data.input_ids[rows]
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % max(1, steps // 8) == 0:
            log(f"  step {step + 1}/{steps}: train loss {statistics.mean(losses[-20:]):.3f}")
    model.eval()
    return losses


def random_scores(scores, seed: int):
    """The calibration scores with every expert table replaced by uniform draws: a selection blind to the
    activations, with the same group structure and counts."""
    out = hp.Scores(**{k: getattr(scores, k) for k in ("mamba", "ffn", "attention", "moe_ffn", "moe_shared_ffn",
                                                       "hidden", "depth_kld", "depth_bi")}, meta=dict(scores.meta))
    g = torch.Generator().manual_seed(seed)
    for i, t in scores.moe_experts.items():
        out.moe_experts[i] = torch.rand(t.shape, generator=g)
        out.moe_router_weighted[i] = out.moe_experts[i]
        out.moe_frequency[i] = out.moe_experts[i]
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--calib", type=int, default=64, help="calibration samples")
    ap.add_argument("--val", type=int, default=64, help="validation samples")
    ap.add_argument("--random-seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="a tiny model, a few steps: checks the script runs")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.calib, args.val, args.seq_len, args.random_seeds = 4, 4, 4, 32, 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    log = print
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(tokenizer_path())
    kw = dict(seq_len=args.seq_len, seed=args.seed)
    train_data = load_token_samples("shakespeare", tok, split="train", num_samples=None if not args.smoke else 16, **kw)
    calib = load_token_samples("shakespeare", tok, split="calibration", num_samples=args.calib, **kw)
    val = load_token_samples("shakespeare", tok, split="validation", num_samples=args.val, **kw)
    model = AutoModelForCausalLM.from_config(moe_config(len(tok), args.smoke), dtype=torch.float32)
    adapter = hp.get_adapter(model)
    dims = adapter.dims(model.config)
    log(f"MoE hybrid: {adapter.num_parameters(dims):,} parameters, {adapter.num_active_parameters(dims):,} active; "
        f"training {args.steps} steps of {args.batch} x {args.seq_len} tokens")
    train(model, train_data, steps=args.steps, lr=args.lr, batch=args.batch, seed=args.seed, log=log)
    trained_at = time.perf_counter()
    scores = hp.calibrate(model, calib, batch_size=8, progress=False)
    result = {"setup": {"parameters": adapter.num_parameters(dims), "active": adapter.num_active_parameters(dims),
                        "experts": dims.num_moe_experts, "top_k": dims.moe_top_k, "train_steps": args.steps,
                        "train_tokens": args.steps * args.batch * args.seq_len, "calib_samples": args.calib,
                        "val_samples": args.val, "seq_len": args.seq_len, "seed": args.seed},
              "unpruned": evaluate_loss(model, val)["loss"], "rows": []}
    frequency = {i: t.tolist() for i, t in scores.moe_frequency.items()}
    result["routing_frequency"] = frequency
    for fraction in (0.25, 0.5):
        kept = dims.num_moe_experts - round(fraction * dims.num_moe_experts)
        row = {"removed": fraction, "kept_experts": kept}
        for method in METHODS:
            pruned = hp.prune(model, scores, {"num_moe_experts": kept}, expert_importance=method)
            row[method] = evaluate_loss(pruned, val)["loss"]
        randoms = [evaluate_loss(hp.prune(model, random_scores(scores, s), {"num_moe_experts": kept}), val)["loss"]
                   for s in range(args.random_seeds)]
        row["random"] = {"mean": statistics.mean(randoms), "min": min(randoms), "max": max(randoms), "n": len(randoms)}
        result["rows"].append(row)
        log(f"remove {fraction:.0%} ({kept} kept): " + ", ".join(f"{m} {row[m]:.4f}" for m in METHODS)
            + f", random {row['random']['mean']:.4f} [{row['random']['min']:.4f}, {row['random']['max']:.4f}]")
    result["seconds"] = {"train": round(trained_at - start, 1), "total": round(time.perf_counter() - start, 1)}
    log(f"unpruned {result['unpruned']:.4f}; {result['seconds']}")
    assert set(METHODS) <= set(EXPERT_IMPORTANCE)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
