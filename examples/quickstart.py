"""The core recipe on a tiny random Nemotron-H built on the fly: calibrate, prune group-aware,
export, and reload with plain transformers. Runs offline in seconds.

    .venv/bin/python examples/quickstart.py [--out runs/quickstart]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

import hybridprune as hp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="runs/quickstart")
    args = ap.parse_args()
    out = Path(args.out)

    config = AutoConfig.for_model(
        "nemotron_h", vocab_size=512, hidden_size=128,
        layers_block_type=["linear_attention", "mlp", "full_attention", "mlp", "linear_attention", "mlp"],
        mamba_num_heads=16, mamba_head_dim=16, n_groups=4, ssm_state_size=16, chunk_size=32,
        num_attention_heads=8, num_key_value_heads=2, head_dim=16, intermediate_size=384,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    batches = [torch.randint(0, 512, (4, 128)) for _ in range(4)]

    scores = hp.calibrate(model, batches, depth_samples=4)
    scores.save(out / "scores")

    plan = hp.Plan(mamba_num_heads=8, mamba_head_dim=12, ffn_hidden_size=192, hidden_size=96,
                   num_attention_heads=4, num_layers=5)
    pruned = hp.prune(model, scores, plan)
    path = hp.export(pruned, out / "pruned", overwrite=True)

    reloaded = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        diff = (reloaded(batches[0]).logits - pruned(batches[0]).logits).abs().max().item()
    p = pruned.hybridprune_info["parameters"]
    print(f"plan: {plan}")
    print(f"parameters: {p['before']:,} -> {p['after']:,} ({p['after'] / p['before']:.1%}); "
          f"dropped blocks {pruned.hybridprune_info['dropped_blocks']}")
    print(f"exported to {path}; reload max |logit diff| = {diff:.2e}")


if __name__ == "__main__":
    main()
