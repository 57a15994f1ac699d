"""transformers' checkpoint conversion mapping, read from data pinned to the transformers version.

`KeyMap` needs, per model type, the renamings and merging conversions transformers applies when it
loads a checkpoint. Importing `transformers.conversion_mapping` for them costs more than half a second
(it pulls transformers' loading machinery and torch), which dominated a streaming prune of an ordinary
checkpoint. So `conversions.json` holds them as data, written by `scripts/transformers_data.py` from the
pinned transformers (`tests/test_transformers_data.py` regenerates it and fails when the installed
version disagrees), and `Transform` applies one exactly as `WeightTransform.rename_source_key` does.
A model type the data has no entry for (a transform class with its own matching logic, or a
transformers version other than the pinned one) is read from transformers itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path

DATA = Path(__file__).with_name("conversions.json")
#: transform classes whose matching is `WeightTransform.rename_source_key` itself (data can stand for them)
PLAIN_CLASSES = ("WeightRenaming", "WeightConverter", "PrefixChange")


@dataclass
class Transform:
    """One renaming or conversion as data: `regex` is transformers' compiled source pattern (one named
    group `g{i}` per source pattern), `source_patterns`/`target_patterns` as transformers processed them;
    `operations` (converters only): (operation class name, its `dim`) in order."""

    kind: str  # "renaming" or "converter"
    source_patterns: list[str]
    target_patterns: list[str]
    regex: str
    operations: list[tuple[str, int | None]] = field(default_factory=list)
    scope_prefix: str | None = None
    base_model_prefix: str | None = None

    def __post_init__(self) -> None:
        self._compiled = re.compile(self.regex)

    def rename_source_key(self, source_key: str) -> tuple[str, str | None]:
        """(renamed key, the source pattern that matched, or None): `WeightTransform.rename_source_key`."""
        key, prefix = source_key, None
        if self.scope_prefix is not None:
            scope = f"{self.scope_prefix}." if self.scope_prefix != "" else ""
            base = f"{self.base_model_prefix}." if self.base_model_prefix != "" else ""
            if source_key.startswith(base + scope):
                prefix = base + scope
            elif source_key.startswith(scope):
                prefix = scope
            else:
                return source_key, None
            key = source_key.removeprefix(prefix)
        m = self._compiled.search(key)
        if m is None:
            return source_key, None
        group = next(name for name, val in m.groupdict().items() if val is not None)
        replacement = self.target_patterns[0]
        if r"\1" in replacement:
            replacement = replacement.replace(r"\1", m.group(self._compiled.groupindex[group] + 1))
        renamed = key.replace(m.group(0), replacement, 1)
        return (prefix + renamed if prefix is not None else renamed), self.source_patterns[int(group[1:])]

    def as_dict(self) -> dict:
        return {"kind": self.kind, "source_patterns": self.source_patterns, "target_patterns": self.target_patterns,
                "regex": self.regex, "operations": [list(op) for op in self.operations],
                "scope_prefix": self.scope_prefix, "base_model_prefix": self.base_model_prefix}

    @classmethod
    def from_dict(cls, d: dict) -> Transform:
        return cls(**{**d, "operations": [tuple(op) for op in d["operations"]]})


@dataclass
class Conversions:
    """A model type's load-time renamings (in order), their reverses (in the order `save_pretrained`
    applies them) and its converters."""

    renamings: list
    reverse: list
    converters: list


def from_transformers(mapping) -> Conversions | None:
    """Conversions as data from transformers' objects, or None when a transform matches keys its own way."""
    from transformers.core_model_loading import WeightConverter, WeightRenaming

    def plain(t) -> Transform | None:
        if type(t).__name__ not in PLAIN_CLASSES:
            return None
        ops = [(type(op).__name__, getattr(op, "dim", None)) for op in getattr(t, "operations", ())]
        return Transform("converter" if isinstance(t, WeightConverter) else "renaming", list(t.source_patterns),
                         list(t.target_patterns), t.compiled_sources.pattern, ops, t.scope_prefix, t.base_model_prefix)

    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]
    if len(renamings) + len(converters) != len(mapping):
        return None
    out = [plain(t) for t in renamings], [plain(t.reverse_transform()) for t in renamings[::-1]], \
        [plain(t) for t in converters]
    if any(t is None for part in out for t in part):
        return None
    return Conversions(*out)


def transformers_version() -> str:
    return metadata.version("transformers")


@lru_cache(maxsize=1)
def _data() -> dict:
    try:
        return json.loads(DATA.read_text())
    except (OSError, ValueError):
        return {"transformers": None, "model_types": {}}


def conversions(model_type: str | None) -> Conversions:
    """The conversions transformers applies on load to checkpoints of `model_type`: from the pinned data
    when it has an entry for it (and the installed transformers is the one it was written from), else
    from transformers itself."""
    data = _data()
    entry = data["model_types"].get(model_type, False)
    if entry is not False and entry is not None and data.get("transformers") == transformers_version():
        return Conversions(*([Transform.from_dict(t) for t in entry[part]]
                             for part in ("renamings", "reverse", "converters")))
    return _live(model_type)


def _live(model_type: str | None) -> Conversions:
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming

    mapping = get_checkpoint_conversion_mapping(model_type) or []
    as_data = from_transformers(mapping)
    if as_data is not None:
        return as_data
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [_LiveConverter(m) for m in mapping if isinstance(m, WeightConverter)]
    return Conversions(renamings, [m.reverse_transform() for m in renamings[::-1]], converters)


class _LiveConverter:
    """A transformers converter seen through `Transform`'s interface (`operations` as names and dims)."""

    def __init__(self, converter) -> None:
        self._c = converter
        self.kind = "converter"
        self.source_patterns = converter.source_patterns
        self.operations = [(type(op).__name__, getattr(op, "dim", None)) for op in converter.operations]

    def rename_source_key(self, key: str) -> tuple[str, str | None]:
        return self._c.rename_source_key(key)


def table(model_types) -> dict:
    """The data file's contents for `model_types`, from the installed transformers (`scripts/transformers_data.py`)."""
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping

    out = {}
    for t in sorted(set(model_types)):
        c = from_transformers(get_checkpoint_conversion_mapping(t) or [])
        out[t] = None if c is None else {part: [x.as_dict() for x in getattr(c, part)]
                                         for part in ("renamings", "reverse", "converters")}
    return {"transformers": transformers_version(), "model_types": out}
