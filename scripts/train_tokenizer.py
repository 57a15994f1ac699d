#!/usr/bin/env python
"""Train the bundled byte-level BPE tokenizer (vocabulary 4096) on the corpus's train split.

The tokenizer is written as a normal Hugging Face tokenizer (``tokenizer.json`` +
``tokenizer_config.json``) into src/hybridprune/assets/tiny-nemotron-h/, so that
``AutoTokenizer.from_pretrained(dir)`` loads it offline.

- Model: byte-level BPE (GPT-2 style pre-tokenisation, no normaliser: case and line breaks are kept,
  every byte is representable, so there is no unknown token).
- Special tokens: ``<|endoftext|>`` (id 0; BOS, EOS and document separator) and ``<|pad|>`` (id 1).
- Data: only the documents of the ``train`` split (not calibration, validation or test), in file
  order; the trainer is deterministic, so a rebuild gives the same ``tokenizer.json``.

Usage: python scripts/train_tokenizer.py [--vocab-size 4096] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from hybridprune.data import read_documents  # noqa: E402
from hybridprune.data.assets import TEACHER_DIR  # noqa: E402

EOS = "<|endoftext|>"
PAD = "<|pad|>"
MODEL_MAX_LENGTH = 2048


def train_tokenizer(docs: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(docs, trainer, length=len(docs))
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=MODEL_MAX_LENGTH,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--out", type=Path, default=TEACHER_DIR)
    args = ap.parse_args()

    docs = read_documents("shakespeare", "train")
    tok = train_tokenizer(docs, args.vocab_size)
    if len(tok) != args.vocab_size:
        raise SystemExit(f"trained vocabulary has {len(tok)} entries, expected {args.vocab_size}")
    args.out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(args.out))
    digest = hashlib.sha256((args.out / "tokenizer.json").read_bytes()).hexdigest()[:16]
    n_tokens = sum(len(x) for x in tok(docs, add_special_tokens=False, verbose=False)["input_ids"])
    chars = sum(len(d) for d in docs)
    print(f"vocab {len(tok)}; train split {len(docs)} documents, {chars:,} chars -> {n_tokens:,} tokens "
          f"({chars / n_tokens:.2f} chars/token); tokenizer.json sha256 {digest}; written to {args.out}")


if __name__ == "__main__":
    main()
