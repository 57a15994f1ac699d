"""What a search writes, so that an interrupted one resumes: `search.json` (the settings it was started
with) and `candidates.jsonl` (one line per finished evaluation, appended and flushed as it finishes)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..output.atomic import claim, temp_sibling, writing
from ..output.documents import DocumentError, Number, OneOf, Optional, parse, problem, read_document

SETTINGS_FILE = "search.json"
CANDIDATES_FILE = "candidates.jsonl"
BEST_FILE = "best.yaml"
PLOT_FILE = "search.png"
SUMMARY_FILE = "summary.json"
SCORES_DIR = "scores"  # where the command line keeps the scores it computes
#: Everything a search writes in its directory.
OWNED = (SETTINGS_FILE, CANDIDATES_FILE, BEST_FILE, PLOT_FILE, SUMMARY_FILE, SCORES_DIR)

#: Stages of a candidate's evaluation, in order.
ZERO_SHOT, FINAL = "zero_shot", "final"

#: A line of candidates.jsonl, by stage, as the search reads it back (`search._merge`); a loss may be infinite.
RECORD_SHAPES = {
    ZERO_SHOT: {"stage": OneOf(ZERO_SHOT), "key": str, "values": dict, "plan": dict, "kept_blocks": [int],
                "cost": {"params": Number, "params_non_embedding": Number, "memory_mb": Number,
                         "active_params?": Number},
                "loss": Number, "perplexity": Number, "tokens": int},
    FINAL: {"stage": OneOf(FINAL), "key": str, "loss": Number, "perplexity": Number, "tokens": int,
            "kd": Optional(dict), "throughput": Optional(Number)},
}
_FIX = "the directory holds another search or was changed: use another output directory, or overwrite to start afresh"


class SearchStateError(ValueError):
    """The output directory holds a search run with other settings."""


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


class SearchStore:
    """The files of one search in `out_dir` (None: keep nothing, nothing resumes)."""

    def __init__(self, out_dir: str | os.PathLike | None):
        self.dir = Path(out_dir) if out_dir is not None else None
        self.records: dict[tuple[str, str], dict] = {}

    def path(self, name: str) -> Path | None:
        return None if self.dir is None else self.dir / name

    def open(self, settings: dict[str, Any], *, overwrite: bool = False) -> int:
        """Start or resume; returns how many finished evaluations were found.

        A directory holding a search with different settings is refused (unless `overwrite`, which
        discards the old results): mixing losses measured under two settings would rank nonsense.
        """
        if self.dir is None:
            return 0
        claim(self.dir, OWNED)  # recorded before written: --overwrite later replaces only these
        settings = _normalise(settings)
        settings_path, records_path = self.dir / SETTINGS_FILE, self.dir / CANDIDATES_FILE
        if settings_path.is_file() and not overwrite:
            old = read_document(settings_path, dict, fix=_FIX)
            if old != settings:
                changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
                raise SearchStateError(
                    f"{self.dir} holds a search run with other settings ({', '.join(changed)} differ); "
                    "use another output directory, or overwrite to discard its results"
                )
        elif overwrite or not settings_path.is_file():
            if records_path.exists():
                records_path.unlink()
            self.write_text(SETTINGS_FILE, json.dumps(settings, indent=2, sort_keys=True) + "\n")
        self.records = {}
        if records_path.is_file():
            for n, line in enumerate(records_path.read_text(errors="replace").splitlines(), 1):
                rec = self._record(line, f"{records_path}, line {n}")
                if rec is not None:
                    self.records[(rec["stage"], rec["key"])] = rec
        return len(self.records)

    @staticmethod
    def _record(line: str, where: str) -> dict | None:
        """One finished evaluation, checked; None for a line cut short by an interruption (redone)."""
        try:
            rec = parse(line, where, _FIX, non_finite=True)
        except DocumentError:
            return None
        found = problem(rec, {"stage": OneOf(*RECORD_SHAPES)})
        found = found or problem(rec, RECORD_SHAPES[rec["stage"]])
        if found:
            raise DocumentError(f"{where}: {found}; {_FIX}")
        return rec

    def get(self, stage: str, key: str) -> dict | None:
        return self.records.get((stage, key))

    def add(self, record: dict) -> None:
        record = _normalise(record)
        self.records[(record["stage"], record["key"])] = record
        if self.dir is None:
            return
        path = self.dir / CANDIDATES_FILE
        with writing("the search results", path), open(path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_text(self, name: str, text: str) -> Path | None:
        if self.dir is None:
            return None
        path = self.dir / name
        tmp = temp_sibling(path)
        try:
            with writing("the search results", path):
                tmp.write_text(text)
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path
