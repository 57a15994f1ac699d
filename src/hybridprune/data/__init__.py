"""Data: sources (text, jsonl, parquet, datasets on disk, the bundled corpus), splits, tokenizing into
fixed-length samples, batching, and the paths of the shipped assets.

    from hybridprune.data import load_token_samples
    samples = load_token_samples("shakespeare", tokenizer, seq_len=256, num_samples=64, split="calibration")
    for batch in samples.batches(8):
        model(**batch)
"""

from __future__ import annotations

from hybridprune.data.assets import (
    BUNDLED_CORPUS_NAME,
    BUNDLED_TEACHERS,
    SPLITS,
    bundled_corpus,
    corpus_path,
    resolve_teacher,
    teacher_path,
    tokenizer_path,
)
from hybridprune.data.batches import TokenSamples
from hybridprune.data.errors import DataError
from hybridprune.data.samples import load_token_samples
from hybridprune.data.sources import read_documents, split_of

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
