"""Paths of the assets shipped inside the package: the bundled corpus, tokenizer and tiny teachers.

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

#: The shipped tiny teachers by the name `demo --teacher` accepts; the first is the default.
BUNDLED_TEACHERS = {
    "tiny-nemotron-h": TEACHER_DIR,  # Mamba2 + attention + MLP blocks (nemotron_h)
    "tiny-qwen3-5": ASSETS_DIR / "tiny-qwen3-5",  # 3 Gated DeltaNet : 1 gated attention (qwen3_5_text)
}


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


def teacher_path(name: str = "tiny-nemotron-h") -> Path:
    """Directory of a bundled tiny teacher (a normal Hugging Face checkpoint); default the Nemotron-H one."""
    if name not in BUNDLED_TEACHERS:
        raise DataError(f"no bundled teacher named {name!r}; use one of {', '.join(BUNDLED_TEACHERS)}")
    path = BUNDLED_TEACHERS[name]
    if not (path / "config.json").is_file():
        arch = "" if name == "tiny-nemotron-h" else " --arch qwen3_5_text"
        raise DataError(
            f"the bundled teacher is missing from {path}; rebuild it with "
            f"`python scripts/train_tiny_teacher.py{arch}` or reinstall hybridprune"
        )
    return path


def resolve_teacher(value: str | None) -> Path | str:
    """What `--teacher` names: an existing directory wins, then a bundled teacher's name, else the value
    as given (a directory or Hub id for the checkpoint loader to check). None: the default teacher."""
    if value is None:
        return teacher_path()
    if not Path(value).exists() and value in BUNDLED_TEACHERS:
        return teacher_path(value)
    return value


def tokenizer_path() -> Path:
    """Directory of the bundled BPE tokenizer (the teacher's directory)."""
    if not (TEACHER_DIR / "tokenizer.json").is_file():
        raise DataError(
            f"the bundled tokenizer is missing from {TEACHER_DIR}; rebuild it with "
            "`python scripts/train_tokenizer.py` or reinstall hybridprune"
        )
    return TEACHER_DIR
