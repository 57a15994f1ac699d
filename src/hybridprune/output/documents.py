"""Every JSON document hybridprune reads back, checked against its expected shape in one place.

A run directory, a token directory or a logit cache may come from someone else (an archive, a shared
disk), so what hybridprune wrote there earlier is read as untrusted input: `read_document` parses it
(refusing a link, a non-regular file, a huge file, a key given twice, nesting too deep) and checks it
against a `Shape`, and every fault becomes one `DocumentError` that names the file, the place in it,
what was expected and what to do. Names that a document gives for files are `Name`s: plain names
inside the directory, never `../x`, `/abs` or `a/b`; `inside` opens such a name without following a
link out of the directory.

Shapes are plain data:
- a type or a tuple of types (`int` never accepts `bool`; `float` accepts an `int`; floats must be finite);
- `{"key": shape, "key?": shape}`: an object with those keys (`?`: optional); other keys are allowed;
- `[shape]`: a list whose items have that shape; `Map(shape)`: an object of any keys with such values;
- `Name`, `NonNegative(int)`, `Finite`, `Number` (a measurement: an infinity too, never NaN),
  `OneOf(*values)`, `Optional(shape)`, `Any`.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any as _AnyType

#: A document hybridprune writes is small (a record, a manifest, a progress file); past this it is not ours.
MAX_BYTES = 64 << 20


class DocumentError(ValueError):
    """A JSON document read back is missing, malformed or of the wrong shape; the message says where and what to do."""


@dataclass(frozen=True)
class Map:
    values: object


@dataclass(frozen=True)
class Optional:
    shape: object


@dataclass(frozen=True)
class OneOf:
    values: tuple

    def __init__(self, *values):
        object.__setattr__(self, "values", values)


@dataclass(frozen=True)
class NonNegative:
    kind: type = int


class _Name:
    """A plain file name inside the directory: no separator, not `.`/`..`, not empty, no NUL."""

    def __repr__(self) -> str:
        return "Name"


class _Finite:
    def __repr__(self) -> str:
        return "Finite"


class _Any:
    def __repr__(self) -> str:
        return "Any"


class _Number:
    def __repr__(self) -> str:
        return "Number"


Name, Finite, Any, Number = _Name(), _Finite(), _Any(), _Number()


def is_plain_name(name: object) -> bool:
    """Whether `name` is a plain file name (no directory part, not `.`/`..`, no NUL)."""
    return (isinstance(name, str) and name not in ("", ".", "..")
            and not any(c in name for c in "/\\\0") and len(name.encode("utf-8", "surrogatepass")) <= 255)


def _where(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the document"


def _describe(shape) -> str:
    if isinstance(shape, type):
        return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
                list: "a list", dict: "an object"}.get(shape, shape.__name__)
    if isinstance(shape, tuple):
        return " or ".join(_describe(s) for s in shape)
    if isinstance(shape, dict):
        return "an object"
    if isinstance(shape, list):
        return f"a list (each item {_describe(shape[0])})" if shape else "a list"
    if isinstance(shape, Map):
        return "an object"
    if isinstance(shape, Optional):
        return f"{_describe(shape.shape)} or null"
    if isinstance(shape, OneOf):
        return "one of " + ", ".join(repr(v) for v in shape.values)
    if isinstance(shape, NonNegative):
        return f"a non-negative {'integer' if shape.kind is int else 'number'}"
    if shape is Name:
        return "a plain file name inside the directory"
    if shape is Finite:
        return "a finite number"
    if shape is Number:
        return "a number"
    return "anything"


def _short(value) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is(value, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, kind)


def problem(value, shape, path: tuple = ()) -> str | None:
    """The first way `value` departs from `shape` ("where: expected ..., got ..."), or None."""
    if shape is Any:
        return None
    if isinstance(shape, Optional):
        return None if value is None else problem(value, shape.shape, path)
    if isinstance(shape, (type, tuple)):
        kinds = shape if isinstance(shape, tuple) else (shape,)
        ok = any(_is(value, k) for k in kinds)
    elif isinstance(shape, dict):
        if not isinstance(value, dict):
            ok = False
        else:
            for key, sub in shape.items():
                name, optional = (key[:-1], True) if key.endswith("?") else (key, False)
                if name not in value:
                    if optional:
                        continue
                    return f"{_where((*path, name))}: missing (expected {_describe(sub)})"
                found = problem(value[name], sub, (*path, name))
                if found:
                    return found
            return None
    elif isinstance(shape, list):
        if not isinstance(value, list):
            ok = False
        else:
            for i, item in enumerate(value):
                found = problem(item, shape[0], (*path, i)) if shape else None
                if found:
                    return found
            return None
    elif isinstance(shape, Map):
        if not isinstance(value, dict):
            ok = False
        else:
            for key, item in value.items():
                found = problem(item, shape.values, (*path, key))
                if found:
                    return found
            return None
    elif isinstance(shape, OneOf):
        ok = any(value == v and type(value) is type(v) for v in shape.values)
    elif isinstance(shape, NonNegative):
        ok = _is(value, shape.kind) and value >= 0
    elif shape is Name:
        ok = is_plain_name(value)
    elif shape is Finite:
        ok = _is(value, float)
    elif shape is Number:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    else:  # pragma: no cover - a shape this module does not know is a programming error
        raise TypeError(f"unknown shape {shape!r}")
    return None if ok else f"{_where(path)}: expected {_describe(shape)}, got {_short(value)}"


def unique_keys(error: Callable[[str], Exception]) -> Callable[[list], dict]:
    """A `json.loads` `object_pairs_hook` that raises `error(key)` for an object naming a key twice
    (plain JSON keeps the last value silently). Every strict JSON reader of the project uses it."""

    def hook(pairs):
        out = {}
        for key, value in pairs:
            if key in out:
                raise error(key)
            out[key] = value
        return out

    return hook


_no_duplicate_keys = unique_keys(lambda key: DocumentError(f"the key {key!r} is given twice"))


def _no_constants(name: str):
    raise DocumentError(f"{name} is not a JSON number (hybridprune never writes it)")


def parse(text: str | bytes, where: str, fix: str, *, non_finite: bool = False) -> _AnyType:
    """Strict JSON: no NaN/Infinity (unless `non_finite`: measurements may be), no key twice, no nesting
    past Python's recursion limit."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys,
                          **({} if non_finite else {"parse_constant": _no_constants}))
    except DocumentError as exc:
        raise DocumentError(f"{where}: {exc}; {fix}") from None
    except RecursionError:
        raise DocumentError(f"{where}: nested too deeply to be a document hybridprune wrote; {fix}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DocumentError(f"{where}: not valid JSON ({exc}); {fix}") from None


def read_document(path: str | os.PathLike, shape, *, fix: str, what: str | None = None,
                  non_finite: bool = False) -> _AnyType:
    """The JSON document at `path`, checked against `shape`.

    `what` names the document in messages (default: its path); `fix` says what the user can do
    (rerun with --overwrite, delete the directory, ...). Refuses, with `DocumentError`: a missing
    file, a symbolic link, anything not a regular file, more than `MAX_BYTES`, invalid or non-strict
    JSON, and a value of another shape. `non_finite` accepts NaN and Infinity (as Python writes them),
    for documents of measurements that the reader checks itself.
    """
    path = Path(path)
    where = what or str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise DocumentError(f"{where}: missing; {fix}") from None
    except OSError as exc:
        if path.is_symlink():
            raise DocumentError(f"{where}: is a symbolic link, and hybridprune never writes one; {fix}") from None
        raise DocumentError(f"{where}: cannot be read ({exc.strerror or exc}); {fix}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DocumentError(f"{where}: is not a regular file; {fix}")
        if info.st_size > MAX_BYTES:
            raise DocumentError(f"{where}: is {info.st_size} bytes, far more than any document hybridprune "
                                f"writes; {fix}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_BYTES + 1)
    finally:
        os.close(fd)
    value = parse(data, where, fix, non_finite=non_finite)
    found = problem(value, shape)
    if found:
        raise DocumentError(f"{where}: {found}; {fix}")
    return value


def inside(directory: str | os.PathLike, name: object, *, what: str, fix: str) -> Path:
    """`directory / name` for a `name` read from a document: refused unless it is a plain name whose
    entry, if present, is no symbolic link (so neither `..`, an absolute path nor a link leads out)."""
    directory = Path(directory)
    if not is_plain_name(name):
        raise DocumentError(f"{what}: names {_short(name)}, which is not a plain file name inside {directory}; {fix}")
    path = directory / name
    if path.is_symlink():
        raise DocumentError(f"{what}: names {name!r}, a symbolic link in {directory}; hybridprune never writes "
                            f"one, and does not follow it; {fix}")
    return path


#: deeper than any recipe or plan needs (`rounds[0].distill.lr` is 3 levels); PyYAML builds trees recursively
YAML_MAX_DEPTH = 32


def yaml_problem(text: str) -> tuple[int, str] | None:
    """(line, what is wrong) for YAML `text` that nests past `YAML_MAX_DEPTH` or aliases a mapping or
    list (`<<` merges included); None when neither. Aliases of scalars stay allowed. Syntax errors are
    left to the loader that follows, which reports them with its own marks."""
    import yaml

    collections: set[str] = set()  # anchors of mappings and lists
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            line = event.start_mark.line + 1
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > YAML_MAX_DEPTH:
                    return line, f"nested more than {YAML_MAX_DEPTH} levels deep"
                if event.anchor is not None:
                    collections.add(event.anchor)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            elif isinstance(event, yaml.AliasEvent) and event.anchor in collections:
                return line, (f"*{event.anchor} repeats a mapping or list; aliases (or `<<` merges) of mappings "
                              "or lists are refused (nested ones expand exponentially): write the values out")
    except yaml.YAMLError:
        return None
    return None
