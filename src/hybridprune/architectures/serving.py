"""Whether vLLM and llama.cpp can serve a model of given sizes, from the rules in engine_rules.py.

The API, for `prune`, `search` and the real-engine tests:

- `parse_engines("vllm,llama.cpp")` -> ("vllm", "llama.cpp"); `ENGINES`: the engines known;
- `has_model(model_type, engine)`: whether the engine has a model for the family at all;
- `rules_for(model_type, engine)`: the family's `EngineRule`s of that engine;
- `violations(model_type, dims, engines, tensor_parallel)`: the `Violation`s of a model's `Dims`;
- `config_violations(config, engine, tensor_parallel)`: the same from a Hugging Face config;
- `check_servable(adapter, dims, engines, tensor_parallel, original)`: raise `NotServable` (an
  `Unrepresentable`) naming the engine, the rule, its source and the nearest valid values;
- `serving_record(model_type, dims, tensor_parallel)`: what `hybridprune.json` records.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .base import Unrepresentable
from .dims import Dims
from .engine_rules import ENGINE_VERSIONS, LLAMA_CPP, RULES, TP, VLLM, EngineRule

#: the engines with rules, in the order they are reported
ENGINES: tuple[str, ...] = (VLLM, LLAMA_CPP)
_ALIASES = {"vllm": VLLM, "llama.cpp": LLAMA_CPP, "llamacpp": LLAMA_CPP, "llama-cpp": LLAMA_CPP,
            "llama_cpp": LLAMA_CPP}
#: plan axes the nearest-value search may move (the fields a plan can set)
_AXES = ("hidden_size", "ffn_hidden_size", "mamba_num_heads", "mamba_head_dim", "num_attention_heads",
         "num_moe_experts", "moe_ffn_hidden_size", "moe_shared_expert_intermediate_size", "linear_num_key_heads",
         "linear_num_value_heads",
         "linear_key_head_dim", "linear_value_head_dim")


class NotServable(Unrepresentable):
    """A plan that a named serving engine cannot run (see `check_servable`); an `Unrepresentable`, so
    whatever filters unwritable plans filters these too."""


@dataclass(frozen=True)
class Violation:
    """A rule a model breaks, with the values it was checked on (`detail`)."""

    rule: EngineRule
    detail: str

    @property
    def engine(self) -> str:
        return self.rule.engine

    def describe(self) -> str:
        """The rule, the values that break it and its source, in one phrase."""
        return f"{self.rule.says}; {self.detail} [{self.rule.source}]"


def parse_engines(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Engine names from "vllm,llama.cpp" or a list; raises ValueError naming the known ones.

    Text that names no engine ('', ' , ') is refused: it would otherwise check nothing, silently."""
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else list(value)
    if isinstance(value, str) and not any(p.strip() for p in parts):
        raise ValueError(f"{value!r} names no serving engine; give one or more of {', '.join(ENGINES)}, "
                         "e.g. vllm,llama.cpp")
    out = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        engine = _ALIASES.get(part.lower())
        if engine is None:
            raise ValueError(f"unknown serving engine {part!r}; known: {', '.join(ENGINES)}")
        if engine not in out:
            out.append(engine)
    return tuple(out)


def check_tensor_parallel(tensor_parallel: int, engines: Sequence[str]) -> None:
    if isinstance(tensor_parallel, bool) or not isinstance(tensor_parallel, int) or tensor_parallel < 1:
        raise ValueError(f"tensor_parallel must be an integer >= 1, got {tensor_parallel!r}")
    if tensor_parallel > 1 and VLLM not in engines:
        raise ValueError("tensor parallelism is a vLLM setting: name vllm among the serving engines "
                         "(--serve-with vllm) to check a plan against it")


def rules_for(model_type: str, engine: str) -> tuple[EngineRule, ...]:
    return tuple(r for r in RULES if r.engine == engine and model_type in r.model_types)


def has_model(model_type: str, engine: str) -> bool:
    return not any(r.test == "no_model" for r in rules_for(model_type, engine))


def _factor(f, dims: Dims, tp: int):
    if f == TP:
        return tp
    return getattr(dims, f) if isinstance(f, str) else f


def _product(factors: tuple, dims: Dims, tp: int) -> int | None:
    values = [_factor(f, dims, tp) for f in factors]
    return None if any(v is None for v in values) else math.prod(values)


def _spell(factors: tuple, dims: Dims, tp: int) -> str:
    names = [f if isinstance(f, str) else str(f) for f in factors]
    values = [str(_factor(f, dims, tp)) for f in factors]
    text = " × ".join(names)
    if len(factors) > 1:
        return f"{text} = {' × '.join(values)} = {_product(factors, dims, tp)}"
    return f"{text} = {values[0]}" if isinstance(factors[0], str) else text


def _applies(rule: EngineRule, dims: Dims) -> bool:
    return rule.kind is None or dims.has_kind(rule.kind)


def broken(rule: EngineRule, dims: Dims, tensor_parallel: int = 1) -> str | None:
    """Why `dims` breaks `rule` (the values), or None when it holds or does not apply."""
    if not _applies(rule, dims):
        return None
    tp = tensor_parallel
    if rule.test == "no_model":
        return "no plan changes that"
    if rule.test == "absent":
        return f"the model has {rule.kind} layers {dims.layers_of(rule.kind)}"
    if rule.test == "pattern":
        return _pattern_broken(rule, dims)
    left = _product(rule.left, dims, tp)
    if left is None:
        return None
    if rule.test == "equal":
        right = _product(rule.right, dims, tp)
        return None if right is None or left == right else f"{_spell(rule.left, dims, tp)} ≠ {_spell(rule.right, dims, tp)}"
    modulus = _factor(rule.right[0], dims, tp)
    where = f"{_spell(rule.left, dims, tp)} is not a multiple of {modulus}"
    if rule.right[0] == TP:
        where = f"{_spell(rule.left, dims, tp)} is not divisible by tensor_parallel = {tp}"
    if rule.test == "multiple":
        return None if left % modulus == 0 else where
    if rule.test == "multiple_or_one":
        return None if left % modulus == 0 or left == 1 else where
    if rule.test == "at_least":
        need = _factor(rule.right[0], dims, tp)
        return None if left >= need else f"{_spell(rule.left, dims, tp)} is fewer than tensor_parallel = {need}"
    if rule.test == "kv_heads":
        ok = left % tp == 0 if left >= tp else tp % left == 0
        return None if ok else f"{_spell(rule.left, dims, tp)} and tensor_parallel = {tp} do not divide one another"
    raise ValueError(f"unknown rule test {rule.test!r}")


def _pattern_broken(rule: EngineRule, dims: Dims) -> str | None:
    """The layers whose sliding / full variant differs from the engine's fixed pattern (a "pattern" rule)."""
    sliding, full = rule.left
    period = rule.right[0]
    variants = [kind.split("@", 1)[1] if "@" in kind else None for kind in dims.block_kinds]
    if sliding not in variants:
        return None  # no sliding layer: the engine uses no window either
    wrong = [i for i, v in enumerate(variants)
             if v in (sliding, full) and v != (full if i % period == period - 1 else sliding)]
    if not wrong:
        return None
    return (f"layers {wrong} are not what the engine assumes (layer i {full} exactly when i % {period} == "
            f"{period - 1}, else {sliding}): {', '.join(f'{i} is {variants[i]}' for i in wrong[:6])}")


def violations(model_type: str, dims: Dims, engines: Sequence[str] = ENGINES,
               tensor_parallel: int = 1) -> list[Violation]:
    """Every rule of `engines` that a `model_type` model of sizes `dims` breaks, engine by engine."""
    out = []
    for engine in engines:
        for rule in rules_for(model_type, engine):
            detail = broken(rule, dims, tensor_parallel)
            if detail is not None:
                out.append(Violation(rule, detail))
    return out


def config_violations(config, engine: str, tensor_parallel: int = 1) -> list[Violation]:
    """The rules of `engine` that a Hugging Face config (e.g. a pruned output's) breaks."""
    from . import get_adapter

    return violations(config.model_type, get_adapter(config).dims(config), (engine,), tensor_parallel)


def _steps(axis: str, dims: Dims, top: int) -> range:
    """The values of `axis` a plan may set, as Plan.validate and the search space allow them."""
    step = {"mamba_num_heads": dims.mamba_n_groups, "num_attention_heads": dims.num_key_value_heads,
            "num_moe_experts": dims.moe_n_group, "linear_num_value_heads": dims.linear_num_key_heads}.get(axis) or 1
    return range(step, top + 1, step)


def nearest_values(adapter, rule: EngineRule, dims: Dims, engines: Sequence[str], tensor_parallel: int = 1,
                   original: Dims | None = None, count: int = 3) -> dict[str, list[int]]:
    """For each plan axis the rule reads: the values closest to the planned one (up to the source's
    size) that, all other sizes kept, satisfy every rule of `engines` that reads that axis, and the
    adapter's config. Rules on other sizes are named on their own (`check_servable` lists them all),
    so one that no plan can keep (a tensor-parallel size) does not hide this axis's values."""
    limit = original or dims
    out = {}
    for axis in (f for f in rule.fields if f in _AXES):
        current, top = getattr(dims, axis), getattr(limit, axis)
        if current is None or top is None:
            continue
        valid = []
        for value in sorted(_steps(axis, dims, top), key=lambda v: (abs(v - current), -v)):
            if value == current:
                continue
            candidate = dims.replace(**{axis: value})
            if any(axis in v.rule.fields for v in violations(adapter.model_type, candidate, engines, tensor_parallel)):
                continue
            try:
                adapter.check_representable(candidate, original=original)
            except ValueError:
                continue
            valid.append(value)
            if len(valid) == count:
                break
        out[axis] = valid
    return out


def check_servable(adapter, dims: Dims, engines: Sequence[str], tensor_parallel: int = 1,
                   original: Dims | None = None) -> None:
    """Raise NotServable when a named engine cannot serve a model of sizes `dims`: one message naming
    the engine and its version, the rule with its source, and the nearest valid values."""
    found = violations(adapter.model_type, dims, engines, tensor_parallel)
    if not found:
        return
    for v in found:  # no plan changes this: say it alone
        if v.rule.test == "no_model":
            raise NotServable(f"{v.rule.version} cannot serve {adapter.model_type} models: {v.rule.says} "
                              f"[{v.rule.source}]. Leave {v.rule.engine} out of --serve-with (serve_with).")
    if len(found) == 1:
        rule = found[0].rule
        raise NotServable(f"{rule.version} cannot serve this plan: {_explain(found[0], adapter, dims, engines, tensor_parallel, original)}")
    # every broken rule at once, so that a plan is not fixed and rerun one rule at a time
    listed = " ".join(f"({i}) {v.rule.version}: {_explain(v, adapter, dims, engines, tensor_parallel, original)}"
                      for i, v in enumerate(found, 1))
    raise NotServable(f"this plan breaks {len(found)} serving rules: {listed}")


def _explain(violation: Violation, adapter, dims: Dims, engines: Sequence[str], tensor_parallel: int,
             original: Dims | None) -> str:
    """One broken rule, what it says, and the nearest values that keep it (or what else to change)."""
    rule = violation.rule
    nearest = nearest_values(adapter, rule, dims, engines, tensor_parallel, original)
    shown = [f"{axis} in {values}" for axis, values in nearest.items() if values]
    if rule.test == "absent":
        advice = (f"Drop those layers (drop_layers: {dims.layers_of(rule.kind)}), or leave {rule.engine} out of "
                  "--serve-with.")
    elif rule.test == "pattern":
        advice = (f"Keep the source's pattern by dropping whole runs of {rule.right[0]} layers (or none), or leave "
                  f"{rule.engine} out of --serve-with.")
    elif shown:
        advice = "Nearest valid values (other sizes as planned): " + "; ".join(shown) + "."
    else:
        fixed = ", ".join(f"{f}={getattr(dims, f)}" for f in rule.fields)
        if TP in rule.right and not any(f in _AXES for f in rule.fields):
            advice = f"No plan changes {fixed}: choose another tensor-parallel size."
        else:
            advice = (f"No change of one size alone satisfies it ({fixed}, other sizes as planned): change "
                      "several together, or see the family's rules in docs/pruning.md.")
    return f"{violation.describe()}. {advice}"


def serving_record(model_type: str, dims: Dims, tensor_parallel: int = 1,
                   engines: Sequence[str] = ENGINES) -> dict:
    """What `hybridprune.json` records: for each engine, whether the model is expected to run on it
    (by these rules; the real-engine tests check them) and why not."""
    record: dict = {"tensor_parallel": tensor_parallel}
    for engine in engines:
        found = violations(model_type, dims, (engine,), tensor_parallel)
        record[engine] = {"version": ENGINE_VERSIONS[engine], "servable": not found,
                          "reasons": [v.describe() for v in found]}
    return record


def warnings_for(model_type: str, dims: Dims) -> list[str]:
    """One line per common engine whose rules the sizes break (at tensor_parallel 1); an engine with no
    model for the family is left out: no plan changes that, and `hybridprune.json` records it."""
    lines = []
    for engine in ENGINES:
        found = [v for v in violations(model_type, dims, (engine,)) if v.rule.test != "no_model"]
        if found:
            lines.append(f"{ENGINE_VERSIONS[engine]} is not expected to serve the output: {found[0].describe()}"
                         + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")
                         + f". Check a plan with --serve-with {engine}.")
    return lines
