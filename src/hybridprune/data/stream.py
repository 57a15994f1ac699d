"""Sources opened as record tables that are read a batch at a time, never as one list in memory.

`open_tables(source)` gives `(given split or None, table)` pairs: a stream of records for a local
file (read by `datasets` without writing to its cache), a memory-mapped `datasets` table for a saved
dataset, a streaming `IterableDataset` for a Hub id.
The split rule is `sources.py`'s, applied per document (`assign_split`). Mixtures are parsed here:
`web.jsonl:0.7,code.jsonl:0.3`.
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from hybridprune.data import diagnose, sources
from hybridprune.data.assets import BUNDLED_CORPUS_NAME, bundled_corpus
from hybridprune.data.errors import DataError

_TAGGED = re.compile(r"^(?P<src>.+):(?P<w>[^:/\\]*)$")  # `source:weight` in form (the weight not yet checked)
_NUMBER = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_EXAMPLE = "as in web.jsonl:0.7,code.jsonl:0.3"


def parse_mixture(spec: str) -> list[tuple[str, float | None]]:
    """`a.jsonl:0.7,b.jsonl:0.3` -> [(a.jsonl, 0.7), (b.jsonl, 0.3)]; a plain source -> [(src, None)].

    A path that exists is a plain source (it may hold commas and colons). Otherwise, once any piece
    ends in `:<weight>`, every piece must, and each weight must be a finite number > 0: a malformed
    or missing weight is reported as such, naming the weight and its source."""
    spec = spec.strip()
    if Path(spec).expanduser().exists():
        return [(spec, None)]
    pieces = [p.strip() for p in spec.split(",")]
    tagged = [_TAGGED.match(p) for p in pieces]
    if not any(tagged):
        return [(spec, None)]
    out = []
    for piece, m in zip(pieces, tagged):
        if m is None:
            raise DataError(f"--data {spec!r} is a mixture, but its source '{piece}' has no weight; give every source "
                            f"one, {_EXAMPLE}")
        out.append((m["src"], _weight(m["w"], m["src"], spec)))
    return out


def _weight(text: str, src: str, spec: str) -> float:
    if not _NUMBER.fullmatch(text):
        raise DataError(f"--data {spec!r}: the weight {text!r} of '{src}' is malformed (no file '{spec}' exists "
                        f"either); a weight is a number > 0, {_EXAMPLE}")
    w = float(text)
    if not (math.isfinite(w) and w > 0):
        raise DataError(f"--data {spec!r}: the weight {text} of '{src}' must be > 0 and finite, got {w}")
    return w


def expand(source: str) -> list[str]:
    """A glob (`data/*.jsonl`) expanded to its files, sorted; anything else as is. A path that is not a
    regular file or a directory is refused."""
    if any(c in source for c in "*?[") and not Path(source).exists():
        files = sorted(glob.glob(os.path.expanduser(source)))
        if not files:
            raise DataError(f"the pattern '{source}' matches no file; check the path")
    else:
        files = [source]
    for f in files:  # a FIFO or a device would block the reader (and the fingerprint) forever
        sources.check_readable(Path(f).expanduser())
    return files


def open_tables(source: str, text_field: str) -> tuple[list[tuple[str | None, Any]], bool]:
    """`([(given split or None, table)], has a calibration part)` for one source (files of a glob
    are one unsplit source)."""
    import datasets

    files = expand(source)
    if len(files) > 1:
        return [(None, _file_table(Path(f))) for f in files], False
    text = files[0]
    if text.lower() == BUNDLED_CORPUS_NAME:
        path = bundled_corpus()
    else:
        path = Path(text).expanduser()
    if path.is_file():
        return [(None, _file_table(path))], False
    if path.is_dir():
        if any((path / n).is_file() for n in diagnose.SAVED_DATASET_FILES):
            loaded = sources._load_from_disk(path)
            if isinstance(loaded, datasets.DatasetDict):
                return _given(loaded.items())
            return [(None, loaded)], False
        found = sources.data_files(path)
        if not found:
            raise DataError(f"directory '{path}' holds neither a dataset saved with datasets.save_to_disk nor any "
                            f"data file ({', '.join(sources.SUPPORTED_SUFFIXES)})")
        named = {f: sources._split_name_of_file(f) for f in found}
        if len({s for s in named.values() if s}) > 1:
            return _given((s, _file_table(f)) for f, s in named.items() if s)
        return [(None, _file_table(f)) for f in found], False
    if sources._looks_like_hub_name(text):
        return _hub_tables(text)
    raise DataError(f"data file not found: '{path}'; check the path (supported: "
                    f"{', '.join(sources.SUPPORTED_SUFFIXES)}, a directory, a glob or a Hub dataset id)")


def _given(items) -> tuple[list[tuple[str | None, Any]], bool]:
    tables = [(sources._SPLIT_ALIASES.get(str(name).lower(), str(name)), t) for name, t in items]
    if len({s for s, _ in tables}) == 1:
        return [(None, t) for _, t in tables], False
    return tables, any(s == "calibration" for s, _ in tables)


def _file_table(path: Path):
    suffix = sources._suffix_of(path)
    if suffix not in sources.SUPPORTED_SUFFIXES:
        raise DataError(f"unsupported file type '{suffix or path.name}' for '{path}'; use one of "
                        f"{', '.join(sources.SUPPORTED_SUFFIXES)} or a directory written by datasets.save_to_disk")
    if suffix != ".parquet":
        diagnose.check_gzip(path, expected=suffix.endswith(".gz"))
    if path.stat().st_size == 0 or (suffix != ".parquet" and diagnose.is_blank(path)):
        raise DataError(f"data file '{path}' holds no text (it is empty or only blank lines); give a file that "
                        "holds text")
    builder = sources._FORMATS[suffix.removesuffix(".gz")]
    if builder == "json":
        diagnose.check_first_record(path)
    try:
        with sources._quiet_datasets():
            return _FileRecords(sources.open_file(path, builder), path, builder)
    except Exception as exc:
        raise sources.unreadable(path, builder, exc) from None


class _FileRecords:
    """A local file's records, streamed (nothing is written to the datasets cache); a record that cannot
    be read is reported as a `DataError` naming the file, as when the file is opened."""

    def __init__(self, records, path: Path, builder: str):
        self.records, self.path, self.builder = records, path, builder

    def batches(self, start: int, size: int):
        """`(first row, [records])` from row `start`, read a batch at a time (not record by record)."""
        records = self.records.skip(start) if start else self.records
        row = start
        try:
            for columns in records.iter(batch_size=size):
                keys = list(columns)
                batch = [dict(zip(keys, values)) for values in zip(*(columns[k] for k in keys))]
                yield row, batch
                row += len(batch)
        except DataError:
            raise
        except Exception as exc:  # malformed JSON/parquet surfaces as many different exception types
            raise sources.unreadable(self.path, self.builder, exc) from None


def _hub_tables(name: str):
    """A Hub dataset, streamed (nothing downloaded up front); refused offline."""
    import datasets

    hint = "pass a local file (.txt, .jsonl, .json, .parquet), a directory or a glob"
    if any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
           for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")):
        raise DataError(f"no local file or directory '{name}', and the Hugging Face hub is offline "
                        f"(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set); {hint}")
    try:
        with sources._quiet_datasets(), tempfile.TemporaryDirectory(prefix="hybridprune-data-") as cache:
            loaded = datasets.load_dataset(name, streaming=True, cache_dir=cache)  # its lock file goes there
    except Exception as exc:
        raise DataError(f"could not load hub dataset '{name}': {type(exc).__name__}: {exc}; {hint}") from None
    if isinstance(loaded, (datasets.IterableDatasetDict, datasets.DatasetDict)):
        return _given(loaded.items())
    return [(None, loaded)], False


def assign_split(given: str | None, has_calibration: bool, key: str) -> str:
    """The split of one document (`key`: its text), by `sources.py`'s rule."""
    if given is None:
        return sources.split_of(key)
    if given == "train" and not has_calibration and sources.document_bucket(key) < sources.CALIBRATION_FRACTION:
        return "calibration"
    return given


def fingerprint(source: str) -> str:
    """Size, modification time and the first and last MiB of every file of a local source (a Hub id:
    its name): enough to notice a changed source when resuming or reading, without reading it all."""
    h = hashlib.sha256()
    files = expand(source)
    roots = [bundled_corpus() if f.lower() == BUNDLED_CORPUS_NAME else Path(f).expanduser() for f in files]
    paths = []
    for r in roots:
        paths += sorted(p for p in r.rglob("*") if p.is_file()) if r.is_dir() else [r] if r.is_file() else []
    if not paths:
        h.update(source.encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        with open(p, "rb") as fh:
            h.update(fh.read(1 << 20))
            if st.st_size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]
