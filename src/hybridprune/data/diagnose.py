"""Why a data source could not be read, said in terms of the user's file.

`datasets` reports a bad JSON line as "An error occurred while generating the dataset", a `.gz` that is
not gzip as a `BadGzipFile` traceback, and a damaged `save_to_disk` directory as a bare JSON decode
error. The checks here run before (cheap ones) or after (on failure only) `datasets` reads the
source, and name the file, and the line where it is known."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from hybridprune.data.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
#: The metadata files `datasets.save_to_disk` writes, at the top and in each split's directory.
SAVED_DATASET_FILES = ("dataset_dict.json", "state.json", "dataset_info.json")
_CHUNK = 1 << 20


def check_gzip(path: Path, *, expected: bool) -> None:
    """A `.gz` file must start with the gzip magic bytes, and a file without `.gz` must not."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    if not expected:
        if head == GZIP_MAGIC:
            raise DataError(f"'{path}' is gzip-compressed but its name does not end in .gz; "
                            f"rename it to '{path.name}.gz'")
        return
    if head != GZIP_MAGIC:
        raise DataError(
            f"'{path}' ends in .gz but is not gzip-compressed (it starts with {head!r}); if it is plain "
            f"text, remove the .gz from its name, otherwise compress it with gzip")


def open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.name.lower().endswith(".gz") else \
        open(path, encoding="utf-8")


def is_blank(path: Path) -> bool:
    """True when the file (decompressed) holds nothing but whitespace."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                if chunk.strip():
                    return False
    except (OSError, EOFError) as exc:  # a damaged gzip stream
        raise DataError(f"'{path}' cannot be decompressed ({exc}); the file is damaged or cut short") from None
    return True


_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}


def _json_type(value) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def check_first_record(path: Path) -> None:
    """The first record must open an object (or, in a `.json` file, an array of them).

    pyarrow's JSON reader (under `datasets`) crashes the whole process (a segmentation fault in
    pyarrow 26) on a file whose first record is `null`; anything else that is not an object is refused
    here too, with the line, before pyarrow sees it."""
    try:
        with open_text(path) as fh:
            for number, line in enumerate(fh, 1):
                text = line.strip().lstrip("\ufeff")
                if not text:
                    continue
                if text.startswith(("{", "[")):
                    return
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    where = f"line {number}, column {exc.colno}: {exc.msg}"
                else:
                    where = f"line {number} holds a JSON {_json_type(value)}, not an object like {{\"text\": ...}}"
                raise DataError(f"could not read '{path}' as JSON: {where}; fix or remove that record")
    except (UnicodeDecodeError, OSError, EOFError):
        return  # reported with the file's name when the full read fails


def first_json_problem(path: Path, json_lines: bool) -> str | None:
    """Where a JSON (`json_lines=False`) or JSON-lines file stops being valid, or None if it parses.

    A `.json` file may also hold JSON lines (as `datasets` accepts): it is checked as one document
    first, then line by line."""
    try:
        with open_text(path) as fh:
            if not json_lines:
                text = fh.read()
                try:
                    json.loads(text)
                    return None
                except json.JSONDecodeError as exc:
                    if exc.pos == 0 or "Extra data" not in exc.msg:
                        return f"line {exc.lineno}, column {exc.colno}: {exc.msg}"
                lines = text.splitlines()
            else:
                lines = fh
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    return f"line {number}, column {exc.colno}: {exc.msg}"
                if not isinstance(record, dict):
                    return f"line {number} holds a JSON {_json_type(record)}, not an object like {{\"text\": ...}}"
    except UnicodeDecodeError as exc:
        return f"it is not UTF-8 text ({exc.reason} at byte {exc.start})"
    except (OSError, EOFError) as exc:
        return f"it cannot be decompressed ({exc})"
    return None


def check_saved_dataset(path: Path) -> None:
    """The JSON metadata of a `save_to_disk` directory (and its split directories) must parse."""
    dirs = [path] + sorted(p for p in path.iterdir() if p.is_dir())
    for d in dirs:
        for name in SAVED_DATASET_FILES:
            f = d / name
            if not f.is_file():
                continue
            try:
                json.loads(f.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                where = f"line {exc.lineno}, column {exc.colno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) \
                    else str(exc)
                raise DataError(f"'{f}' is damaged ({where}): the dataset saved in '{path}' cannot be loaded; "
                                "write it again with datasets.save_to_disk") from None


def cause(exc: BaseException) -> str:
    """The innermost message of a `datasets` error (the outer one is generic)."""
    inner = exc
    while inner.__cause__ is not None or inner.__context__ is not None:
        inner = inner.__cause__ or inner.__context__
    return f"{type(inner).__name__}: {inner}"
