"""What a search writes, so that an interrupted one resumes: `search.json` (the settings it was started
with) and `candidates.jsonl` (one line per finished evaluation, appended and flushed as it finishes)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..output.atomic import claim, temp_sibling, writing

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
            old = json.loads(settings_path.read_text())
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
            for line in records_path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by an interruption: that evaluation is redone
                if isinstance(rec, dict) and "key" in rec and "stage" in rec:
                    self.records[(rec["stage"], rec["key"])] = rec
        return len(self.records)

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
