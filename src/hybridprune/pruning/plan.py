"""`Plan`: target sizes in the Minitron vocabulary. A field left out keeps its current size."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..architectures import ATTENTION, MAMBA, MLP, Dims


class PlanError(ValueError):
    """A plan that cannot be applied to this model; the message says what would work."""


@dataclass(frozen=True)
class Plan:
    hidden_size: int | None = None
    ffn_hidden_size: int | None = None
    mamba_num_heads: int | None = None
    mamba_head_dim: int | None = None
    num_attention_heads: int | None = None
    num_layers: int | None = None
    drop_layers: tuple[int, ...] | None = None

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Plan":
        d = {k: v for k, v in (d or {}).items() if v is not None}
        d = d.get("plan", d) if isinstance(d.get("plan"), dict) else d
        unknown = sorted(set(d) - set(cls.field_names()))
        if unknown:
            raise PlanError(f"unknown plan field(s) {unknown}; valid fields: {', '.join(cls.field_names())}")
        out = {}
        for name, value in d.items():
            if name == "drop_layers":
                if isinstance(value, str):
                    value = [v for v in value.replace(";", " ").replace("+", " ").split() if v]
                try:
                    out[name] = tuple(int(v) for v in value)
                except (TypeError, ValueError):
                    raise PlanError(f"drop_layers must be a list of block indices, got {value!r}") from None
            else:
                try:
                    out[name] = int(value)
                    if float(value) != out[name]:
                        raise ValueError
                except (TypeError, ValueError):
                    raise PlanError(f"{name} must be an integer, got {value!r}") from None
        return cls(**out)

    @classmethod
    def from_string(cls, text: str) -> "Plan":
        """`"hidden_size=3072,mamba_num_heads=112"`; drop_layers as `drop_layers=3+7+9`."""
        d = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            if "=" not in part:
                raise PlanError(f"plan entry {part!r} is not of the form name=value")
            name, value = (s.strip() for s in part.split("=", 1))
            d[name] = value
        return cls.from_dict(d)

    @classmethod
    def from_file(cls, path: str | Path) -> "Plan":
        path = Path(path)
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise PlanError(f"{path} must hold a mapping of plan fields")
        return cls.from_dict(data)

    @classmethod
    def parse(cls, spec: "str | Path | dict | Plan") -> "Plan":
        """A Plan from a Plan, a dict, a YAML/JSON file path, or a `a=1,b=2` string."""
        if isinstance(spec, Plan):
            return spec
        if isinstance(spec, dict):
            return cls.from_dict(spec)
        p = Path(spec)
        if p.suffix in (".yaml", ".yml", ".json"):
            if not p.is_file():
                raise PlanError(f"plan file {p} does not exist")
            return cls.from_file(p)
        return cls.from_string(str(spec))

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if v is not None}
        if "drop_layers" in d:
            d["drop_layers"] = list(d["drop_layers"])
        return d

    def __str__(self) -> str:
        return ",".join(f"{k}={'+'.join(map(str, v)) if isinstance(v, list) else v}"
                        for k, v in self.to_dict().items()) or "(keep everything)"

    # ---- validation --------------------------------------------------------------------------
    def target_dims(self, dims: Dims, kept_blocks: list[int]) -> Dims:
        """The dimensions after pruning (depth given by `kept_blocks`)."""
        kinds = tuple(dims.block_kinds[i] for i in kept_blocks)
        changes: dict[str, Any] = {"block_kinds": kinds}
        for name, dim_name in (
            ("hidden_size", "hidden_size"),
            ("ffn_hidden_size", "ffn_hidden_size"),
            ("mamba_num_heads", "mamba_num_heads"),
            ("mamba_head_dim", "mamba_head_dim"),
            ("num_attention_heads", "num_attention_heads"),
        ):
            value = getattr(self, name)
            if value is not None:
                changes[dim_name] = value
        return dims.replace(**changes)

    def validate(self, dims: Dims) -> None:
        """Raise PlanError naming the valid values if this plan cannot apply to `dims`."""
        axes = {
            "hidden_size": (dims.hidden_size, None),
            "ffn_hidden_size": (dims.ffn_hidden_size, MLP),
            "mamba_num_heads": (dims.mamba_num_heads, MAMBA),
            "mamba_head_dim": (dims.mamba_head_dim, MAMBA),
            "num_attention_heads": (dims.num_attention_heads, ATTENTION),
            "num_layers": (dims.num_layers, None),
        }
        for name, (current, kind) in axes.items():
            value = getattr(self, name)
            if value is None:
                continue
            if current is None:
                raise PlanError(f"{name}: this architecture has no {kind} blocks, so it cannot be set")
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
