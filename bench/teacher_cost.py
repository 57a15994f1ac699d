"""What a larger teacher would cost on this machine: training tokens/s of a ~24M-parameter Nemotron-H
(12 blocks `M-M*M-M-M*M-`: 6 Mamba2 with 16 heads × 64 in 4 groups, 2 attention, 4 MLP; hidden 512,
FFN 2048, the bundled 4096-token vocabulary), trained the way scripts/train_tiny_teacher.py trains the
shipped 5.8M teacher (batch 8 × 256 tokens, bf16 autocast, AdamW). Random tokens: only the speed matters.

    .venv/bin/python bench/teacher_cost.py [--steps 4] [--threads 1] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

KIND = {"M": "linear_attention", "*": "full_attention", "-": "mlp"}


def config(smoke: bool):
    from transformers import AutoConfig
    kw = dict(vocab_size=4096, hidden_size=512, layers_block_type=[KIND[c] for c in "M-M*M-M-M*M-"],
              mamba_num_heads=16, mamba_head_dim=64, n_groups=4, ssm_state_size=32, conv_kernel=4, chunk_size=64,
              num_attention_heads=8, num_key_value_heads=2, head_dim=64, intermediate_size=2048,
              mlp_hidden_act="relu2", tie_word_embeddings=False, pad_token_id=1, bos_token_id=0, eos_token_id=0)
    if smoke:
        kw.update(vocab_size=96, hidden_size=32, mamba_head_dim=8, ssm_state_size=8, chunk_size=8, head_dim=8,
                  intermediate_size=64, layers_block_type=[KIND[c] for c in "M-*"])
    return AutoConfig.for_model("nemotron_h", **kw)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=4, help="timed steps (the first is a warm-up, not counted)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_config(config(args.smoke)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    seq = 16 if args.smoke else 256
    ids = torch.randint(0, model.config.vocab_size, (8, seq))
    times = []
    for _ in range(max(2, args.steps)):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    params = sum(p.numel() for p in model.parameters())
    tok_s = ids.numel() / statistics.median(times[1:])
    out = {"params": params, "tokens_per_s": tok_s, "threads": args.threads, "step_s": times[1:],
           "hours_for_1.64M_tokens": 1.6384e6 / tok_s / 3600, "hours_for_20_tokens_per_param": 20 * params / tok_s / 3600}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(main())
