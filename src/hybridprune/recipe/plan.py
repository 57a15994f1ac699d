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
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..output.atomic import OutputError
from ..output.documents import Any as AnyValue
from ..output.documents import DocumentError, Finite, Map, NonNegative, OneOf, Optional, inside, problem, read_document
from .loader import RecipeError, _where
from .schema import Recipe, Round

RECORD = "record.json"

# A run directory may come from someone else (an archive, a shared disk): its records are read back as
# untrusted input, and the files a stage wrote are found by the stage's kind, never by a name its record gives.

#: `record.json` as `runner.Run._record` writes it (other keys are allowed)
RECORD_SHAPE = {
    "stage": str, "name": str, "round": Optional(int), "key": str, "status": OneOf("running", "done"),
    "describe": {"settings": dict}, "common": {"versions": Map(str)}, "inputs": Map(AnyValue), "outputs": dict,
    "seconds": Optional(Finite), "finished": Optional(str),
}
#: the values a finished stage's record holds that later stages read
DONE_OUTPUTS = {
    "search": {"plan": dict, "best_key": str, "top": [dict]},
    "prune": {"plan": dict},
    "distill": {"steps": NonNegative(int), "tokens": NonNegative(int)},
}
#: the files a stage leaves for later stages, by kind: (what, name in the stage directory)
OUTPUTS = {
    "calibrate": {"scores": "scores"},
    "search": {"search": "search"},
    "prune": {"model": "model"},
    "distill": {"model": "student"},
    "eval": {"results": "results.json"},
    "report": {},
}
#: everything a stage writes in its directory, besides its record and their temporaries
WRITES = {**{kind: tuple(names.values()) for kind, names in OUTPUTS.items()},
          "calibrate": ("scores", "layer_importance.png")}
#: what the report stage writes at the top of the run directory
REPORT_FILES = ("results.json", "report.md", "report.html", "report_figures")


def record_fix(stage_dir: Path) -> str:
    return (f"run again with --overwrite to start the whole run afresh, or delete {stage_dir} to run that "
            "stage again")


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
        """The stage's record ({} if it has none), checked against `RECORD_SHAPE` (`DocumentError` names
        the file and what to do)."""
        path = self.dir / RECORD
        if not os.path.lexists(path):
            return {}
        rec = read_document(path, RECORD_SHAPE, fix=record_fix(self.dir))
        found = problem(rec["outputs"], DONE_OUTPUTS.get(self.kind, dict), ("outputs",)) \
            if rec["status"] == "done" else None
        if found:
            raise DocumentError(f"{path}: {found}; {record_fix(self.dir)}")
        return rec

    def record_outputs(self) -> dict:
        return self.record().get("outputs") or {}

    def output(self, what: str) -> Path:
        """The file or directory `what` this stage left for later ones, found by its kind; refused
        (`OutputError`) when a link or special file lies on the way or anywhere under it."""
        if self.dir.is_symlink():
            raise OutputError(f"{self.dir} is a symbolic link; a run writes its stages as directories: "
                              f"{record_fix(self.dir)}")
        path = inside(self.dir, OUTPUTS[self.kind][what], what=f"{self.name}'s {what}", fix=record_fix(self.dir))
        bad = not_plain(path)
        if bad:
            raise OutputError(f"{bad} is a symbolic link or special file, and a run writes none; "
                              f"nothing was read through it: {record_fix(self.dir)}")
        return path

    def foreign(self) -> list[str]:
        """Entries of the stage directory that a stage of this kind does not write, or that are links."""
        return foreign_in_stage(self.dir, self.kind)

    def describe(self) -> dict:
        """The part of the record that must match for the stage to be skipped."""
        return {"settings": dataclasses.asdict(self.settings) if dataclasses.is_dataclass(self.settings)
                else self.settings}


def foreign_in_stage(directory: Path, kind: str) -> list[str]:
    """Entries of stage directory `directory` that a stage of `kind` does not write (its record, its
    files, their temporaries `.NAME.*`), or that are links; none if it is no directory."""
    if not directory.is_dir() or directory.is_symlink():
        return []
    mine = (RECORD, *WRITES[kind])
    return sorted(p.name for p in directory.iterdir()
                  if p.is_symlink() or not any(p.name == n or p.name.startswith(f".{n}.") for n in mine))


def foreign_words(directory: Path, foreign: list[str], writer: str) -> tuple[str, str]:
    """What `foreign_in_stage` found in `directory`, and what to do about it, in words: a link at a name
    the stage does write is named as a link (hybridprune never writes one), not as a stranger."""
    links = [n for n in foreign if (directory / n).is_symlink()]
    others = [n for n in foreign if n not in links]
    said, todo = [], []
    if others:
        said.append(f"{', '.join(others[:5])}, which {writer} does not write")
        todo.append("move that away")
    if links:
        many = len(links) > 1
        said.append(f"{', '.join(links[:5])} as {'symbolic links' if many else 'a symbolic link'}, which hybridprune "
                    "never writes (and does not follow)")
        todo.append(f"delete {'those links' if many else 'that link'} (its target is not touched)")
    return f"{directory} holds {'; and '.join(said)}", " and ".join(todo)


def not_plain(root: Path) -> Path | None:
    """The first link or special file (FIFO, device, socket) at or under `root` (not followed), or None."""
    todo = [root]
    while todo:
        path = todo.pop()
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(mode):
            todo.extend(path.iterdir())
        elif not stat.S_ISREG(mode):
            return path
    return None


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
    # the override is checked against the section's keys and types by `schema.check_round_sections`
    return recipe.section(name, override)


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
            prune = dataclasses.replace(prune or recipe.section("prune"), plan=rnd.plan)
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
            cal = recipe.section("calibrate")
        c = add("calibrate", r, cal, model_in=model_in)
        s = add("search", r, search, model_in=model_in, inputs={"calibrate": c}) if search is not None else None
        p = add("prune", r, prune or recipe.section("prune"), model_in=model_in, inputs={"calibrate": c, "search": s})
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

    try:
        return Plan.parse(spec)
    except PlanError as exc:
        raise plan_error(exc, r, rnd, lines, file) from None


def plan_error(exc: Exception, r: int, rnd: Round, lines: dict, file: str) -> RecipeError:
    """`exc`, a fault of round `r`'s fixed plan, as a RecipeError naming the line that gives the plan."""
    path = ("rounds", r - 1, "plan") if rnd.plan is not None else (
        ("rounds", r - 1, "prune", "plan") if (rnd.prune or {}).get("plan") is not None else ("prune", "plan"))
    line = lines.get(path, lines.get(path[:-1], "?"))
    return RecipeError(f"{file}:{line}: {_where(path)}: {exc}")


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


