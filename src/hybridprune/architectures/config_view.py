"""A transformers-free view of a checkpoint's config.json, for the streaming prune.

The streaming prune reads sizes from the config (the adapter's `dims`, its checks and rules) and writes a
pruned config.json; it never runs the model, so importing transformers' config classes (and torch with
them) was most of its fixed cost. `ConfigView` gives every attribute the value transformers' config class
gives: the class's field defaults and `attribute_map` aliases come from data pinned to the transformers
version (`config_data`), and what the class computes in `__post_init__` (legacy field names, a layer
pattern string read as a list, properties) from the adapter's `config_view_derive`, written next to the
adapter's other config knowledge (`config_read` pairs a config.json with its adapter's rules).
`tests/test_config_view.py` holds it to transformers' own config for
every family's test configs.

A model type whose adapter has no derive function, or a config.json with fields the view does not
emulate (rope settings, sub-configs, quantization), is not viewed: `config_read.read_config` loads it
with transformers, so the view is only used where it is known to be exact.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar

from .config_data import data, decode, entry

#: config.json keys whose handling in transformers the view does not emulate: a config holding one is
#: read by transformers (rope settings are standardised, sub-configs and quantization are objects)
UNVIEWED = ("rope_theta", "rope_scaling", "rope_parameters", "partial_rotary_factor", "quantization_config",
            "per_layer_config", "text_config", "vision_config", "sub_configs", "auto_map_trust")
#: keys transformers' base config consumes on load without keeping them as attributes
_CONSUMED = ("name_or_path", "_commit_hash", "attn_implementation", "experts_implementation", "torch_dtype",
             "transformers_version", "_attn_implementation_internal", "_experts_implementation_internal")
#: names the base config class computes that the view computes too (other computed names in a
#: config.json make it unviewed: transformers' reading of them is not emulated)
_BASE_PROPERTIES = {"torch_dtype": lambda a: a.get("dtype"), "num_labels": lambda a: len(a["id2label"])}
_HANDLED = ("torch_dtype", "num_labels", "output_attentions")


def legacy_layer_type(name: str) -> str:
    """A layer-type name as transformers reads it (`remap_legacy_layer_types`: "mamba" -> "linear_attention"),
    from the pinned data, or from transformers itself when the installed version is not the pinned one."""
    if not data()["model_types"]:
        from transformers.configuration_utils import remap_legacy_layer_types

        return remap_legacy_layer_types(layer_types=[name])[0]
    return data()["legacy_layer_types"].get(name, name)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one per adapter
class ViewRules:
    """What one config class computes, as the adapter writes it for the view.

    `post_init(attrs, extra)`: the class's own `__post_init__` on the field values `attrs` (defaults
    overlaid with config.json's fields) and the other keys `extra`, popping the ones it consumes;
    `properties`: each name the class computes on read, from the attributes; `valid(attrs)`: the
    class's own validators (`validate_*`), False where transformers would refuse the config."""

    post_init: Callable[[dict, dict], None] | None = None
    properties: dict[str, Callable[[dict], Any]] = field(default_factory=dict)
    valid: Callable[[dict], bool] | None = None


_SIMPLE = {"int": int, "float": float, "bool": bool, "str": str, "list": list, "dict": dict, "tuple": tuple}


def type_ok(value: Any, spec: Any) -> bool:
    """Whether `value` passes the strict dataclass's check of a field annotated as `spec` (`config_data.type_spec`)."""
    if spec == "any":
        return True
    if spec == "none":
        return value is None
    if isinstance(spec, str):
        return isinstance(value, _SIMPLE[spec]) and not (spec == "int" and isinstance(value, bool))
    (kind, arg), = spec.items()
    if kind == "union":
        return any(type_ok(value, s) for s in arg)
    if kind == "literal":
        same = [a for a in arg if isinstance(a, bool) == isinstance(value, bool)]
        return value in same
    if kind in ("list", "sequence", "tuple_of"):
        container = {"list": list, "sequence": (list, tuple, str), "tuple_of": tuple}[kind]
        return isinstance(value, container) and all(type_ok(v, arg) for v in value)
    if kind == "tuple":
        return isinstance(value, tuple) and len(value) == len(arg) and all(map(type_ok, value, arg))
    if kind == "dict":
        return isinstance(value, dict) and all(type_ok(k, arg[0]) and type_ok(v, arg[1]) for k, v in value.items())
    return False


def _typed(attrs: dict, types: dict) -> bool:
    return all(type_ok(attrs[name], spec) for name, spec in types.items() if name in attrs)


class ConfigView:
    """A config's attributes as transformers' config class gives them, without transformers.

    Quacks like the config object for what the adapters read and for `make_config` (`copy.deepcopy`,
    attribute assignment, `to_dict` and `type(config).from_dict`): each model type gets its own subclass
    (`view_class`) holding the class's rules and aliases, as each has its own transformers class."""

    rules: ClassVar[ViewRules] = ViewRules()
    aliases: ClassVar[dict[str, str]] = {}

    #: the model type of a subclass (`view_class`)
    default_type: ClassVar[str | None] = None

    def __init__(self, model_type: str | None = None, attrs: dict[str, Any] | None = None) -> None:
        if attrs is None:  # the class's defaults, as `ConfigClass()` gives them
            model_type, attrs = self.default_type, view_of({"model_type": self.default_type}, self.rules)._attrs
        object.__setattr__(self, "model_type", model_type)
        object.__setattr__(self, "_attrs", attrs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        attrs = self.__dict__["_attrs"]
        name = self.aliases.get(name, name)
        if name in attrs:
            return attrs[name]
        if name in self.rules.properties:
            return self.rules.properties[name](attrs)
        if name in _BASE_PROPERTIES:
            return _BASE_PROPERTIES[name](attrs)
        raise AttributeError(f"{self.model_type} config has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "dtype" and value is not None and not isinstance(value, str):
            value = str(value).removeprefix("torch.")  # what save_pretrained writes of a torch dtype
        name = self.aliases.get(name, name)
        if name in self.rules.properties and name not in self._attrs:
            return  # a computed name (e.g. num_hidden_layers of a layer list): its setter ignores the value
        self._attrs[name] = value

    def __deepcopy__(self, memo) -> ConfigView:
        return type(self)(self.model_type, copy.deepcopy(self._attrs, memo))

    def to_dict(self) -> dict[str, Any]:
        """The fields `to_dict` of transformers' config gives (less `transformers_version`)."""
        return {**copy.deepcopy(self._attrs), "model_type": self.model_type}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]):
        """The config `raw` describes: a view, or (where the view cannot be exact, e.g. a config transformers
        refuses) transformers' own class's `from_dict`, which names what is wrong."""
        view = view_of(raw, cls.rules)
        if view is not None:
            return view
        from transformers import AutoConfig

        return type(AutoConfig.for_model(raw["model_type"])).from_dict(raw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._attrs})"


@cache
def view_class(model_type: str, rules: ViewRules) -> type[ConfigView]:
    """The view class of one model type (as transformers has one config class per type)."""
    return type(f"{model_type}_view", (ConfigView,), {"rules": rules, "default_type": model_type,
                                                      "aliases": dict(entry(model_type)["attribute_map"])})


def view_of(raw: dict[str, Any], rules: ViewRules | None) -> ConfigView | None:
    """`raw` (a config.json dict) as transformers' config class reads it, given the model type's `rules`
    (the adapter's), or None where the view cannot be exact (no data or rules for its model type, or keys
    the view does not emulate)."""
    raw = decode(raw)  # {"__float__": "Infinity"} tags as transformers reads them
    model_type = raw.get("model_type")
    spec = entry(model_type) if isinstance(model_type, str) else None
    if rules is None or spec is None or spec["sub_configs"] or any(k in raw for k in UNVIEWED):
        return None
    if "rope_parameters" in spec["defaults"]:
        return None  # transformers standardises rope settings on load, which the view does not emulate
    if set(spec["properties"]) - set(rules.properties):
        return None  # a computed name the adapter does not compute for the view
    computed = (set(data()["base_properties"]) - set(_HANDLED)) | (set(spec["properties"]) - set(rules.properties))
    if any(k in computed or k.startswith("_") or k == "name_or_path" for k in raw):
        return None  # private and computed names transformers sets from the loading itself
    aliases = spec["attribute_map"]
    attrs = {k: decode(v) for k, v in spec["defaults"].items()}
    extra = {}
    for key, value in raw.items():
        if key == "model_type":
            continue
        (attrs if key in attrs else extra)[key] = copy.deepcopy(value)
    # transformers checks every field as it is set (config.json's values first), and refuses a config that
    # fails: such a config is left to transformers, which names what is wrong
    if not _typed(attrs, spec["types"]):
        return None
    if rules.post_init is not None:
        try:
            rules.post_init(attrs, extra)
        except (KeyError, TypeError, ValueError):  # e.g. an unknown layer-pattern letter: transformers' error
            return None
    if any(k in spec["properties"] for k in extra):
        return None  # a computed name without a setter: transformers refuses to set it
    # transformers' base class, in its order: the dtype, labels, generation settings, then extra keys
    torch_dtype = extra.pop("torch_dtype", None)
    if torch_dtype is not None and attrs.get("dtype") is None:
        attrs["dtype"] = torch_dtype
    if attrs.get("id2label") is None:
        n = extra.get("num_labels", attrs.get("num_labels") or 2)
        attrs["id2label"] = {i: f"LABEL_{i}" for i in range(n)}
        attrs["label2id"] = {f"LABEL_{i}": i for i in range(n)}
    else:
        attrs["id2label"] = {int(k): v for k, v in attrs["id2label"].items()}
    extra.pop("num_labels", None)
    for key in (*data()["generation_params"], *_CONSUMED):
        extra.pop(key, None)
    attrs["output_attentions"] = extra.pop("output_attentions", False)
    for key, value in extra.items():
        attrs[aliases.get(key, key)] = value
    for name in ("layer_types", "mtp_layer_types"):
        target = aliases.get(name, name)
        if isinstance(attrs.get(target), list):
            attrs[target] = [legacy_layer_type(t) for t in attrs[target]]
    if not _typed(attrs, spec["types"]) or (rules.valid is not None and not rules.valid(attrs)):
        return None
    return view_class(model_type, rules)(model_type, attrs)
