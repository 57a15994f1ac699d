"""The stages a recipe asks for, in order, each with the key that decides whether it must run again.

A stage's key hashes its settings (the recipe section, with the round's overrides), the settings
every stage shares (data, seed, dtype), the versions that could change its numbers, the fingerprint
of the model it reads, and the keys of the stages whose outputs it reads. So a changed section
changes the key of its stage and of every stage after it that depends on it, and nothing else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .loader import RecipeError, _where
from .schema import SECTIONS, Recipe, Round

RECORD = "record.json"


@dataclass(eq=False)
class Stage:
    index: int
    kind: str
    round: int | None
    settings: Any
    run_dir: Path
    model_in: "Stage | None" = None  # the stage whose checkpoint this one reads; None: the recipe's model
    inputs: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    distributed: bool = False  # run by every process under torchrun (the others: rank 0 only)
    plan: Any = None  # a prune stage's fixed `pruning.plan.Plan`, parsed once when the stages are planned

    @property
    def name(self) -> str:
        return f"{self.index:02d}-{self.kind}"

    @property
    def dir(self) -> Path:
        return self.run_dir / self.name

    def record(self) -> dict:
        try:
            return json.loads((self.dir / RECORD).read_text())
        except (OSError, ValueError):
            return {}

    def record_outputs(self) -> dict:
        return self.record().get("outputs") or {}

    def describe(self) -> dict:
        """The part of the record that must match for the stage to be skipped."""
        return {"settings": dataclasses.asdict(self.settings) if dataclasses.is_dataclass(self.settings)
                else self.settings}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    out = {"hybridprune": __version__}
    for name in ("torch", "transformers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def data_fingerprint(spec: str) -> str:
    """The data as named in the recipe, and for a local file or folder its sizes and times."""
    path = Path(spec)
    if not path.exists():
        return spec
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256(spec.encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(path) if p != path else p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def model_fingerprint(path: Path) -> str:
    from transformers import AutoConfig

    from ..checkpoint.files import CheckpointFiles
    from ..checkpoint.fingerprint import checkpoint_fingerprint

    return checkpoint_fingerprint(CheckpointFiles(path), AutoConfig.from_pretrained(path, trust_remote_code=False))


def _merged(recipe: Recipe, name: str, rnd: Round, lines: dict, file: str):
    base = getattr(recipe, name)
    override = getattr(rnd, name)
    if base is None and override is None:
        return None
    values = dataclasses.asdict(base) if base is not None else {}
    if override:  # checked against the section's keys and types by `schema.check_round_sections`
        values.update(override)
    return SECTIONS[name](**{k: values[k] for k in values})


def stages(recipe: Recipe, run_dir: Path, lines: dict | None = None, file: str = "recipe") -> list[Stage]:
    """The recipe's stages in the order they run (keys not yet set: see `assign_keys`)."""
    lines = lines or {}
    rounds = recipe.rounds or [Round()]
    out: list[Stage] = []
    model_in: Stage | None = None
    finished_rounds = []

    def add(kind, rnd, settings, **kw) -> Stage:
        st = Stage(len(out) + 1, kind, rnd, settings, run_dir, **kw)
        out.append(st)
        return st

    for r, rnd in enumerate(rounds, 1):
        cal = _merged(recipe, "calibrate", rnd, lines, file)
        search = _merged(recipe, "search", rnd, lines, file)
        prune = _merged(recipe, "prune", rnd, lines, file)
        distill = _merged(recipe, "distill", rnd, lines, file)
        if rnd.plan is not None:
            prune = dataclasses.replace(prune or SECTIONS["prune"](), plan=rnd.plan)
            search = None
        if search is not None and (rnd.params is not None or rnd.active_params is not None):
            search = dataclasses.replace(search, **{k: getattr(rnd, k) for k in ("params", "active_params")
                                                    if getattr(rnd, k) is not None})
        elif search is None and (rnd.params is not None or rnd.active_params is not None):
            raise RecipeError(f"{file}: round {r} sets a budget (params) but the recipe has no `search:` section "
                              "to find the architecture; add one, or give the round a `plan`")
        if prune is not None and prune.plan is not None and search is not None and rnd.plan is None:
            raise RecipeError(f"{file}: give either `search:` (a budget) or a fixed `prune: plan:`, not both")
        if search is None and (prune is None or prune.plan is None):
            if r == 1 and not recipe.rounds and distill is None:
                break  # a recipe that only calibrates and evaluates
            raise RecipeError(f"{file}: nothing decides the pruned architecture: add `search:` with a budget "
                              "(e.g. params: 0.5x) or `prune: {plan: ...}`")
        if cal is None:
            cal = SECTIONS["calibrate"]()
        c = add("calibrate", r, cal, model_in=model_in)
        s = add("search", r, search, model_in=model_in, inputs={"calibrate": c}) if search is not None else None
        p = add("prune", r, prune or SECTIONS["prune"](), model_in=model_in, inputs={"calibrate": c, "search": s})
        if s is None:
            p.plan = _parsed_plan(p.settings.plan, r, rnd, lines, file)
        d = add("distill", r, distill, model_in=p, inputs={"prune": p}, distributed=True) if distill else None
        finished_rounds.append((p, d))
        model_in = d or p
    if recipe.eval is not None:
        add("eval", None, recipe.eval, inputs={"rounds": finished_rounds})
    if recipe.report is not None:
        add("report", None, recipe.report, inputs={"all": list(out)})
    if not out:
        raise RecipeError(f"{file}: the recipe has no stages; give at least calibrate and search or prune")
    return out


def _parsed_plan(spec, r: int, rnd: Round, lines: dict, file: str):
    """The fixed plan of round `r`, parsed once for the whole command (the stage and the forecasts use
    it); a plan that cannot be read is refused before any stage runs, naming the line."""
    from ..pruning.plan import Plan, PlanError

    path = ("rounds", r - 1, "plan") if rnd.plan is not None else (
        ("rounds", r - 1, "prune", "plan") if (rnd.prune or {}).get("plan") is not None else ("prune", "plan"))
    try:
        return Plan.parse(spec)
    except PlanError as exc:
        line = lines.get(path, lines.get(path[:-1], "?"))
        raise RecipeError(f"{file}:{line}: {_where(path)}: {exc}") from None


def assign_keys(all_stages: list[Stage], recipe: Recipe, model_fp: str) -> None:
    common = {"model": model_fp, "data": data_fingerprint(recipe.data), "text_field": recipe.text_field,
              "seed": recipe.seed, "dtype": recipe.dtype, "versions": versions()}
    for st in all_stages:
        deps = []
        for value in st.inputs.values():
            items = value if isinstance(value, list) else [value]
            for item in items:
                for dep in (item if isinstance(item, tuple) else (item,)):
                    if isinstance(dep, Stage):
                        deps.append(dep.key)
        if st.model_in is not None:
            deps.append(st.model_in.key)
        doc = {"kind": st.kind, "round": st.round, **st.describe(), "common": common, "inputs": deps}
        st.key = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def find(all_stages: list[Stage], name: str) -> Stage:
    """A stage by `NN-kind`, `NN`, or `kind` (the first of that kind; `distil` is `distill`)."""
    for st in all_stages:
        if name in (st.name, f"{st.index:02d}", str(st.index)):
            return st
    kind = {"distil": "distill", "evaluate": "eval"}.get(name, name)  # the docs' spelling of the verbs
    for st in all_stages:
        if st.kind == kind:
            return st
    raise RecipeError(f"--from {name}: no such stage; the stages are {', '.join(s.name for s in all_stages)}")


