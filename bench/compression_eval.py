"""What compression bought: the shipped teacher, its pruned student and the distilled student, side by side.

Given a finished demo run (`hybridprune demo --out RUN`), this rebuilds the zero-shot pruned model from
the run's own scores and plan (pruning is deterministic), loads the distilled student the run exported,
and measures the three with `hybridprune.compare_models` in one process:

- loss, perplexity and bits per byte on `--val-samples` validation windows of `--seq-len` tokens;
- the two shipped lm-eval tasks on all their documents (`next_line_choice`: 200, `corpus_bpb`: 40);
- generation speed at batch 1 and 8 and two context lengths (`--contexts`), `--new-tokens` decoded with
  the cache, models interleaved, medians of `--repeats` after a warm-up, ratios to the teacher.

Usage: python bench/compression_eval.py RUN [--contexts 256,1024] [--new-tokens 32] [--repeats 3]
       [--json out.json] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--contexts", default="256,1024")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--val-samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hybridprune as hp
    from hybridprune.data import load_token_samples, teacher_path
    from hybridprune.evaluate import SpeedSettings
    from hybridprune.evaluate.tables import kernels_text, quality_table, speed_table

    results = json.loads((args.run / "results.json").read_text())
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path(), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(teacher_path())
    pruned = hp.prune(teacher, hp.Scores.load(args.run / "scores"), hp.Plan.parse(results["plan"])).eval()
    student = AutoModelForCausalLM.from_pretrained(args.run / "student", dtype=torch.float32).eval()
    val = load_token_samples("shakespeare", tok, seq_len=args.seq_len, num_samples=args.val_samples,
                             split="validation", seed=0, model_vocab_size=teacher.config.vocab_size)
    speed = SpeedSettings(batch_sizes=tuple(int(x) for x in args.batch_sizes.split(",")),
                          contexts=tuple(int(x) for x in args.contexts.split(",")), new_tokens=args.new_tokens,
                          warmup=1, repeats=args.repeats)
    ev = hp.compare_models({"teacher": teacher, "pruned": pruned, "distilled": student}, tokenizers=tok,
                           samples=val, batch_size=8, speed=speed, tasks=["next_line_choice", "corpus_bpb"],
                           progress=lambda m: print(m, file=sys.stderr, flush=True))
    for columns, rows in (quality_table(ev), speed_table(ev)):
        print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
        print("\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n")
    print(kernels_text(ev))
    if args.json:
        args.json.write_text(json.dumps(ev, indent=2) + "\n")


if __name__ == "__main__":
    main()
