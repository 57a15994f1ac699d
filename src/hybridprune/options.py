"""The rule of every stage option, in one place, for the command line and the recipe alike.

A stage's options are named as a recipe names them (`kd_steps`; the command's flag is `--kd-steps`).
The commands declare an integer's range to typer from here (`Options.bounds`, so typer refuses it,
naming the flag, before anything runs) and check the rest, and the rules between options, with
`Options.check`; `hybridprune run` checks every section of a recipe with the same `Options.problems`
before its first stage. Floats need more than click's ranges: those let NaN through (every comparison
with NaN is false) and accept infinities.

Torch-free: the command line reads it before anything heavy is imported. The few rules that belong to
another module (serving engines, size budgets, search axes) import it only when they run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

#: Seeds are handed to torch.Generator.manual_seed, which takes 64-bit values.
SEED_MAX = 2**63 - 1

DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
PRECISIONS = ("auto", "fp32", "bf16")
PARALLEL = ("auto", "none", "ddp", "fsdp")
KD_LOSSES = ("forward", "reverse")
TIE_BREAKS = ("cost", "speed")
PARAMS_KINDS = ("total", "non-embedding", "non_embedding")
EXPERT_IMPORTANCE = ("output_norm", "router_weighted", "frequency")
GDN_IMPORTANCE = ("out_proj", "value")


class SettingError(Exception):
    """A setting (a command's flag, a recipe's key, a keyword of the Python API) asks for what cannot be
    done here; the message names it and says what to do, and the command line shows it without a
    traceback (`cli.errors.CliError` is one)."""


class OptionError(ValueError):
    """An option's value breaks its rule; the message names the option as the user gave it."""


@dataclass(frozen=True)
class Rule:
    """What values an option takes: `allowed` says it in words; `low`/`high`: an integer's range."""

    allowed: str
    test: Callable[[Any], bool]
    low: int | None = None
    high: int | None = None

    def problem(self, name: str, value: Any) -> str | None:
        """Why `value` breaks the rule (None: it keeps it; None is an option not given)."""
        if value is None:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            ok = False
        else:
            try:
                ok = bool(self.test(value))
            except (TypeError, ValueError):
                ok = False
        return None if ok else f"{name} must be {self.allowed}, got {_shown(value)}"


@dataclass(frozen=True)
class Parsed(Rule):
    """A rule kept by the module that reads the value: `parse` raises ValueError saying what is wrong."""

    parse: Callable[[Any], Any] = field(default=lambda v: v)

    def problem(self, name: str, value: Any) -> str | None:
        if value is None:
            return None
        try:
            self.parse(value)
        except ValueError as exc:
            return f"{name}: {exc}"
        return None


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def whole(low: int, high: int | None = None) -> Rule:
    allowed = f"a whole number >= {low}" if high is None else f"a whole number in [{low}, {high}]"
    return Rule(allowed, lambda v: _whole(v) and v >= low and (high is None or v <= high), low=low, high=high)


def one_of(*choices: str) -> Rule:
    return Rule(f"one of {', '.join(choices)}", lambda v: v in choices)


POSITIVE = Rule("a positive number", lambda v: _number(v) and v > 0)
NON_NEGATIVE = Rule("a number >= 0", lambda v: _number(v) and v >= 0)
FRACTION = Rule("a fraction in [0, 1)", lambda v: _number(v) and 0 <= v < 1)
CLOSED_FRACTION = Rule("a fraction in [0, 1]", lambda v: _number(v) and 0 <= v <= 1)
OPEN_FRACTION = Rule("a fraction strictly between 0 and 1, e.g. 0.5", lambda v: _number(v) and 0 < v < 1)
SEED = whole(0, SEED_MAX)
NOT_BLANK = Rule("a text that is not blank", lambda v: isinstance(v, str) and bool(v.strip()))
POSITIVE_LIST = Rule("a list of whole numbers >= 1, e.g. [1, 8]",
                     lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(_whole(x) and x >= 1 for x in v))


def _engines(value):
    from .architectures.serving import parse_engines

    return parse_engines(value)


def _size(value):
    from .archsearch.cost import parse_params

    return parse_params(value, original=1, what="the size")


def _memory_dtype(value):
    from .architectures.cache import dtype_bytes

    return dtype_bytes(value)


def _axes(value):
    from .archsearch.space import SearchSpace, axis_spelling

    return SearchSpace(skip=tuple(axis_spelling(str(v)) for v in value))  # it names every unknown axis


def _divisors(value):
    from .archsearch.space import parse_divisors

    return parse_divisors(value)


ENGINES = Parsed("serving engine names", bool, parse=_engines)
SIZE = Parsed("a size", bool, parse=_size)
MEMORY_DTYPE = Parsed("a dtype", bool, parse=_memory_dtype)
AXES = Parsed("search axes", bool, parse=_axes)
DIVISORS = Parsed("per-axis steps", bool, parse=_divisors)


class Names:
    """How messages name an option: as its flag (`--kd-lr`, `--no-speed`) or as a recipe key
    (`search.kd_lr`, `search.speed: false`)."""

    def __init__(self, section: str | None = None, *, flags: bool = False):
        self.section, self.flags = section, flags

    def of(self, key: str) -> str:
        if self.flags:
            return "--" + key.replace("_", "-")
        return f"{self.section}.{key}" if self.section else key

    def setting(self, key: str, value: Any) -> str:
        if self.flags and isinstance(value, bool):
            return self.of(key) if value else "--no-" + key.replace("_", "-")
        if self.flags:
            return f"{self.of(key)} {value}"
        return f"{self.of(key)}: {str(value).lower() if isinstance(value, bool) else value}"


FLAGS = Names(flags=True)

Relation = Callable[[dict, Names], Iterator[tuple[str, str]]]


class Options(dict):
    """The rules of one stage's options (key -> Rule), and the rules between them (`relations`:
    each yields (the key to blame, the message) for the values it finds wrong together)."""

    def __init__(self, rules: dict[str, Rule], *relations: Relation):
        super().__init__(rules)
        self.relations = relations

    def bounds(self, key: str) -> dict[str, int]:
        """typer's `min=`/`max=` of an integer option."""
        rule = self[key]
        return {k: v for k, v in (("min", rule.low), ("max", rule.high)) if v is not None}

    def problems(self, values: dict[str, Any], names: Names) -> Iterator[tuple[str, str]]:
        """(key, message) for each value that breaks its rule; then, when all keep theirs, the
        relations between them."""
        broken = False
        for key, value in values.items():
            rule = self.get(key)
            message = rule.problem(names.of(key), value) if rule is not None else None
            if message:
                broken = True
                yield key, message
        if not broken:
            for relation in self.relations:
                yield from relation(values, names)

    def check(self, values: dict[str, Any], names: Names = FLAGS) -> None:
        """Raise OptionError with the first problem of `values`."""
        for _, message in self.problems(values, names):
            raise OptionError(message)


def multiple_problem(names: Names, key: str, value: int, of_key: str, of: int) -> str | None:
    """`key` must be a whole multiple of `of_key` (batches split into equal micro-batches)."""
    if of < 1 or value % of == 0:
        return None
    lower, upper = value - value % of, value - value % of + of
    near = " or ".join(str(v) for v in (lower, upper) if v > 0)
    return (f"{names.of(key)} ({value}) must be a multiple of {names.of(of_key)} ({of}), e.g. {near}; "
            f"or change {names.of(of_key)}")


def _serving(v: dict, n: Names) -> Iterator[tuple[str, str]]:
    tp = v.get("tensor_parallel") or 1
    if tp > 1 and "vllm" not in _engines(v.get("serve_with") or ()):
        yield "tensor_parallel", (f"tensor parallelism is a vLLM setting ({n.setting('tensor_parallel', tp)}): name "
                                  f"vllm among the serving engines ({n.setting('serve_with', 'vllm')}) to check a plan "
                                  "against it")


def _budget(v: dict, n: Names) -> Iterator[tuple[str, str]]:
    if all(v.get(k) is None for k in ("params", "memory_mb", "active_params")):
        yield "params", (f"give a budget: {n.of('params')} (e.g. 4.5e9 or 0.5x), {n.of('active_params')} "
                         f"and/or {n.of('memory_mb')}")


def _search_kd(v: dict, n: Names) -> Iterator[tuple[str, str]]:
    steps, tokens = v.get("kd_steps"), v.get("kd_tokens")
    if steps is not None and tokens is not None:
        yield "kd_tokens", f"give {n.of('kd_steps')} or {n.of('kd_tokens')}, not both"
    if steps is not None or tokens is not None:
        batch, micro = v.get("kd_batch", 8), v.get("kd_micro_batch", 2)
        message = multiple_problem(n, "kd_batch", batch, "kd_micro_batch", min(micro, batch))
        if message:
            yield "kd_batch", message
    if v.get("kd_min_lr") is not None and v["kd_min_lr"] > v.get("kd_lr", 1e-4):
        yield "kd_min_lr", f"{n.of('kd_min_lr')} ({v['kd_min_lr']}) must not exceed {n.of('kd_lr')} ({v.get('kd_lr')})"


def _tie_break(v: dict, n: Names) -> Iterator[tuple[str, str]]:
    if v.get("tie_break") == "speed" and v.get("speed") is False:
        yield "tie_break", (f"{n.setting('tie_break', 'speed')} needs the throughput measurement: drop "
                            f"{n.setting('speed', False)}, or use {n.setting('tie_break', 'cost')}")


def _distill_length(v: dict, n: Names) -> Iterator[tuple[str, str]]:
    if (v.get("steps") is None) == (v.get("tokens") is None):
        yield "steps", f"give exactly one of {n.of('steps')} and {n.of('tokens')} (the length of the run)"


def _distill_numbers(v: dict, n: Names) -> Iterator[tuple[str, str]]:
    lr, min_lr = v.get("lr", 1e-4), v.get("min_lr", 1e-5)
    if min_lr > lr:
        yield "min_lr", f"{n.of('min_lr')} ({min_lr}) must not exceed {n.of('lr')} ({lr})"
    message = multiple_problem(n, "global_batch", v.get("global_batch", 64), "micro_batch", v.get("micro_batch", 2))
    if message:
        yield "global_batch", message
    if v.get("kd_topk") is not None and (v.get("kd_loss", "forward") != "forward" or v.get("temperature", 1.0) != 1):
        yield "kd_topk", (f"{n.of('kd_topk')}: top-k teacher logits keep the forward KL at temperature 1 (the tail "
                          f"mass is known only there); drop {n.of('kd_loss')} / {n.of('temperature')} or "
                          f"{n.of('kd_topk')}")


CALIBRATE = Options({
    "samples": whole(1), "seq_len": whole(2), "batch_size": whole(1), "depth_samples": whole(0), "seed": SEED,
    "dtype": one_of(*DTYPES), "text_field": NOT_BLANK,
})

SEARCH = Options({
    "params": SIZE, "active_params": SIZE, "params_kind": one_of(*PARAMS_KINDS), "memory_mb": POSITIVE,
    "seq_len": whole(1), "batch": whole(1), "memory_dtype": MEMORY_DTYPE, "top_k": whole(1),
    "kd_tokens": POSITIVE, "kd_steps": whole(1), "kd_lr": POSITIVE, "kd_min_lr": NON_NEGATIVE, "kd_batch": whole(1),
    "kd_micro_batch": whole(1), "kd_topk": whole(1), "skip": AXES, "divisors": DIVISORS, "max_width_pruning": FRACTION,
    "max_depth_pruning": FRACTION, "band": CLOSED_FRACTION, "max_candidates": whole(1), "eval_samples": whole(1),
    "eval_seq_len": whole(2), "batch_size": whole(1), "calib_samples": whole(1), "depth_samples": whole(0),
    "tie_tolerance": NON_NEGATIVE, "tie_break": one_of(*TIE_BREAKS), "speed_batch": whole(1), "show": whole(0),
    "expert_importance": one_of(*EXPERT_IMPORTANCE), "gdn_importance": one_of(*GDN_IMPORTANCE),
    "serve_with": ENGINES, "tensor_parallel": whole(1), "seed": SEED, "dtype": one_of(*DTYPES),
}, _budget, _search_kd, _tie_break, _serving)

PRUNE = Options({
    "expert_importance": one_of(*EXPERT_IMPORTANCE), "gdn_importance": one_of(*GDN_IMPORTANCE),
    "dtype": one_of(*DTYPES), "serve_with": ENGINES, "tensor_parallel": whole(1),
}, _serving)

DISTILL = Options({
    "seq_len": whole(2), "global_batch": whole(1), "micro_batch": whole(1), "lr": POSITIVE, "min_lr": NON_NEGATIVE,
    "warmup": whole(0), "tokens": POSITIVE, "steps": whole(1), "save_every": whole(1), "keep_last": whole(1),
    "stop_at_step": whole(1), "eval_every": whole(1), "val_samples": whole(0), "num_samples": whole(1),
    "temperature": POSITIVE, "kd_loss": one_of(*KD_LOSSES), "kd_weight": POSITIVE, "ce_weight": NON_NEGATIVE,
    "kd_topk": whole(1), "chunk_size": whole(1), "weight_decay": NON_NEGATIVE, "grad_clip": NON_NEGATIVE,
    "precision": one_of(*PRECISIONS), "parallel": one_of(*PARALLEL), "seed": SEED, "num_proc": whole(1),
}, _distill_length, _distill_numbers)

EVAL = Options({
    "samples": whole(1), "seq_len": whole(2), "batch_size": whole(1), "batch_sizes": POSITIVE_LIST,
    "context": POSITIVE_LIST, "new_tokens": whole(1), "repeats": whole(1), "warmup": whole(0),
    "task_limit": POSITIVE, "seed": SEED, "dtype": one_of(*DTYPES), "text_field": NOT_BLANK, "split": NOT_BLANK,
})

TEACHER_LOGITS = Options({"seq_len": whole(2), "top_k": whole(1), "seed": SEED, "num_samples": whole(1),
                          "batch_size": whole(1)})
TOKENIZE = Options({"num_proc": whole(1)})
DEMO = Options({"target_params": OPEN_FRACTION, "kd_steps": whole(1), "search_kd_steps": whole(1), "top_k": whole(1),
                "calib_samples": whole(1), "seq_len": whole(2), "val_samples": whole(1), "seed": SEED})
#: the settings a recipe gives once for every stage
COMMON = Options({"seed": SEED, "dtype": one_of(*DTYPES), "data": NOT_BLANK, "text_field": NOT_BLANK})
#: a recipe's section -> the rules of its command's options
SECTIONS = {"calibrate": CALIBRATE, "search": SEARCH, "prune": PRUNE, "distill": DISTILL, "eval": EVAL}
