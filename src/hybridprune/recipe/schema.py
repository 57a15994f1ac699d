"""What a recipe may say: one dataclass per section, with the commands' option names.

A section's keys are the options of the command of the same name (`--kd-steps` is `kd_steps`), so a
user who knows the commands knows the recipe. `build` refuses an unknown key or a value of the wrong
type with the file, the line and the key (a misspelt `lr` must not silently train at the default),
and says which keys the section takes; a value the command would refuse (its rule in
`hybridprune.options`) is refused the same way, and `check_round_sections` checks the rules between
options on each round's sections as the stages will see them: a recipe is checked whole before its
first stage runs, not when a later stage starts hours later.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

from .. import options
from ..stages.calibrate import CalibrateSettings
from ..stages.common import INHERITED
from ..stages.distill import DistillSettings
from ..stages.evaluate import EvalSettings
from ..stages.prune import PruneSettings
from ..stages.search import SearchSettings
from .loader import RecipeError, _where

Size = Union[int, float, str]  # 4.5e9, or "0.5x" of the model it applies to
Plan = Union[str, dict]  # "hidden_size=3072,..." or a mapping of plan fields


#: the sections of the stages with a settings dataclass of their own (`hybridprune.stages`): the section IS
#: the settings, so a recipe key and a command's flag cannot drift apart
Calibrate = CalibrateSettings
Search = SearchSettings
Prune = PruneSettings
Distill = DistillSettings
Eval = EvalSettings


@dataclass
class Report:
    title: str | None = None
    intro: str = ""


@dataclass
class Round:
    """One prune + distil round: its budget (`params`, `active_params`, as fractions `0.5x` of the
    ORIGINAL model: the rounds walk toward a final budget) or a fixed `plan`, and any section keys
    that differ in this round."""

    params: Size | None = None
    active_params: Size | None = None
    plan: Plan | None = None
    calibrate: dict | None = None
    search: dict | None = None
    prune: dict | None = None
    distill: dict | None = None


SECTIONS = {"calibrate": Calibrate, "search": Search, "prune": Prune, "distill": Distill, "eval": Eval,
            "report": Report}


@dataclass
class Recipe:
    model: str
    data: str = "shakespeare"
    text_field: str = "text"
    seed: int = 0
    dtype: str = "auto"
    device: str | None = None
    calibrate: Calibrate | None = None
    search: Search | None = None
    prune: Prune | None = None
    distill: Distill | None = None
    eval: Eval | None = None
    report: Report | None = None
    rounds: list[Round] | None = None

    def inherited(self) -> dict[str, Any]:
        """The settings given at the top (`seed`, `dtype`, `device`, `text_field`) that every section
        taking them inherits unless it sets its own."""
        return dict(getattr(self, "_inherited", {}))

    def section(self, name: str, override: dict | None = None):
        """Section `name` as its stage runs it: the recipe's (or the defaults, with the inherited
        settings), with a round's `override` on top."""
        base = getattr(self, name)
        if base is None:
            fields = {f.name for f in dataclasses.fields(SECTIONS[name])}
            base = SECTIONS[name](**{k: v for k, v in self.inherited().items() if k in fields})
        return dataclasses.replace(base, **(override or {}))


def _inherit(recipe: Recipe, doc: dict) -> None:
    """Hand the top-level settings the recipe gives down to the sections that do not set them."""
    recipe._inherited = {k: getattr(recipe, k) for k in INHERITED if k in doc and getattr(recipe, k) is not None}
    for name in SECTIONS:
        section, given = getattr(recipe, name), doc.get(name) or {}
        if section is None:
            continue
        fields = {f.name for f in dataclasses.fields(section)}
        for key, value in recipe._inherited.items():
            if key in fields and key not in given:
                setattr(section, key, value)


#: the rules of a section's keys (the command's options of the same name)
RULES = {Calibrate: options.CALIBRATE, Search: options.SEARCH, Prune: options.PRUNE, Distill: options.DISTILL,
         Eval: options.EVAL, Recipe: options.COMMON,
         Round: options.Options({"params": options.SIZE, "active_params": options.SIZE})}


def _type_name(tp) -> str:
    if tp is Size:
        return "a size (a number like 4.5e9, or a fraction of the model like 0.5x)"
    if tp is Plan:
        return "a plan (a mapping of plan fields, or 'field=value,...')"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if origin is list:
        return "a list of " + {int: "whole numbers", str: "strings"}.get(args[0], _type_name(args[0]))
    return {int: "a whole number", float: "a number", str: "a string", bool: "true or false",
            dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


def _fits(value, tp) -> bool:
    if tp is Any:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp is dict:
        return isinstance(value, dict)
    return False


def build(cls, doc: Any, path: tuple, lines: dict, file: str):
    """`cls` from the mapping `doc` at `path`, refusing unknown keys and wrong types (file:line: key)."""
    line = lambda p: f"{file}:{lines.get(p, lines.get(p[:-1], '?'))}"  # noqa: E731
    if not isinstance(doc, dict):
        raise RecipeError(f"{line(path)}: {_where(path)} must be a mapping of keys, not {type(doc).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in doc.items():
        p = (*path, key)
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise RecipeError(f"{line(p)}: unknown key {_where(p)!r}; {hint}{_where(path)} takes: {', '.join(names)}")
        tp = hints[key]
        section = _section_type(tp)
        if section is not None:  # `distill:` left empty: the section with its defaults
            value = section() if value is None else build(section, value, p, lines, file)
        elif _is_round_list(tp):
            if not isinstance(value, list):
                raise RecipeError(f"{line(p)}: {_where(p)} must be a list of rounds, e.g. [{{params: 0.7x}}, "
                                  "{params: 0.5x}]")
            value = [build(Round, item, (*p, i), lines, file) for i, item in enumerate(value)]
        elif isinstance(value, str) and not _fits(value, tp) and _fits(1.5, tp) and _number(value) is not None:
            value = _number(value)  # YAML 1.1 reads 2e9 (no sign in the exponent) as a string
        elif not _fits(value, tp):
            raise RecipeError(f"{line(p)}: {_where(p)} must be {_type_name(tp)}, got {value!r}")
        rule = RULES.get(cls, {}).get(key)
        problem = rule.problem(_where(p), value) if rule is not None and section is None else None
        if problem:
            raise RecipeError(f"{line(p)}: {problem}")
        kwargs[key] = value
    missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING and f.name not in kwargs]
    if missing:
        raise RecipeError(f"{line(path)}: {_where(path)} needs {', '.join(missing)}")
    built = cls(**kwargs)
    if cls is Recipe:
        _inherit(built, doc)
    return built


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def _strip_none(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (Union, types.UnionType) and len(args) == 1 else tp


def _section_type(tp):
    inner = _strip_none(tp)
    return inner if dataclasses.is_dataclass(inner) else None


def _is_round_list(tp) -> bool:
    inner = _strip_none(tp)
    return typing.get_origin(inner) is list and typing.get_args(inner)[0] is Round


def check_round_sections(recipe: Recipe, lines: dict, file: str) -> None:
    """A round's section overrides use the section's own keys, types and rules; then the rules between
    options hold in each round's sections as its stages will run them, and the device exists."""
    for i, rnd in enumerate(recipe.rounds or []):
        for name in ("calibrate", "search", "prune", "distill"):
            override = getattr(rnd, name)
            if override is not None:
                build(SECTIONS[name], override, ("rounds", i, name), lines, file)
    for i, rnd in enumerate(recipe.rounds or [Round()]):
        for name in ("calibrate", "search", "prune", "distill"):
            if name == "search" and rnd.plan is not None:
                continue  # a round with a fixed plan does not search
            _check_relations(recipe, name, rnd, i, lines, file)
    if recipe.eval is not None:
        _check_relations(recipe, "eval", Round(), 0, lines, file)
        _check_tasks(recipe.eval.tasks, lines, file)
    _check_device(recipe, lines, file)
    for i, rnd in enumerate(recipe.rounds or [Round()]):
        _check_teacher_placement(recipe, rnd, i, lines, file)


def _check_teacher_placement(recipe: Recipe, rnd: Round, i: int, lines: dict, file: str) -> None:
    """The distillation's teacher device (or device map) as `distill --teacher-device` checks it."""
    base, override = recipe.distill, rnd.distill
    if base is None and override is None:
        return
    from ..stages.distill import check_placement

    settings = dataclasses.replace(base or Distill(), **(override or {}))
    try:
        check_placement(settings)
    except Exception as exc:  # CliError (a device this machine lacks) or ValueError (both given)
        key = "teacher_device_map" if settings.teacher_device_map else "teacher_device"
        path = ("rounds", i, "distill", key) if key in (override or {}) else ("distill", key)
        raise RecipeError(f"{file}:{lines.get(path, lines.get(('distill',), '?'))}: distill.{key}: {exc}") from None


def _check_tasks(tasks: list[str], lines: dict, file: str) -> None:
    """The evaluation's lm-eval tasks, as `eval --tasks` checks them: a blank name, or one lm-eval does not
    know, is refused now rather than after the whole run (without lm-eval the stage skips them, saying so)."""
    if not tasks:
        return
    from ..evaluate import MissingExtra
    from ..evaluate.harness import check_tasks

    line = f"{file}:{lines.get(('eval', 'tasks'), '?')}"
    if any(not t.strip() for t in tasks):
        raise RecipeError(f"{line}: eval.tasks names an empty task; give task names, e.g. [next_line_choice]")
    try:
        check_tasks(tasks)
    except MissingExtra:
        return
    except ValueError as exc:
        raise RecipeError(f"{line}: eval.tasks: {exc}") from None


def _check_relations(recipe: Recipe, name: str, rnd: Round, i: int, lines: dict, file: str) -> None:
    """The rules between the options of section `name` as round `i` runs it, blaming the line of the key
    (the round's override, else the section's)."""
    base, override = getattr(recipe, name), getattr(rnd, name, None)
    if base is None and override is None:
        return
    values = {**dataclasses.asdict(base if base is not None else SECTIONS[name]()), **(override or {})}
    where = {k: ("rounds", i, name, k) for k in override or {}}
    if name == "search":
        _calibrated_apart(values, where, lines, file, i if recipe.rounds else None)
        for k in ("params", "active_params"):
            if getattr(rnd, k) is not None:
                values[k], where[k] = getattr(rnd, k), ("rounds", i, k)
    for key, message in options.SECTIONS[name].problems(values, options.Names(name)):
        path = where.get(key, (name, key))
        line = lines.get(path, lines.get((name,), lines.get(("rounds", i), "?")))
        in_round = f" (in round {i + 1})" if recipe.rounds else ""
        raise RecipeError(f"{file}:{line}: {message}{in_round}")


def _calibrated_apart(values: dict, where: dict, lines: dict, file: str, rnd: int | None) -> None:
    """A recipe's search reads its calibrate stage's scores: the search's settings of calibrating on
    demand would do nothing there, so they are refused with the keys that do it."""
    for key, instead in (("calib_samples", "samples"), ("depth_samples", "depth_samples")):
        if values[key] != getattr(Search(), key):
            path = where.get(key, ("search", key))
            line = lines.get(path, lines.get(("search",), "?"))
            in_round = f" (in round {rnd + 1})" if rnd is not None else ""
            raise RecipeError(f"{file}:{line}: search.{key} sets the search's own calibration, which a recipe does in "
                              f"its calibrate stage: set calibrate.{instead} instead{in_round}")


def _check_device(recipe: Recipe, lines: dict, file: str) -> None:
    """The recipe's `device`, and each section's `device` and `device_map`, must be ones this machine
    has (as `--device`), before any model loads."""
    from ..checkpoint.devices import check_device, check_device_map
    from ..options import SettingError

    places = [(("device",), recipe.device, check_device)]
    overrides = [(("rounds", i, name), getattr(rnd, name) or {}) for i, rnd in enumerate(recipe.rounds or [])
                 for name in ("calibrate", "prune")]
    for name in SECTIONS:
        section = dataclasses.asdict(getattr(recipe, name)) if getattr(recipe, name) is not None else {}
        overrides.append(((name,), section if (name,) in lines else {}))
    for where, values in overrides:
        for key, checker in (("device", check_device), ("device_map", check_device_map)):
            if (*where, key) in lines:
                places.append(((*where, key), values.get(key), checker))
    for path, value, checker in places:
        if value is None:
            continue
        try:
            checker(value, f"{file}:{lines.get(path, '?')}: {_where(path)}")
        except SettingError as exc:
            raise RecipeError(str(exc)) from None
