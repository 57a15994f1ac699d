"""Write a pruned config in the style of its source's `config.json`.

Checkpoints on the Hub often predate the transformers version that reads them: Nemotron-H configs
describe their layers with a `hybrid_override_pattern` string ("M-M*-…"), use remote-code-era field
names (`mamba_n_groups`, `torch_dtype`, a `num_hidden_layers` that transformers derives), and carry an
`auto_map` naming their own modelling code. transformers reads all of that, but `save_pretrained`
writes its own field names only, and vLLM, the remote code and llama.cpp converters read the source's.
So the output keeps the source's file and changes only what pruning changed:

- a field the loaded config exposes under the name the source used (a legacy view such as
  `hybrid_override_pattern` or `num_hidden_layers`) gets its new value under that name;
- a changed field the source names (or names through the config's `attribute_map`) is updated there,
  a list of layer types in the source's words (legacy "mamba"/"attention" stay so);
- any other changed field is added under transformers' name, only if the file would not load right
  without it.

Everything else (auto_map, architectures, unknown keys) stays as the source wrote it; the code the
auto_map names is copied as files by the export and runs only with `--trust-remote-code`. The result
is checked: loading it gives exactly the pruned config. If no such file can be written in the
source's style, transformers' own style is written instead, with a warning.

A config read without transformers (`architectures.config_view.ConfigView`, the streaming prune's) is
written by the same rules with the view standing for transformers' class: it loads files as the class
does (held to it by tests/test_config_view.py), so the file is the same, byte for byte, and transformers
is not imported.

Where a family's serving engines need another spelling than transformers writes (a Nemotron-H layer
pattern string, Granite's legacy layer-type names), the adapter's `serving_config` rewrites the file
(`for_engines`), again only when it loads as the same config.
"""

from __future__ import annotations

import json
import math
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: fields whose value says which software wrote the file, not what the model is
_VOLATILE = ("transformers_version",)


def _normal(value: Any) -> Any:
    """A value as it reads back from JSON (tuples as lists, dtypes as names)."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if type(value).__module__ == "torch" and type(value).__name__ == "dtype":  # without importing torch
        return str(value).removeprefix("torch.")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _is_view(config_class) -> bool:
    from ..architectures.config_view import ConfigView

    return issubclass(config_class, ConfigView)


def _fields(config) -> dict[str, Any]:
    # private fields (`_name_or_path`, ...) are the loaded object's, never written to the file
    return {k: v for k, v in _normal(config.to_dict()).items() if k not in _VOLATILE and not k.startswith("_")}


@contextmanager
def _quiet(config_class=None):
    """transformers' notes on the source's own style ("num_hidden_layers is deprecated", "torch_dtype
    is deprecated") say nothing the user can act on here. A view has none to give."""
    if config_class is not None and _is_view(config_class):
        yield
        return
    import logging

    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _load(config_class, raw: dict[str, Any]):
    with _quiet(config_class):
        return config_class.from_dict(dict(raw))


def _read_json(config_class, path: Path) -> Any:
    """config.json as transformers' reader gives it: {"__float__": "Infinity"} tags decoded."""
    if not _is_view(config_class):
        return config_class._dict_from_json_file(path)
    from ..architectures.config_data import decode

    return decode(json.loads(path.read_text(encoding="utf-8")))


def _encode_floats(config_class, obj: Any) -> Any:
    """`_encode_special_floats` of transformers' config: infinities and NaN as {"__float__": ...} tags."""
    if not _is_view(config_class):
        return config_class._encode_special_floats(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": "NaN" if math.isnan(obj) else "Infinity" if obj > 0 else "-Infinity"}
    if isinstance(obj, dict):
        return {k: _encode_floats(config_class, v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode_floats(config_class, v) for v in obj]
    return obj


def _in_source_vocabulary(value: Any, source_value: Any) -> Any:
    """A list of layer-type names in the words the source used: transformers reads legacy names
    ("mamba", "attention") as the new ones ("linear_attention", "full_attention") and writes the new."""
    if not (isinstance(value, list) and isinstance(source_value, list)
            and all(isinstance(x, str) for x in value + source_value)):
        return value
    from ..architectures.config_view import legacy_layer_type

    # transformers' own table of legacy names, as pinned data
    back = {legacy_layer_type(name): name for name in set(source_value)}
    return [back.get(x, x) for x in value]


def styled_config(new_config, source_raw: dict[str, Any]) -> dict[str, Any] | None:
    """`new_config` as a config.json dict in the style of `source_raw` (the source's config.json), or
    None when the source is of another model type or no file in its style loads as `new_config`."""
    if source_raw.get("model_type") != new_config.model_type:
        return None
    config_class = type(new_config)
    try:
        source_config = _load(config_class, source_raw)
        old = _fields(source_config)
    except Exception:  # noqa: BLE001 - a source this version cannot read: nothing to keep
        return None
    new = _fields(new_config)
    out = dict(source_raw)
    if "quantization_config" not in new:  # dequantised on load (gpt-oss's MXFP4): the weights are written unquantized
        out.pop("quantization_config", None)
    aliases: dict[str, list[str]] = {}
    for alias, field in getattr(config_class, "attribute_map", {}).items():
        aliases.setdefault(field, []).append(alias)

    # Names the source uses that the loaded config does not list: legacy views and aliases. A view that
    # pruning left as it was keeps the source's words (Gemma 3's `rope_scaling: null` views a per-layer-type
    # `rope_parameters` that `rope_theta` and `rope_local_base_freq` already give).
    for key in [k for k in source_raw if k not in old and k not in _VOLATILE]:
        try:
            with _quiet(config_class):
                value = _normal(getattr(new_config, key))
                before = _normal(getattr(source_config, key))
        except (AttributeError, TypeError, ValueError):
            continue  # an alias the config consumed: its field is checked below
        if value != before:
            out[key] = value
    for alias, field in _consumed_aliases(new_config).items():  # read on load as `field`'s value
        if alias in source_raw and field in new:
            out[alias] = new[field]
    pending = {}
    for key, value in new.items():
        if key in old and old[key] == value:
            continue
        named = [n for n in (key, *aliases.get(key, ())) if n in source_raw]
        for name in named:
            out[name] = _in_source_vocabulary(value, source_raw[name])
        if not named:
            pending[key] = value
    try:
        loaded = _fields(_load(config_class, out))
        out.update({k: v for k, v in pending.items() if loaded.get(k) != v})
        if _fields(_load(config_class, out)) == new:
            return out
    except Exception:  # noqa: BLE001 - the styled file does not load: fall back below
        pass
    return None


def _consumed_aliases(config) -> dict[str, str]:
    from ..architectures import UnsupportedArchitecture, get_adapter

    try:
        return get_adapter(config).config_aliases
    except UnsupportedArchitecture:
        return {}


def write_config(new_config, out_dir: str | Path, source: str | Path | None) -> None:
    """Write `new_config` as `out_dir/config.json`, in the style of `source/config.json` when the
    source is a checkpoint directory of the same model type (see the module docstring)."""
    out_dir = Path(out_dir)
    path = Path(source) / "config.json" if source is not None else None
    raw, tagged = None, False
    if path is not None and path.is_file():
        try:
            # transformers' reader: it decodes the {"__float__": "Infinity"} tags it writes
            raw = _read_json(type(new_config), path)
            tagged = '"__float__"' in path.read_text()
        except (OSError, ValueError):
            raw = None
    styled = styled_config(new_config, raw) if isinstance(raw, dict) else None
    if styled is None:
        if isinstance(raw, dict) and raw.get("model_type") == new_config.model_type:
            warnings.warn(f"the config could not be written in the style of {path}; it is written "
                          "with transformers' own field names", stacklevel=3)
        if _is_view(type(new_config)):  # transformers' own style is written by transformers' class
            new_config = _as_transformers(new_config)
        new_config.save_pretrained(out_dir)
        plain = type(new_config)._dict_from_json_file(out_dir / "config.json")
        served = for_engines(new_config, plain)
        if served is not plain:
            served = type(new_config)._encode_special_floats(served)
            (out_dir / "config.json").write_text(json.dumps(served, indent=2, sort_keys=True) + "\n")
        return
    styled = for_engines(new_config, styled)
    if tagged:  # infinities as the source wrote them: tagged, or bare as Python's json writes them
        styled = _encode_floats(type(new_config), styled)
    (out_dir / "config.json").write_text(json.dumps(styled, indent=2, sort_keys=True) + "\n")


def _as_transformers(view):
    """transformers' config of a view: its class loading the view's fields (the same config, as tested)."""
    from transformers import AutoConfig

    fields = view.to_dict()
    return type(AutoConfig.for_model(fields["model_type"])).from_dict(fields)


def for_engines(new_config, raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` (a config.json dict of `new_config`) as serving engines need to read it: the adapter's
    `serving_config` (e.g. Nemotron-H's layer pattern string, which llama.cpp's converter needs), kept
    only if it loads exactly as `raw` does; else `raw` itself."""
    from ..architectures import UnsupportedArchitecture, get_adapter

    try:
        adapter = get_adapter(new_config)
    except UnsupportedArchitecture:
        return raw
    out = adapter.serving_config(dict(raw), type(new_config))
    if out == raw:
        return raw
    try:
        inert = set(adapter.engine_only_fields)
        strip = lambda fields: {k: v for k, v in fields.items() if k not in inert}  # noqa: E731
        if strip(_fields(_load(type(new_config), out))) == strip(_fields(_load(type(new_config), raw))):
            return out
    except Exception:  # noqa: BLE001 - the engines' style does not load: keep the plain file
        pass
    return raw
