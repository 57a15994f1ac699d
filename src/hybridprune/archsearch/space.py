"""The search space: per-axis choices and the grid of candidate architectures.

Axes are the Plan's fields. Width axes take values between `(1 - max_width_pruning) × original` and
the original, in steps of a divisor; Mamba heads step in multiples of `n_groups` (every group keeps the
same number of heads) and attention heads in multiples of the KV heads (every KV group keeps the same
number of query heads). Gated DeltaNet value heads step in multiples of the key heads; a candidate that
drops key-head groups keeps at most their value heads (every kept key head serves the same number). Routed experts step in multiples of the routing groups and keep enough for
`num_experts_per_tok`; the widths the expert tensors are laid out by (expert FFN, and hidden unless
the experts work in a latent space) step in multiples of 8. Depth takes `num_layers` from the original down to
`(1 - max_depth_pruning) × original`, the dropped blocks being the least important by the depth scores.
An axis the architecture lacks (no MLP blocks, no attention) is absent; an axis in `skip` keeps its size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..architectures import ATTENTION, GDN, MAMBA, MLP, MOE, Dims
from ..architectures.base import unit_kinds
from ..architectures.moe import EXPERT_ALIGNMENT, expert_widths, valid_expert_counts
from ..pruning.plan import Plan, PlanError
from ..pruning.selection import blocks_to_keep

#: The searchable axes, in the order candidates are labelled.
AXES = ("num_layers", "hidden_size", "ffn_hidden_size", "mamba_num_heads", "mamba_head_dim", "num_attention_heads",
        "num_moe_experts", "moe_ffn_hidden_size", "moe_shared_expert_intermediate_size",
        "linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim")
#: Short labels for candidate keys and tables.
LABELS = {"num_layers": "L", "hidden_size": "h", "ffn_hidden_size": "f", "mamba_num_heads": "mh",
          "mamba_head_dim": "md", "num_attention_heads": "ah", "num_moe_experts": "e", "moe_ffn_hidden_size": "ef",
          "moe_shared_expert_intermediate_size": "es", "linear_num_key_heads": "gk", "linear_num_value_heads": "gv",
          "linear_key_head_dim": "gkd", "linear_value_head_dim": "gvd"}
#: The block kind an axis belongs to (None: every model has it).
AXIS_KIND = {"num_layers": None, "hidden_size": None, "ffn_hidden_size": MLP, "mamba_num_heads": MAMBA,
             "mamba_head_dim": MAMBA, "num_attention_heads": ATTENTION, "num_moe_experts": MOE,
             "moe_ffn_hidden_size": MOE, "moe_shared_expert_intermediate_size": MOE, "linear_num_key_heads": GDN,
             "linear_num_value_heads": GDN, "linear_key_head_dim": GDN, "linear_value_head_dim": GDN}
#: Largest divisors used when none is given (ModelOpt's defaults); "auto" shrinks them on small models.
DEFAULT_DIVISORS = {"hidden_size": 256, "ffn_hidden_size": 512, "mamba_head_dim": 8, "moe_ffn_hidden_size": 512,
                    "moe_shared_expert_intermediate_size": 512, "linear_key_head_dim": 8, "linear_value_head_dim": 8}


#: Short names of the axes, accepted wherever an axis is named (`search --skip`, `--divisors`, a recipe's
#: `search.skip` and `search.divisors`).
AXIS_ALIASES = {"hidden": "hidden_size", "ffn": "ffn_hidden_size", "mamba_heads": "mamba_num_heads",
                "heads": "mamba_num_heads", "head_dim": "mamba_head_dim", "attention_heads": "num_attention_heads",
                "depth": "num_layers", "layers": "num_layers"}


class SearchSpaceError(ValueError):
    """An invalid search-space setting; the message names the valid ones."""


def axis_spelling(name: str) -> str:
    """`name` as an axis is spelled (`ffn` -> `ffn_hidden_size`, `attention-heads` -> ...), unchecked."""
    name = name.strip().replace("-", "_")
    return AXIS_ALIASES.get(name, name)


def axis_name(name: str) -> str:
    """The axis `name` stands for (`ffn`, `attention-heads` and the Plan field names alike)."""
    name = axis_spelling(name)
    if name not in AXES:
        raise SearchSpaceError(f"unknown search axis {name!r}; use one of {', '.join(AXES)} "
                               f"(or {', '.join(AXIS_ALIASES)})")
    return name


def parse_divisors(value: str | Mapping[str, int] | None) -> dict[str, int]:
    """Per-axis steps from `'hidden_size=256,ffn=512'` or a mapping (axis names or their aliases)."""
    if value is None:
        return {}
    if isinstance(value, str):
        pairs = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            if "=" not in part:
                raise SearchSpaceError(f"divisors entry {part!r} is not axis=value, e.g. hidden_size=256")
            pairs.append(part.split("=", 1))
        if not pairs:
            raise SearchSpaceError(f"divisors {value!r} names no axis; give axis=value, e.g. hidden_size=256")
    else:
        pairs = list(value.items())
    out = {}
    for name, step in pairs:
        try:
            number = int(step) if isinstance(step, str) else step
        except ValueError:
            raise SearchSpaceError(f"the divisor of {name} must be a positive integer, got {step!r}") from None
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise SearchSpaceError(f"the divisor of {name} must be a positive integer, got {step!r}")
        out[axis_name(str(name))] = number
    return out


@dataclass(frozen=True)
class SearchSpace:
    """How the candidate grid is built.

    - `max_width_pruning`: the largest fraction any width axis may lose (0.4: keep >= 60%).
    - `max_depth_pruning`: the largest fraction of blocks that may be dropped.
    - `divisors`: per-axis step. Width axes default to "auto": ModelOpt's divisors (hidden 256, FFN 512,
      head dim 8), lowered to a power of two that still gives at least three choices on small models.
      `mamba_num_heads` steps in multiples of `n_groups` and `num_attention_heads` in multiples of the
      KV heads; a divisor given for them must be such a multiple. `num_layers` steps by 1 block.
    - `choices`: explicit values for an axis (each checked against the group constraints).
    - `skip`: axes that keep their original size.
    """

    max_width_pruning: float = 0.4
    max_depth_pruning: float = 0.2
    divisors: Mapping[str, int] = field(default_factory=dict)
    choices: Mapping[str, Sequence[int]] = field(default_factory=dict)
    skip: Sequence[str] = ()

    def __post_init__(self) -> None:
        for name in ("max_width_pruning", "max_depth_pruning"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise SearchSpaceError(f"{name} must be in [0, 1), got {value}")
        for what in (self.divisors, self.choices, self.skip):
            unknown = sorted(set(what) - set(AXES))
            if unknown:
                raise SearchSpaceError(f"unknown search axes {unknown}; the axes are {', '.join(AXES)}")
        for axis, d in self.divisors.items():
            if int(d) != d or d < 1:
                raise SearchSpaceError(f"the divisor of {axis} must be a positive integer, got {d}")

    def to_dict(self) -> dict[str, Any]:
        return {"max_width_pruning": self.max_width_pruning, "max_depth_pruning": self.max_depth_pruning,
                "divisors": dict(self.divisors), "choices": {k: list(v) for k, v in self.choices.items()},
                "skip": sorted(self.skip)}

    # ---- per-axis choices --------------------------------------------------------------------
    def axes_of(self, dims: Dims) -> list[str]:
        """The axes this architecture has (skipped ones included: they are fixed, not absent)."""
        out = []
        for axis in AXES:
            kind = AXIS_KIND[axis]
            if (kind is None or dims.has_kind(kind)) and original_value(axis, dims) is not None:
                out.append(axis)
        return out

    def _unit(self, axis: str, dims: Dims) -> int:
        """The step every value of `axis` must be a multiple of (group structure)."""
        if axis == "mamba_num_heads":
            return dims.mamba_n_groups
        if axis == "num_attention_heads":
            return dims.num_key_value_heads
        if axis == "num_moe_experts":
            return dims.moe_n_group
        if axis == "linear_num_value_heads":
            return dims.linear_num_key_heads
        if dims.has_kind(MOE) and axis in expert_widths(dims):
            return EXPERT_ALIGNMENT
        return 1

    def divisor(self, axis: str, dims: Dims) -> int:
        original = original_value(axis, dims)
        unit = self._unit(axis, dims)
        if axis in self.divisors:
            d = int(self.divisors[axis])
            if d % unit:
                raise SearchSpaceError(f"the divisor of {axis} must be a multiple of {unit} (group size), got {d}")
            return d
        if axis in DEFAULT_DIVISORS:
            room = original * self.max_width_pruning / 3
            auto = max(1, min(DEFAULT_DIVISORS[axis], 2 ** int(math.floor(math.log2(room))) if room >= 1 else 1))
            return auto if auto % unit == 0 else unit * math.ceil(auto / unit)
        return unit

    def axis_choices(self, dims: Dims, fixed: tuple[str, ...] = ()) -> dict[str, list[int]]:
        """Every axis of the architecture with its values, largest first (a skipped axis, or one the
        family cannot prune at all (`fixed`, the adapter's `fixed_axes`): original only)."""
        out = {}
        for axis in self.axes_of(dims):
            original = original_value(axis, dims)
            unit = self._unit(axis, dims)
            if axis in self.skip or axis in fixed:
                values = [original]
            elif axis in self.choices:
                values = sorted({int(v) for v in self.choices[axis]}, reverse=True)
                bad = [v for v in values if v < 1 or v > original or v % unit]
                if bad:
                    raise SearchSpaceError(
                        f"choices {bad} of {axis} are invalid: values must be in 1..{original} and multiples of {unit}"
                    )
            else:
                ratio = self.max_depth_pruning if axis == "num_layers" else self.max_width_pruning
                lower = max(1, math.ceil((1.0 - ratio) * original - 1e-9))
                step = self.divisor(axis, dims)
                values = sorted({v for v in range(step, original + 1, step) if v >= lower} | {original}, reverse=True)
            if axis == "num_moe_experts":  # a token must still find its experts in the groups it may use
                usable = set(valid_expert_counts(dims))
                values = [v for v in values if v in usable]
            out[axis] = values
        return out


def original_value(axis: str, dims: Dims) -> int:
    return dims.num_layers if axis == "num_layers" else getattr(dims, axis)


@dataclass(frozen=True)
class Candidate:
    """One architecture of the grid: its axis values, the blocks it keeps, and its dimensions."""

    values: Mapping[str, int]
    kept_blocks: tuple[int, ...]
    dims: Dims

    @property
    def key(self) -> str:
        return "-".join(f"{LABELS[a]}{self.values[a]}" for a in AXES if a in self.values)

    def plan(self, original: Dims) -> Plan:
        """The Plan that prunes `original` to this candidate; depth as an explicit `drop_layers`."""
        fields = {a: v for a, v in self.values.items() if a != "num_layers"}
        dropped = tuple(i for i in range(original.num_layers) if i not in self.kept_blocks)
        return Plan(**fields, drop_layers=dropped or None)


def depth_ranking(scores) -> Any:
    """The depth importance used to choose dropped blocks (KL divergence first, else Block Influence)."""
    if scores is None:
        return None
    return scores.depth_kld if scores.depth_kld is not None else scores.depth_bi


def _depth_kept(scores, n: int, dims: Dims, required_kinds: tuple[str, ...]) -> tuple[int, ...] | None:
    """The `n` blocks `prune(num_layers=n)` keeps: the most important by the depth scores, always with
    every layer depth cannot remove (`dims.fixed_layer_types`) and the best block of each kind in
    `required_kinds`; None when those alone exceed `n`."""
    try:
        return tuple(blocks_to_keep(Plan(num_layers=n), dims, scores, required_kinds))
    except PlanError:
        return None


def build_grid(dims: Dims, space: SearchSpace, scores=None, required_kinds: tuple[str, ...] = (),
               fixed_axes: tuple[str, ...] = ()) -> tuple[list[Candidate], dict[str, list[int]]]:
    """Every combination of the axis choices, with the axis values of kinds that depth pruning
    removed entirely pinned to their original size (so no two candidates are the same model).

    Depth candidates need depth scores; without them the depth axis keeps every block. They keep
    the blocks `prune(num_layers=n)` would keep, including the best block of each kind in
    `required_kinds` (`Adapter.required_kinds`), so every depth candidate can be built. Axes of
    `fixed_axes` (`Adapter.fixed_axes`) keep their original size.
    """
    choices = space.axis_choices(dims, fixed_axes)
    depth = depth_ranking(scores)
    if len(choices.get("num_layers", [])) > 1 and depth is None:
        choices["num_layers"] = [dims.num_layers]
    axes = list(choices)
    seen: set[tuple] = set()
    grid = []
    for combo in itertools.product(*(choices[a] for a in axes)):
        values = dict(zip(axes, combo))
        n = values["num_layers"]
        kept = tuple(range(dims.num_layers)) if n == dims.num_layers else _depth_kept(scores, n, dims, required_kinds)
        if kept is None:
            continue
        kinds = {k for i in kept for k in unit_kinds(dims.block_kinds[i])}
        for axis in axes:
            kind = AXIS_KIND[axis]
            if kind is not None and kind not in kinds:
                values[axis] = original_value(axis, dims)
        signature = tuple(values[a] for a in axes)
        if signature in seen or not _gdn_groups_fit(values, dims):
            continue
        seen.add(signature)
        widths = {a: v for a, v in values.items() if a != "num_layers"}
        target = Plan(**widths).target_dims(dims, list(kept))
        grid.append(Candidate(values=values, kept_blocks=kept, dims=target))
    return grid, choices


def _gdn_groups_fit(values: Mapping[str, int], dims: Dims) -> bool:
    """Whether the GDN value heads fit the kept key heads (the same number under each, at most the original)."""
    if "linear_num_key_heads" not in values:
        return True
    keys, heads = values["linear_num_key_heads"], values.get("linear_num_value_heads", dims.linear_num_value_heads)
    return heads % keys == 0 and heads // keys <= dims.linear_num_value_heads // dims.linear_num_key_heads
