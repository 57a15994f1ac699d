"""Per model type config defaults and aliases, as data pinned to the transformers version.

Reading a checkpoint's config through `AutoConfig` imports transformers' config machinery and torch
(more than a second), which dominated a streaming prune of an ordinary checkpoint. `config_view` reads
config.json itself; what it needs of transformers' config class is here: every dataclass field's
default, the `attribute_map` aliases and the names the class computes as properties (the base
class's too), the generation settings the base class drops on load and the legacy layer-type names, written by
`scripts/transformers_data.py` into `config_defaults.json` (`tests/test_transformers_data.py` fails
when the installed transformers gives other data). What a class computes in `__post_init__` is code,
not data: the adapter's `config_view_derive` (see `config_view`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("config_defaults.json")
_TUPLE = "__tuple__"
_FLOAT = "__float__"


def encode(value: Any) -> Any:
    """A default as JSON that keeps tuples and infinities apart from lists and strings."""
    if isinstance(value, tuple):
        return {_TUPLE: [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT: repr(value)}
    return value


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {_TUPLE}:
            return tuple(decode(v) for v in value[_TUPLE])
        if set(value) == {_FLOAT}:
            return float(value[_FLOAT])
        return {k: decode(v) for k, v in value.items()}
    return value


def _plain(value: Any) -> bool:
    """Whether `value` is data the JSON file can hold exactly (no config objects, dtypes or callables)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


_SIMPLE = {int: "int", float: "float", bool: "bool", str: "str", list: "list", dict: "dict", tuple: "tuple"}


def type_spec(annotation: Any) -> Any:
    """A field's annotation as data for `config_view.type_ok` (the strict dataclass's type check), or
    None when it holds a type the check does not know."""
    import collections.abc
    import types
    import typing

    if annotation is Any or isinstance(annotation, (str, typing.ForwardRef)):
        return "any"  # the strict check skips these too
    if annotation is None or annotation is type(None):
        return "none"
    if annotation in _SIMPLE:
        return _SIMPLE[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        parts = [type_spec(a) for a in args]
        return None if None in parts else {"union": parts}
    if origin is typing.Literal:
        return {"literal": list(args)} if _plain(list(args)) else None
    if origin in (list, collections.abc.Sequence):
        item = type_spec(args[0]) if args else "any"
        return None if item is None else {"list" if origin is list else "sequence": item}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = type_spec(args[0])
            return None if item is None else {"tuple_of": item}
        parts = [type_spec(a) for a in args]
        return None if None in parts else {"tuple": parts}
    if origin is dict:
        parts = [type_spec(a) for a in args] if args else ["any", "any"]
        return None if None in parts else {"dict": parts}
    return None


def class_entry(config_class) -> dict | None:
    """The data of one config class, or None when a default is not plain data (a sub-config object) or
    an annotation is not one the view checks."""
    defaults, types_ = {}, {}
    for f in dataclasses.fields(config_class):
        spec = type_spec(f.type)  # what the strict dataclass checks (a string annotation: nothing)
        if spec is None:
            return None
        types_[f.name] = spec
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = None
        if not _plain(value):
            return None
        defaults[f.name] = encode(value)
    properties = sorted(name for klass in config_class.__mro__ if klass.__module__.startswith("transformers.models.")
                        for name, v in vars(klass).items() if isinstance(v, property))
    return {"class": config_class.__name__, "defaults": defaults, "types": types_,
            "attribute_map": dict(getattr(config_class, "attribute_map", {})), "properties": properties,
            "sub_configs": sorted(getattr(config_class, "sub_configs", {}) or {})}


def table(model_types) -> dict:
    """The data file's contents for `model_types`, from the installed transformers."""
    from transformers import AutoConfig, PreTrainedConfig
    from transformers.configuration_utils import _LEGACY_LAYER_TYPE_REMAP
    from transformers.generation.configuration_utils import GenerationConfig

    out = {}
    for t in sorted(set(model_types)):
        try:
            config_class = type(AutoConfig.for_model(t))
        except (KeyError, ValueError):
            out[t] = None
            continue
        out[t] = class_entry(config_class)
    base = sorted(name for klass in PreTrainedConfig.__mro__ for name, v in vars(klass).items()
                  if isinstance(v, property))
    return {"transformers": metadata.version("transformers"), "model_types": out, "base_properties": base,
            "generation_params": sorted(GenerationConfig._get_default_generation_params()),
            "legacy_layer_types": dict(_LEGACY_LAYER_TYPE_REMAP)}


_EMPTY = {"model_types": {}, "generation_params": [], "base_properties": [], "legacy_layer_types": {}}


@lru_cache(maxsize=1)
def data() -> dict:
    """The data file, or an empty table when it is missing or written by another transformers version."""
    try:
        doc = json.loads(DATA.read_text())
    except (OSError, ValueError):
        return _EMPTY
    if doc.get("transformers") != metadata.version("transformers"):
        return _EMPTY
    return doc


def entry(model_type: str) -> dict | None:
    """The data of `model_type`'s config class, or None when there is none for this transformers version."""
    return data()["model_types"].get(model_type)
