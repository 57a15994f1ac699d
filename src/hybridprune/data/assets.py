"""Paths of the assets shipped inside the package: the bundled corpus, tokenizer and tiny teacher.

Everything here is read-only package data under ``hybridprune/assets/``; the scripts in ``scripts/``
rebuild it (``build_corpus.py``, ``train_tokenizer.py``, ``train_tiny_teacher.py``).
"""

from __future__ import annotations

from pathlib import Path

from hybridprune.data.errors import DataError

#: Name that selects the bundled corpus wherever a data source is expected.
BUNDLED_CORPUS_NAME = "shakespeare"

#: Splits of every source, in the order they are documented.
SPLITS = ("calibration", "train", "validation", "test")

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
CORPUS_DIR = ASSETS_DIR / "corpus"
TEACHER_DIR = ASSETS_DIR / "tiny-nemotron-h"


def bundled_corpus() -> Path:
    """Directory of the bundled Shakespeare corpus (one ``shakespeare-<split>.jsonl.gz`` per split).

    Pass it (or the name ``"shakespeare"``) as ``source`` to :func:`load_token_samples`.
    """
    if not CORPUS_DIR.is_dir() or not any(CORPUS_DIR.glob("shakespeare-*.jsonl.gz")):
        raise DataError(
            f"the bundled corpus is missing from {CORPUS_DIR}; rebuild it with "
            "`python scripts/build_corpus.py` or reinstall hybridprune"
        )
    return CORPUS_DIR


def corpus_path(split: str) -> Path:
    """The bundled corpus file of one split (``calibration``, ``train``, ``validation`` or ``test``)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    path = bundled_corpus() / f"shakespeare-{split}.jsonl.gz"
    if not path.is_file():
        raise DataError(f"the bundled corpus has no {split!r} file ({path}); rebuild it with scripts/build_corpus.py")
    return path


def teacher_path() -> Path:
    """Directory of the bundled tiny Nemotron-H teacher (a normal Hugging Face checkpoint)."""
    if not (TEACHER_DIR / "config.json").is_file():
        raise DataError(
            f"the bundled teacher is missing from {TEACHER_DIR}; rebuild it with "
            "`python scripts/train_tiny_teacher.py` or reinstall hybridprune"
        )
    return TEACHER_DIR


def tokenizer_path() -> Path:
    """Directory of the bundled BPE tokenizer (the teacher's directory)."""
    if not (TEACHER_DIR / "tokenizer.json").is_file():
        raise DataError(
            f"the bundled tokenizer is missing from {TEACHER_DIR}; rebuild it with "
            "`python scripts/train_tokenizer.py` or reinstall hybridprune"
        )
    return TEACHER_DIR
