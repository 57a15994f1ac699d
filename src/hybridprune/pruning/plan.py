"""`Plan`: target sizes in the Minitron vocabulary. A field left out keeps its current size.

A plan enters from Python (`Plan(...)`), a `name=value,...` string, or a YAML/JSON file; every path
checks the same things before any weight is touched: known fields, each given once, whole numbers
(never a bool, a float or a string) for sizes, and a list of block indices for `drop_layers`.
"""

from __future__ import annotations

import json
import numbers
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from ..architectures import ATTENTION, MAMBA, MLP, MOE, Dims
from ..architectures.moe import valid_expert_counts
from ..output.documents import unique_keys, yaml_problem
from .plan_fields import suggestion


class PlanError(ValueError):
    """A plan that cannot be applied to this model; the message says what would work."""


INT_FIELDS = ("hidden_size", "ffn_hidden_size", "mamba_num_heads", "mamba_head_dim", "num_attention_heads",
              "num_moe_experts", "moe_ffn_hidden_size", "moe_shared_expert_intermediate_size",
              "linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim",
              "num_layers")
#: the plan fields that are widths of `Dims` (the same names)
WIDTH_FIELDS = tuple(f for f in INT_FIELDS if f != "num_layers")
_WHOLE = re.compile(r"[+-]?[0-9]{1,30}")  # longer is no size, and int() refuses over 4300 digits


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no `!!python` tags), refusing a mapping that gives a key twice:
    plain YAML keeps the last value silently, and a plan would then not be what the file seems to say."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges; the keys it brings may be overridden, as YAML says
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue  # the base class reports unhashable keys with their position
            if key in seen:
                raise PlanError(f"field {key!r} is given twice (lines {seen[key].start_mark.line + 1} "
                                f"and {key_node.start_mark.line + 1})")
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_unique_pairs = unique_keys(lambda key: PlanError(f"field {key!r} is given twice"))


def _as_int(name: str, value: Any) -> int:
    """A whole number: an `int` (not a `bool`, not a `float`, not a string: YAML's `true`, `128.5` and
    `"128"` are mistakes the user should hear about, not values to coerce)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    raise PlanError(f"{name} must be an integer (a whole number of units, e.g. {name}=128), got {value!r} "
                    f"({type(value).__name__})")


def _as_indices(value: Any) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)) and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        return tuple(int(v) for v in value)
    raise PlanError(f"drop_layers must be a list of block indices (e.g. drop_layers=3+7, or [3, 7] in a "
                    f"file), got {value!r} ({type(value).__name__})")


def _from_text(name: str, value: str) -> Any:
    """The typed value of one `name=value` entry of a plan string (left as text when it is not a
    number, so that the type check reports it)."""
    if name == "drop_layers":
        parts = [v for v in value.replace(";", " ").replace("+", " ").split() if v]
        return [int(p) for p in parts] if all(_WHOLE.fullmatch(p) for p in parts) else value
    return int(value) if _WHOLE.fullmatch(value) else value


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"


@dataclass(frozen=True)
class Plan:
    hidden_size: int | None = None
    ffn_hidden_size: int | None = None
    mamba_num_heads: int | None = None
    mamba_head_dim: int | None = None
    num_attention_heads: int | None = None
    num_moe_experts: int | None = None
    moe_ffn_hidden_size: int | None = None
    moe_shared_expert_intermediate_size: int | None = None
    #: Gated DeltaNet mixers: whole key-head groups, value heads (inside their group), key and value
    #: head channels
    linear_num_key_heads: int | None = None
    linear_num_value_heads: int | None = None
    linear_key_head_dim: int | None = None
    linear_value_head_dim: int | None = None
    num_layers: int | None = None
    drop_layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        """Check the types and signs here, so a Plan built in Python is as safe as a parsed one."""
        for name in INT_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            value = _as_int(name, value)
            if value < 1:
                raise PlanError(f"{name}={value}: a target size must be positive (an integer >= 1)")
            object.__setattr__(self, name, value)
        if self.drop_layers is not None:
            indices = _as_indices(self.drop_layers)
            negative = [i for i in indices if i < 0]
            if negative:
                raise PlanError(f"drop_layers {negative}: block indices start at 0")
            object.__setattr__(self, "drop_layers", indices)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Plan":
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise PlanError(f"a plan is a mapping of fields to sizes, got {type(d).__name__}")
        if isinstance(d.get("plan"), dict):  # hybridprune.json / summary.json keep the plan under "plan"
            d = d["plan"]
        d = {k: v for k, v in d.items() if v is not None}
        unknown = sorted(str(k) for k in d if k not in cls.field_names())
        if unknown:
            hints = [h for h in (suggestion(u, cls.field_names()) for u in unknown) if h]
            raise PlanError(f"unknown plan field(s) {unknown}{' (' + '; '.join(hints) + ')' if hints else ''}; "
                            f"valid fields: {', '.join(cls.field_names())}")
        out: dict[str, Any] = {}
        for name, value in d.items():
            out[name] = _as_indices(value) if name == "drop_layers" else _as_int(name, value)
        return cls(**out)

    @classmethod
    def from_string(cls, text: str) -> "Plan":
        """`"hidden_size=3072,mamba_num_heads=112"`; drop_layers as `drop_layers=3+7+9`."""
        d: dict[str, str] = {}
        for part in (p.strip() for p in str(text).split(",")):
            if not part:
                continue
            if "=" not in part:
                raise PlanError(f"plan entry {part!r} is not of the form name=value "
                                "(e.g. hidden_size=3072,drop_layers=3+7), nor a .yaml/.yml/.json file")
            name, value = (s.strip() for s in part.split("=", 1))
            if name in d:
                raise PlanError(f"field {name!r} is given twice ({name}={d[name]} and {name}={value})")
            d[name] = value
        return cls.from_dict({k: _from_text(k, v) for k, v in d.items()})

    @classmethod
    def from_file(cls, path: str | Path) -> "Plan":
        """A plan from a YAML (safe loading, duplicate keys refused) or JSON file; errors name the file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PlanError(f"cannot read the plan file {path}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                found = yaml_problem(text)  # before a tree is built: an alias bomb never expands
                if found:
                    raise PlanError(f"line {found[0]}: {found[1]}")
                data = yaml.load(text, Loader=_UniqueKeyLoader)
            else:
                data = json.loads(text, object_pairs_hook=_unique_pairs)
        except yaml.YAMLError as exc:
            raise PlanError(f"plan file {path} is not valid YAML: {_yaml_problem(exc)}") from None
        except json.JSONDecodeError as exc:
            raise PlanError(f"plan file {path} is not valid JSON: {exc}") from None
        except PlanError as exc:
            raise PlanError(f"plan file {path}: {exc}") from None
        except (RecursionError, ValueError) as exc:  # pathological nesting, huge numbers
            raise PlanError(f"plan file {path} cannot be read as a plan: {exc}") from None
        if data is None:
            raise PlanError(f"plan file {path} is empty; write one field per line, e.g. 'hidden_size: 3072'")
        if not isinstance(data, dict):
            raise PlanError(f"plan file {path} must hold a mapping of plan fields (e.g. 'hidden_size: 3072'), "
                            f"not a {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except PlanError as exc:
            raise PlanError(f"plan file {path}: {exc}") from None

    @classmethod
    def parse(cls, spec: "str | Path | dict | Plan") -> "Plan":
        """A Plan from a Plan, a dict, a YAML/JSON file path, or a `a=1,b=2` string."""
        if isinstance(spec, Plan):
            return spec
        if isinstance(spec, dict):
            return cls.from_dict(spec)
        if not isinstance(spec, (str, Path)):
            raise PlanError(f"a plan is a Plan, a dict, a file path or a 'name=value,...' string, "
                            f"got {type(spec).__name__}")
        p = Path(spec)
        if p.suffix.lower() in (".yaml", ".yml", ".json"):
            try:
                exists = p.is_file()
            except (OSError, ValueError) as exc:  # a name too long for the file system, a NUL byte
                raise PlanError(f"plan file {str(p)[:80]!r}... cannot be opened: {exc}") from None
            if exists:
                return cls.from_file(p)
            if "=" not in str(spec):
                raise PlanError(f"plan file {p} does not exist")
        return cls.from_string(str(spec))

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if v is not None}
        if "drop_layers" in d:
            d["drop_layers"] = list(d["drop_layers"])
        return d

    def __str__(self) -> str:
        return ",".join(f"{k}={'+'.join(map(str, v)) if isinstance(v, list) else v}"
                        for k, v in self.to_dict().items()) or "(keep everything)"

    def _validate_experts(self, dims: Dims) -> None:
        """Routing constraints: every routing group keeps the same number of experts (experts never
        move between groups), and a token must still find `num_experts_per_tok` experts in the
        `topk_group` groups it may use."""
        g, k = dims.moe_n_group, dims.moe_top_k
        valid = valid_expert_counts(dims)
        if self.num_moe_experts % g or self.num_moe_experts not in valid:
            why = (f"is not a multiple of n_group={g}: every routing group must keep the same number of experts"
                   if self.num_moe_experts % g else
                   f"leaves too few experts for num_experts_per_tok={k} (tokens choose from topk_group="
                   f"{dims.moe_topk_group} of {g} groups)")
            raise PlanError(f"num_moe_experts={self.num_moe_experts} {why}. Valid values: {valid}")

    # ---- validation --------------------------------------------------------------------------
    def target_dims(self, dims: Dims, kept_blocks: list[int]) -> Dims:
        """The dimensions after pruning (depth given by `kept_blocks`)."""
        kinds = tuple(dims.block_kinds[i] for i in kept_blocks)
        changes: dict[str, Any] = {"block_kinds": kinds}
        for name in WIDTH_FIELDS:
            value = getattr(self, name)
            if value is not None:
                changes[name] = value
        if self.linear_num_key_heads is not None and self.linear_num_value_heads is None:
            # a key head leaves with its value heads
            changes["linear_num_value_heads"] = (
                self.linear_num_key_heads * dims.linear_num_value_heads // dims.linear_num_key_heads)
        return dims.replace(**changes)

    def _validate_gdn(self, dims: Dims) -> None:
        """Value heads stay under their key head and every key head keeps the same number of them:
        `linear_num_value_heads` is a multiple of the kept key heads, at most their original groups."""
        hk, hv = dims.linear_num_key_heads, dims.linear_num_value_heads
        per = hv // hk
        keys = self.linear_num_key_heads or hk
        if self.linear_num_value_heads is None:
            return
        valid = list(range(keys, keys * per + 1, keys))
        if self.linear_num_value_heads % keys or self.linear_num_value_heads > keys * per:
            why = (f"is not a multiple of linear_num_key_heads={keys}: every key head must keep the same number of "
                   "value heads" if self.linear_num_value_heads % keys else
                   f"is more than the {keys} kept key head(s) hold ({per} value heads each)")
            raise PlanError(f"linear_num_value_heads={self.linear_num_value_heads} {why}. Valid values: {valid}")

    def validate(self, dims: Dims) -> None:
        """Raise PlanError naming the valid values if this plan cannot apply to `dims`.

        A plan is checked once per model: the plan is frozen, so the dims it passed are remembered and
        the guards every entry point keeps (the command line, `prune`, `plan_selection`, `select`) cost
        nothing after the first."""
        if self.__dict__.get("_valid_for") == dims:
            return
        self._check(dims)
        object.__setattr__(self, "_valid_for", dims)

    def _check(self, dims: Dims) -> None:
        axes = {
            "hidden_size": (dims.hidden_size, None),
            "ffn_hidden_size": (dims.ffn_hidden_size, MLP),
            "mamba_num_heads": (dims.mamba_num_heads, MAMBA),
            "mamba_head_dim": (dims.mamba_head_dim, MAMBA),
            "num_attention_heads": (dims.num_attention_heads, ATTENTION),
            "num_moe_experts": (dims.num_moe_experts, MOE),
            "moe_ffn_hidden_size": (dims.moe_ffn_hidden_size, MOE),
            "moe_shared_expert_intermediate_size": (dims.moe_shared_expert_intermediate_size, "shared-expert MoE"),
            "linear_num_key_heads": (dims.linear_num_key_heads, "Gated DeltaNet"),
            "linear_num_value_heads": (dims.linear_num_value_heads, "Gated DeltaNet"),
            "linear_key_head_dim": (dims.linear_key_head_dim, "Gated DeltaNet"),
            "linear_value_head_dim": (dims.linear_value_head_dim, "Gated DeltaNet"),
            "num_layers": (dims.num_layers, None),
        }
        for name, (current, kind) in axes.items():
            value = getattr(self, name)
            if value is None:
                continue
            if current is None:
                settable = [n for n, (size, _) in axes.items() if size is not None] + ["drop_layers"]
                raise PlanError(f"{name}: this architecture has no {kind} blocks, so it cannot be set; "
                                f"the fields this model can set: {', '.join(settable)}")
            if value <= 0:
                raise PlanError(f"{name}={value}: a target must be positive (1..{current})")
            if value > current:
                raise PlanError(
                    f"{name}={value} is larger than the current size {current}; pruning only shrinks"
                )
        if self.mamba_num_heads is not None and self.mamba_num_heads % dims.mamba_n_groups:
            g = dims.mamba_n_groups
            valid = list(range(g, dims.mamba_num_heads + 1, g))
            raise PlanError(
                f"mamba_num_heads={self.mamba_num_heads} is not a multiple of n_groups={g}: every group "
                f"must keep the same number of heads. Valid values: {valid}"
            )
        if self.num_attention_heads is not None and self.num_attention_heads % dims.num_key_value_heads:
            kv = dims.num_key_value_heads
            valid = list(range(kv, dims.num_attention_heads + 1, kv))
            raise PlanError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={kv}: every KV group keeps the same number of query heads. "
                f"Valid values: {valid}"
            )
        if self.num_moe_experts is not None:
            self._validate_experts(dims)
        if dims.linear_num_key_heads is not None:
            self._validate_gdn(dims)
        if self.drop_layers is not None:
            if self.num_layers is not None:
                raise PlanError("give either num_layers or drop_layers, not both")
            bad = [i for i in self.drop_layers if not 0 <= i < dims.num_layers]
            if bad:
                raise PlanError(f"drop_layers {bad} out of range: blocks are 0..{dims.num_layers - 1}")
            if len(set(self.drop_layers)) != len(self.drop_layers):
                raise PlanError(f"drop_layers {list(self.drop_layers)} lists a block twice")
            if len(self.drop_layers) >= dims.num_layers:
                raise PlanError("drop_layers would remove every block")
