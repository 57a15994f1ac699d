"""Reading documents from a data source and splitting them into disjoint parts.

A *source* is one of:

- a file: ``.txt`` (one document per blank-line separated paragraph), ``.jsonl`` / ``.json`` (one
  document per record, text in ``text_field``) or ``.parquet``; ``.txt``, ``.jsonl`` and ``.json``
  may be gzip-compressed (``.gz``);
- a directory written by ``datasets.save_to_disk`` (a ``Dataset`` or a ``DatasetDict``);
- a directory of such files: if files name at least two splits at the end of their names
  (``train.jsonl``, ``shakespeare-validation.jsonl.gz``), those files are the given splits and other
  files are ignored; otherwise all the data files together form one unsplit source;
- ``"shakespeare"``: the bundled corpus (see :func:`hybridprune.data.assets.bundled_corpus`);
- a Hugging Face hub dataset name, tried with ``datasets.load_dataset`` (fails fast offline);
- an in-memory ``datasets.Dataset`` / ``DatasetDict`` or a list of strings.

Splitting (:func:`read_documents`):

- An *unsplit* source is divided by document: each document's text is hashed (SHA-256), and the hash
  picks its part: 10% calibration, 5% validation, 5% test, 80% train. The rule depends on the text
  only, so it is the same on every machine and in every order, and identical documents always land in
  the same part: no validation or test text is ever seen in calibration or training.
- A *pre-split* source (a ``DatasetDict``, a directory of split files, the bundled corpus) keeps its
  given parts. If it has no calibration part, calibration is carved out of its train part with the
  same hash rule (the train documents whose hash falls in the first 10%), and those documents are
  removed from ``train``, so calibration and train stay disjoint.
- ``split="all"`` returns every document of the source, unsplit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import stat
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hybridprune.data import diagnose
from hybridprune.data.assets import BUNDLED_CORPUS_NAME, SPLITS, bundled_corpus
from hybridprune.data.errors import DataError

log = logging.getLogger(__name__)

#: Fractions of an unsplit source, by document hash. Calibration is the first slice, so the same
#: fraction can be carved out of a given train part.
SPLIT_FRACTIONS: dict[str, tuple[float, float]] = {
    "calibration": (0.00, 0.10),
    "validation": (0.10, 0.15),
    "test": (0.15, 0.20),
    "train": (0.20, 1.00),
}
CALIBRATION_FRACTION = SPLIT_FRACTIONS["calibration"][1]

_SPLIT_ALIASES = {
    "calibration": "calibration",
    "calib": "calibration",
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}

_FORMATS = {  # suffix (without .gz) -> datasets builder
    ".txt": "text",
    ".text": "text",
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
}
SUPPORTED_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet", ".txt.gz", ".jsonl.gz", ".json.gz")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def document_bucket(text: str) -> float:
    """A stable number in [0, 1) derived from a document's text; it picks the document's split."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(text: str) -> str:
    """The split an unsplit source assigns to a document."""
    b = document_bucket(text)
    for name, (lo, hi) in SPLIT_FRACTIONS.items():
        if lo <= b < hi:
            return name
    return "train"  # unreachable: the fractions cover [0, 1)


def check_split(split: str) -> str:
    if split == "all" or split in SPLITS:
        return split
    raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} (or 'all' for the whole source)")


# --------------------------------------------------------------------------------------------------
# public entry point


def read_documents(source: Any, split: str, *, text_field: str = "text") -> list[str]:
    """The non-empty documents of ``split`` in ``source``, in source order."""
    check_split(split)
    parts = _load_parts(source, text_field)
    if split == "all":
        return [d for docs in parts.values() for d in docs]
    if set(parts) == {None}:  # unsplit
        docs = [d for d in parts[None] if split_of(d) == split]
        total = len(parts[None])
        if not docs:
            raise DataError(
                f"the {split!r} split of {_describe(source)} is empty: its {total} document(s) all fall into "
                "other splits (documents are assigned to splits by a hash of their text: "
                f"{_fractions_text()}); give more documents, or use split='all'"
            )
        return docs
    return _from_given_parts(parts, split, source)


def _from_given_parts(parts: dict[str | None, list[str]], split: str, source: Any) -> list[str]:
    given = sorted(p for p in parts if p is not None)
    if split in parts:
        docs = parts[split]
        if split == "train" and "calibration" not in parts:
            docs = [d for d in docs if document_bucket(d) >= CALIBRATION_FRACTION]
    elif split == "calibration" and "train" in parts:
        docs = [d for d in parts["train"] if document_bucket(d) < CALIBRATION_FRACTION]
    else:
        raise DataError(
            f"{_describe(source)} has the splits {given} but no {split!r} split; "
            f"pass split= one of those, or a source without given splits"
        )
    if not docs:
        raise DataError(f"the {split!r} split of {_describe(source)} has no non-empty documents")
    return docs


def _fractions_text() -> str:
    return ", ".join(f"{name} {100 * (hi - lo):.0f}%" for name, (lo, hi) in SPLIT_FRACTIONS.items())


def _describe(source: Any) -> str:
    if isinstance(source, (str, Path)):
        return f"'{source}'"
    return f"the given {type(source).__name__}"


def check_readable(path: Path) -> None:
    """A data path that exists must be a regular file or a directory: reading a FIFO, a socket or a
    device would block, or never end."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode) else
            "not a regular file")
    raise DataError(f"'{path}' is {kind}, not a data file; give a regular file ({', '.join(SUPPORTED_SUFFIXES)}) "
                    "or a directory of them")


def data_files(directory: Path) -> list[Path]:
    """The data files of a directory (supported suffixes), sorted; an entry of such a name that is not a
    regular file is refused, not skipped."""
    found = []
    for p in sorted(directory.iterdir()):
        if _suffix_of(p) in SUPPORTED_SUFFIXES:
            check_readable(p)
            if p.is_file():
                found.append(p)
    return found


# --------------------------------------------------------------------------------------------------
# loading: every loader returns {split name or None: [documents]}


def _load_parts(source: Any, text_field: str) -> dict[str | None, list[str]]:
    import datasets

    if isinstance(source, datasets.DatasetDict):
        return _parts_from_dataset_dict(source, text_field, _describe(source))
    if isinstance(source, datasets.Dataset):
        return {None: _texts_from_dataset(source, text_field, _describe(source))}
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        if not all(isinstance(t, str) for t in source):
            raise DataError("a list source must hold strings (one document each)")
        docs = [t for t in source if t.strip()]
        if not docs:
            raise DataError("the given list of documents is empty (or holds only blank strings)")
        return {None: docs}
    if isinstance(source, str) and not source.strip():  # Path("") would be the working directory
        raise DataError("the data source is empty; give a data file, a directory, a saved dataset or 'shakespeare'")
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(
            f"unsupported data source of type {type(source).__name__}; pass a file or directory path, "
            f"'{BUNDLED_CORPUS_NAME}', a hub dataset name, a datasets.Dataset or a list of strings"
        )

    text = os.fspath(source)
    if isinstance(source, str) and text.lower() == BUNDLED_CORPUS_NAME:
        return _parts_from_directory(bundled_corpus(), text_field)
    path = Path(text).expanduser()
    check_readable(path)
    if path.is_dir():
        return _parts_from_directory(path, text_field)
    if path.is_file():
        return {None: _texts_from_file(path, text_field)}
    if isinstance(source, str) and _looks_like_hub_name(text):
        return _parts_from_hub(text, text_field)
    raise DataError(f"data file not found: '{path}'; check the path (supported: {', '.join(SUPPORTED_SUFFIXES)})")


def _looks_like_hub_name(text: str) -> bool:
    if text.startswith((".", "/", "~")) or "\\" in text:
        return False
    if _suffix_of(Path(text)) in SUPPORTED_SUFFIXES:
        return False
    return bool(_HUB_NAME.match(text))


def _suffix_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] == ".gz":
        return suffixes[-2] + ".gz"
    return suffixes[-1] if suffixes else ""


def _split_name_of_file(path: Path) -> str | None:
    stem = path.name[: len(path.name) - len(_suffix_of(path))].lower()
    last = re.split(r"[-_.]", stem)[-1]
    return _SPLIT_ALIASES.get(last)


def _parts_from_directory(path: Path, text_field: str) -> dict[str | None, list[str]]:
    import datasets

    if any((path / name).is_file() for name in diagnose.SAVED_DATASET_FILES):
        loaded = _load_from_disk(path)
        if isinstance(loaded, datasets.DatasetDict):
            return _parts_from_dataset_dict(loaded, text_field, f"'{path}'")
        return {None: _texts_from_dataset(loaded, text_field, f"'{path}'")}
    files = data_files(path)
    if not files:
        raise DataError(
            f"directory '{path}' holds neither a dataset saved with datasets.save_to_disk nor any data file "
            f"({', '.join(SUPPORTED_SUFFIXES)})"
        )
    named = {f: _split_name_of_file(f) for f in files}
    if len({s for s in named.values() if s}) > 1:
        parts: dict[str | None, list[str]] = {}
        for f, split in named.items():
            if split is None:
                log.info("ignoring '%s': the directory has split files and this name names no split", f)
                continue
            parts.setdefault(split, []).extend(_texts_from_file(f, text_field))
        return parts
    return {None: [d for f in files for d in _texts_from_file(f, text_field)]}


def _load_from_disk(path: Path):
    import datasets

    diagnose.check_saved_dataset(path)
    try:
        with _quiet_datasets():
            return datasets.load_from_disk(str(path))
    except Exception as exc:  # missing or damaged .arrow files surface as many exception types
        raise DataError(f"the dataset saved in '{path}' cannot be loaded ({diagnose.cause(exc)}); "
                        "write it again with datasets.save_to_disk") from None


def _parts_from_dataset_dict(dd: Mapping, text_field: str, what: str) -> dict[str | None, list[str]]:
    parts: dict[str | None, list[str]] = {}
    for name, ds in dd.items():
        split = _SPLIT_ALIASES.get(str(name).lower(), str(name))
        parts.setdefault(split, []).extend(_texts_from_dataset(ds, text_field, f"{what} (split {name!r})"))
    if len(parts) == 1:  # a single given split is treated as an unsplit source
        return {None: next(iter(parts.values()))}
    return parts


def _texts_from_file(path: Path, text_field: str) -> list[str]:
    suffix = _suffix_of(path)
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(
            f"unsupported file type '{suffix or path.name}' for '{path}'; use one of {', '.join(SUPPORTED_SUFFIXES)} "
            "or a directory written by datasets.save_to_disk"
        )
    if suffix != ".parquet":
        diagnose.check_gzip(path, expected=suffix.endswith(".gz"))
    if path.stat().st_size == 0:
        raise DataError(f"data file '{path}' is empty; give a file that holds text")
    if suffix != ".parquet" and diagnose.is_blank(path):
        raise DataError(f"data file '{path}' holds no text (it is empty or only blank lines); "
                        "give a file that holds text")
    builder = _FORMATS[suffix.removesuffix(".gz")]
    if builder == "json":
        diagnose.check_first_record(path)
    field = "text" if builder == "text" else text_field
    try:
        with _quiet_datasets():
            return _texts_from_records(open_file(path, builder), field, f"'{path}'")
    except DataError:
        raise
    except Exception as exc:  # malformed JSON/parquet surfaces as many different exception types
        raise unreadable(path, builder, exc) from None


def open_file(path: Path, builder: str):
    """One local data file's records, streamed by the `datasets` builder `builder` ("json", "text",
    "parquet"). A stream writes no Arrow copy of the file, and the lock file `datasets` makes on
    opening goes to a temporary cache directory removed at once: nothing is left in the user's
    datasets cache (the stream needs no cache while it is read)."""
    import datasets

    kwargs: dict[str, Any] = {"sample_by": "paragraph"} if builder == "text" else {}
    with tempfile.TemporaryDirectory(prefix="hybridprune-data-") as cache:
        return datasets.load_dataset(builder, data_files=[str(path)], split="train", streaming=True,
                                     cache_dir=cache, **kwargs)


def unreadable(path: Path, builder: str, exc: BaseException) -> DataError:
    """The error for a file that `datasets` could not read: the first bad JSON record where there is one."""
    where = diagnose.first_json_problem(path, _suffix_of(path).startswith(".jsonl")) if builder == "json" else None
    if where is not None:
        return DataError(f"could not read '{path}' as JSON: {where}; fix or remove that record")
    return DataError(f"could not read '{path}' as {builder}: {diagnose.cause(exc)}")


def _texts_from_records(records, text_field: str, what: str) -> list[str]:
    """The non-empty texts of streamed records (`_texts_from_dataset`'s rules)."""
    texts, fields = [], {}
    for record in records:
        fields.update(dict.fromkeys(record))
        value = record.get(text_field)
        if value is not None and _text_value(value, text_field, what).strip():
            texts.append(value)
    if text_field not in fields:
        raise _no_field(what, text_field, list(fields))
    if not texts:
        raise _no_text(what, text_field)
    return texts


def _texts_from_dataset(ds: Any, text_field: str, what: str) -> list[str]:
    columns = list(ds.column_names)
    if text_field not in columns:
        raise _no_field(what, text_field, columns)
    texts = [v for v in ds[text_field] if v is not None and _text_value(v, text_field, what).strip()]
    if not texts:
        raise _no_text(what, text_field)
    return texts


def _text_value(value: Any, text_field: str, what: str) -> str:
    if not isinstance(value, str):
        raise DataError(
            f"field {text_field!r} of {what} holds {type(value).__name__} values, not text; "
            "pass the name of a string field with --text-field (text_field= in Python)"
        )
    return value


def _no_field(what: str, text_field: str, fields: list) -> DataError:
    return DataError(f"{what} has no text field {text_field!r}; its fields are {fields}; pass one of those with "
                     "--text-field (text_field= in Python)")


def _no_text(what: str, text_field: str) -> DataError:
    return DataError(f"{what} holds no text (no non-empty {text_field!r} values); give a file that holds text")


def _parts_from_hub(name: str, text_field: str) -> dict[str | None, list[str]]:
    import datasets

    hint = "pass a local file (.txt, .jsonl, .json, .parquet) or a directory written by datasets.save_to_disk"
    offline = any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))
    if offline:
        raise DataError(f"no local file or directory '{name}', and the Hugging Face hub is offline "
                        f"(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set); {hint}")
    if not _hub_reachable():
        raise DataError(f"no local file or directory '{name}', and the Hugging Face hub cannot be reached; {hint}")
    try:
        with _quiet_datasets(), tempfile.TemporaryDirectory(prefix="hybridprune-data-") as cache:
            loaded = datasets.load_dataset(name, cache_dir=cache, keep_in_memory=True)  # no copy left behind
    except Exception as exc:
        raise DataError(f"could not load hub dataset '{name}': {type(exc).__name__}: {exc}; {hint}") from exc
    if isinstance(loaded, datasets.DatasetDict):
        return _parts_from_dataset_dict(loaded, text_field, f"hub dataset '{name}'")
    return {None: _texts_from_dataset(loaded, text_field, f"hub dataset '{name}'")}


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def _quiet_datasets():
    """Silence the datasets progress bars while reading (restoring the caller's setting)."""
    import datasets
    from datasets.utils import logging as ds_logging

    was_disabled = datasets.are_progress_bars_disabled()
    level = ds_logging.get_verbosity()
    datasets.disable_progress_bars()
    ds_logging.set_verbosity(ds_logging.CRITICAL)  # a read that fails is reported as our DataError
    try:
        yield
    finally:
        ds_logging.set_verbosity(level)
        if not was_disabled:
            datasets.enable_progress_bars()
