"""Command-line numbers checked where they enter, with messages that name the flag.

Integer options declare their range to typer (`min=`), which refuses a bad value, naming the flag,
before anything is loaded. Floats need more: click's ranges let NaN through (every comparison with
NaN is false) and accept infinities, and some limits tie two options together. Those are checked
here, so that no bad number reaches a stage that would report it under another name."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .common import CliError

#: Seeds are handed to torch.Generator.manual_seed, which takes 64-bit values.
SEED_MAX = 2**63 - 1


@dataclass(frozen=True)
class Rule:
    test: Callable[[float], bool]
    allowed: str


POSITIVE = Rule(lambda v: v > 0, "a positive number")
NON_NEGATIVE = Rule(lambda v: v >= 0, "a number >= 0")
FRACTION = Rule(lambda v: 0 <= v < 1, "a fraction in [0, 1)")
CLOSED_FRACTION = Rule(lambda v: 0 <= v <= 1, "a fraction in [0, 1]")
OPEN_FRACTION = Rule(lambda v: 0 < v < 1, "a fraction strictly between 0 and 1, e.g. 0.5")


def check_numbers(*checks: tuple[str, float | None, Rule]) -> None:
    """Each `(flag, value, rule)`: a value given (not None) must be finite and satisfy the rule."""
    for flag, value, rule in checks:
        if value is None:
            continue
        if not math.isfinite(value) or not rule.test(value):
            raise CliError(f"{flag} must be {rule.allowed}, got {value}")


def check_multiple(flag: str, value: int, of_flag: str, of: int) -> None:
    """`flag` must be a whole multiple of `of_flag` (batches split into equal micro-batches)."""
    if value % of:
        lower, upper = value - value % of, value - value % of + of
        near = " or ".join(str(v) for v in (lower, upper) if v > 0)
        raise CliError(f"{flag} ({value}) must be a multiple of {of_flag} ({of}), e.g. {near}; "
                       f"or change {of_flag}")


def check_moe_options(dims, model_type: str, *, active_params: str | None = None,
                      expert_importance: str = "output_norm") -> None:
    """Options that only mean something on a MoE model are refused on a dense one, rather than
    silently ignored (`--expert-importance`) or silently becoming the whole budget (`--active-params`,
    which equals the total count when every parameter is active)."""
    from ..architectures import MOE

    if dims.has_kind(MOE):
        return
    if active_params is not None:
        raise CliError(f"--active-params limits the parameters one token uses, which differ from the total only on "
                       f"MoE models; this {model_type} model has no MoE blocks, so use --params")
    if expert_importance != "output_norm":
        raise CliError(f"--expert-importance ranks routed experts; this {model_type} model has no MoE blocks, "
                       "so leave it out")


def check_gdn_options(dims, model_type: str, gdn_importance: str = "out_proj") -> None:
    """`--gdn-importance` ranks Gated DeltaNet value heads: refused on a model without GDN mixers rather
    than silently ignored."""
    if gdn_importance != "out_proj" and dims.linear_num_key_heads is None:
        raise CliError(f"--gdn-importance ranks Gated DeltaNet value heads; this {model_type} model has no GDN "
                       "mixers, so leave it out")


def listed(flag: str, text: str, example: str) -> list[str]:
    """The items of a comma-separated option; one that names none (`,`, `""`, `" , "`) is refused
    rather than read as "nothing", which would silently drop what the user asked for."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise CliError(f"{flag} {text!r} names nothing; give at least one, e.g. {flag} {example}")
    return items


def check_not_blank(*options: tuple[str, str | None, str]) -> None:
    """Each `(flag, value, example)`: a text option given as empty or spaces is refused."""
    for flag, value, example in options:
        if value is not None and not str(value).strip():
            raise CliError(f"{flag} is empty; give a value, e.g. {flag} {example}")
