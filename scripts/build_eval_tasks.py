#!/usr/bin/env python
"""Build the two local lm-evaluation-harness tasks from the bundled corpus's held-out test split.

Writes ``src/hybridprune/evaluate/tasks/{next_line_choice,corpus_bpb}.jsonl``; the YAML files beside
them name the JSONL as ``{{data_dir}}/<task>.jsonl`` and are filled in with an absolute path at run
time (``hybridprune.evaluate.tasks``). The test works (Macbeth, Much Ado About Nothing, Henry V) are
never used for calibration, training or validation, so neither task leaks into the recipe.

- ``next_line_choice`` (multiple choice): the four lines before a line of verse or prose as the
  context; the true next line and three distractors, other lines of the test split of similar
  length, as the choices. Accuracy of a model that ignores the context is 1/4.
- ``corpus_bpb`` (loglikelihood_rolling): passages of the test split, cut at paragraph boundaries to
  at most ``PASSAGE_CHARS`` characters; lm-eval reports bits per byte, byte and word perplexity.

Usage: python scripts/build_eval_tasks.py [--choice-docs 200] [--bpb-docs 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from hybridprune.data import read_documents  # noqa: E402

OUT = REPO / "src" / "hybridprune" / "evaluate" / "tasks"
CONTEXT_LINES = 4
MIN_LINE_CHARS = 24
PASSAGE_CHARS = 1200


def _lines(doc: str) -> list[str]:
    return [line.strip() for line in doc.splitlines() if line.strip()]


def _is_speech(line: str) -> bool:
    """A spoken line: long enough, not a speaker tag, stage direction or heading (all caps, brackets)."""
    return len(line) >= MIN_LINE_CHARS and not line.isupper() and not line.startswith(("[", "ACT", "SCENE"))


def next_line_choice(docs: list[str], n: int, rng: random.Random) -> list[dict]:
    pool = [line for doc in docs for line in _lines(doc) if _is_speech(line)]
    candidates = []
    for doc in docs:
        lines = _lines(doc)
        for i in range(CONTEXT_LINES, len(lines)):
            if _is_speech(lines[i]) and all(len(x) > 2 for x in lines[i - CONTEXT_LINES:i]):
                candidates.append((lines[i - CONTEXT_LINES:i], lines[i]))
    rng.shuffle(candidates)
    rows = []
    for context, answer in candidates[:n]:
        similar = [x for x in pool if x != answer and abs(len(x) - len(answer)) <= max(8, len(answer) // 4)]
        distractors = rng.sample(similar, 3)
        choices = distractors + [answer]
        rng.shuffle(choices)
        rows.append({"context": "\n".join(context), "choices": choices, "gold": choices.index(answer)})
    return rows


def corpus_bpb(docs: list[str], n: int, rng: random.Random) -> list[dict]:
    passages = []
    for doc in docs:
        current = ""
        for para in doc.split("\n\n"):
            if current and len(current) + len(para) + 2 > PASSAGE_CHARS:
                passages.append(current)
                current = ""
            current = f"{current}\n\n{para}" if current else para
        if current:
            passages.append(current)
    passages = [p[:PASSAGE_CHARS] for p in passages if len(p) >= PASSAGE_CHARS // 3]
    return [{"text": p} for p in sorted(rng.sample(passages, min(n, len(passages))), key=passages.index)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--choice-docs", type=int, default=200)
    ap.add_argument("--bpb-docs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    docs = read_documents("shakespeare", "test")
    for name, rows in (("next_line_choice", next_line_choice(docs, args.choice_docs, random.Random(args.seed))),
                       ("corpus_bpb", corpus_bpb(docs, args.bpb_docs, random.Random(args.seed)))):
        path = OUT / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        print(f"{path.relative_to(REPO)}: {len(rows)} documents")


if __name__ == "__main__":
    main()
