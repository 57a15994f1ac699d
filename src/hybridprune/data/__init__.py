"""Data: sources (text, jsonl, parquet, datasets on disk, the bundled corpus), splits, tokenizing into
fixed-length samples, batching, and the paths of the shipped assets.

    from hybridprune.data import load_token_samples
    samples = load_token_samples("shakespeare", tokenizer, seq_len=256, num_samples=64, split="calibration")
    for batch in samples.batches(8):
        model(**batch)
"""

from __future__ import annotations

import importlib

#: public name -> the module defining it, imported on first use: the shipped assets' paths (which every
#: checkpoint reference is resolved against) need no torch
_PUBLIC = {
    **dict.fromkeys(("BUNDLED_CORPUS_NAME", "BUNDLED_TEACHERS", "SPLITS", "bundled_corpus", "corpus_path",
                     "resolve_teacher", "teacher_path", "tokenizer_path"), "hybridprune.data.assets"),
    "TokenSamples": "hybridprune.data.batches",
    "DataError": "hybridprune.data.errors",
    "load_token_samples": "hybridprune.data.samples",
    "read_documents": "hybridprune.data.sources",
    "split_of": "hybridprune.data.sources",
}

__all__ = [
    "BUNDLED_CORPUS_NAME",
    "BUNDLED_TEACHERS",
    "DataError",
    "SPLITS",
    "TokenSamples",
    "bundled_corpus",
    "corpus_path",
    "load_token_samples",
    "read_documents",
    "resolve_teacher",
    "split_of",
    "teacher_path",
    "tokenizer_path",
]


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'hybridprune.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
