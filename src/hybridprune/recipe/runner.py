"""`hybridprune run RECIPE --out DIR`: the stages of a recipe, each in `DIR/NN-stage/`, resumable.

Each stage directory holds `record.json`: the stage's settings, the settings all stages share, the
versions, the keys of its inputs, and when it finished what it wrote. A rerun skips a stage whose
record still matches (`plan.assign_keys`), resumes one that was interrupted (distillation from its
last checkpoint, the search from its candidate log; the others start that stage again, their outputs
being written atomically), and reruns a stage whose section changed, with every stage after it that
reads its output, saying why. Under torchrun every process plans the same stages; the distillation
runs on all of them and the other stages on rank 0 while the rest wait.

A run directory may come from someone else, so nothing in it is trusted: records are checked against
their shape (`plan.RECORD_SHAPE`), the files a stage left are found by its kind (`plan.OUTPUTS`), and a
stage directory is emptied or continued only if the run wrote it (listed in the manifest, no link) and
it holds only what its stage writes; anything else is refused, naming it, before any stage runs. One run
at a time writes a run directory (`output.lock.locked`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from . import stages as run_stages
from .loader import load_file, load_text
from .plan import (
    OUTPUTS, RECORD, REPORT_FILES, WRITES, Stage, assign_keys, data_fingerprint, find, foreign_in_stage, foreign_words,
    model_fingerprint, record_fix, stages, versions,
)
from .schema import Recipe, build, check_round_sections
from ..output.atomic import MANIFEST, OutputError

RECIPE_COPY = "recipe.yaml"
#: stages that continue where they were interrupted (from the candidate log, from the last checkpoint)
RESUMABLE = ("search", "distill")


def load_recipe(path: str | Path) -> tuple[Recipe, Any, dict]:
    """The checked recipe, its document and its key lines (`RecipeError` names file, line and key)."""
    return check(*load_file(path), str(path))


def check(doc, lines: dict, file: str) -> tuple[Recipe, Any, dict]:
    recipe = build(Recipe, doc, (), lines, file)
    check_round_sections(recipe, lines, file)
    return recipe, doc, lines


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2, default=str, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _changed(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def decide(all_stages: list[Stage], common: dict, from_stage: Stage | None) -> dict[Stage, tuple[str, str]]:
    """(action, why) per stage: skip, run, resume or rerun."""
    out: dict[Stage, tuple[str, str]] = {}
    rerunning: list[Stage] = []
    for st in all_stages:
        if from_stage is not None and st.index >= from_stage.index:  # run again whatever its record says
            out[st] = ("rerun" if os.path.lexists(st.dir / RECORD) else "run", f"--from {from_stage.name}")
            rerunning.append(st)
            continue
        rec = st.record()
        files = [st.dir / name for name in OUTPUTS[st.kind].values()]
        if rec.get("key") == st.key and rec.get("status") == "done" and all(
                f.exists() and not f.is_symlink() for f in files):
            out[st] = ("skip", "finished, and its record matches")
        elif rec.get("key") == st.key and rec.get("status") == "running":
            out[st] = ("resume", "interrupted")
        elif rec:
            diff = _changed(rec.get("describe", {}).get("settings", {}), st.describe()["settings"])
            if diff:
                why = f"the recipe's {st.kind} section changed ({'; '.join(diff)})"
            elif rec.get("common", {}).get("versions") != common["versions"]:
                why = f"versions changed ({'; '.join(_changed(rec['common'].get('versions', {}), common['versions']))})"
            elif {k: v for k, v in rec.get("common", {}).items() if k != "versions"} != \
                    {k: v for k, v in common.items() if k != "versions"}:
                why = "the model, data, seed or dtype changed"
            elif rerunning:
                why = f"its input changed ({rerunning[-1].name} runs again)"
            elif rec.get("status") == "done":
                why = "its outputs are missing"
            else:
                why = "its record is of another run"
            out[st] = ("rerun", why)
        else:
            out[st] = ("run", "not run yet")
        if out[st][0] in ("run", "rerun"):
            rerunning.append(st)
    return out


class Run:
    """One invocation of `hybridprune run`."""

    def __init__(self, text: str, name: str, out: str | Path, *, console, from_stage: str | None = None):
        self.text, self.name = text, name
        self.recipe, self.doc, self.lines = check(*load_text(text, name), name)
        self.out = Path(out)
        self.console = console
        self.stages = stages(self.recipe, self.out, self.lines, name)
        self.from_stage = find(self.stages, from_stage) if from_stage else None

    def plan(self) -> dict[Stage, tuple[str, str]]:
        source = run_stages.model_path(self.recipe.model)
        self._check_fixed_plans(source)
        fp = model_fingerprint(source)
        assign_keys(self.stages, self.recipe, fp)
        r = self.recipe
        self.common = {"model": fp, "data": data_fingerprint(r.data),
                       "text_field": r.text_field, "seed": r.seed, "dtype": r.dtype, "versions": versions()}
        self._check_places()  # before any record is read: none is read through a link
        self.decisions = decide(self.stages, self.common, self.from_stage)
        self._check_contents()
        return self.decisions

    def _check_fixed_plans(self, source: Path) -> None:
        """A fixed plan that cannot prune the recipe's model (a field the model lacks, a size it cannot
        take, an engine rule) is refused now, from the model's config, naming its line: not after the
        calibration before it has run. Later rounds prune a student that does not exist yet."""
        from ..options import SettingError
        from ..pruning.apply import PruneError
        from ..stages.prune import check_model
        from .plan import plan_error
        from .schema import Round

        for st in self.stages:
            if st.kind == "prune" and st.plan is not None and st.model_in is None:
                rnd = (self.recipe.rounds or [Round()])[(st.round or 1) - 1]
                try:
                    check_model(st.settings, source, st.plan)
                except (ValueError, SettingError, PruneError) as exc:
                    raise plan_error(exc, st.round or 1, rnd, self.lines, self.name) from None

    def _check_places(self) -> None:
        """Refuse a stage directory or report file that this run did not write: a link, or (but for a
        report `hybridprune report` wrote) an entry the run directory's manifest does not list."""
        from ..output.atomic import owned_names
        from ..report.run import check_report_files

        owned = owned_names(self.out) if self.out.is_dir() else set()
        report = any(st.kind == "report" for st in self.stages)
        listed = [st.name for st in self.stages] + (["results.json"] if report else [])  # the manifest's
        for name in dict.fromkeys(listed + (list(REPORT_FILES) if report else [])):
            path = self.out / name
            if path.is_symlink():
                raise OutputError(f"{path} is a symbolic link, and a run writes none; nothing was read or removed "
                                  f"through it. Remove the link or choose another --out")
            if path.exists() and name in listed and name not in owned:
                raise OutputError(f"{path} was not written by this run (the run directory's {MANIFEST} does not "
                                  f"list it), so it is neither read nor replaced; move it away or choose another --out")
        for st in self.stages:
            if st.dir.exists() and not st.dir.is_dir():
                raise OutputError(f"{st.dir} is not a directory, so it is no stage of this run; {record_fix(st.dir)}")
        if report and self.out.is_dir():
            check_report_files(self.out)  # report files there: hybridprune's own, or refused

    def _check_contents(self) -> None:
        """Refuse to empty or continue a stage directory holding what its stage does not write, and a
        finished stage whose files hold a link (later stages read them)."""
        for st in self.stages:
            if self.decisions[st][0] == "skip":
                for what in OUTPUTS[st.kind]:
                    st.output(what)
            else:
                foreign = st.foreign()
                if foreign:
                    found, todo = foreign_words(st.dir, foreign, st.name)
                    raise OutputError(f"{found}, so it is not emptied: {todo}, then run again (or delete "
                                      f"{st.dir} to run that stage again)")

    # ---- --dry-run ----
    def dry_run(self) -> None:
        from rich.table import Table

        from .forecasts import stage_forecast

        decisions = self.plan()
        source = run_stages.model_path(self.recipe.model)
        table = Table(title=f"{self.name} → {self.out}")
        for col in ("stage", "round", "action", "why", "memory forecast"):
            table.add_column(col)
        for st in self.stages:
            action, why = decisions[st]
            try:
                forecast = stage_forecast(st, self.recipe, source)
            except Exception as exc:  # noqa: BLE001 - a forecast is advice; say why it is missing
                forecast = f"(none: {exc})"
            table.add_row(st.name, str(st.round or "-"), action, why, forecast)
        self.console.print(table)

    # ---- the run ----
    def execute(self, *, overwrite: bool = False) -> dict[str, Any]:
        with contextlib.ExitStack() as held:
            return self._execute(held, overwrite)

    def _execute(self, held: contextlib.ExitStack, overwrite: bool) -> dict[str, Any]:
        from ..output.atomic import check_output, claim, owned_names
        from ..output.lock import LOCK, locked
        from ..output.cleanup import remove_if_failed

        rank, world = _distributed()
        if rank == 0:
            # a dangling link, a file, an unwritable place or a foreign manifest: refused before any work
            check_output(self.out, overwrite=overwrite, resume=True)
            # a run that fails before any stage has something to resume from leaves no directory behind
            remove_if_failed(self.out, keep=_worth_resuming,
                             note=f"finished stages are kept in {self.out}; run the same command again to continue")
            if self.out.is_dir():  # a run killed while recording its names leaves a dead temporary only
                from ..output.leftovers import remove_dead_temporaries

                remove_dead_temporaries(self.out)
            exists = self.out.is_dir() and any(p.name != LOCK for p in self.out.iterdir())
            if exists and (overwrite or RECIPE_COPY not in owned_names(self.out)):
                check_output(self.out, overwrite=overwrite)  # refuses a directory that is not ours
                if not overwrite:
                    raise OutputError(f"--out {self.out} is not a run directory")
            held.enter_context(locked(self.out))  # a second run of the same directory is refused
            if exists and overwrite:
                _check_stage_dirs(self.out, owned_names(self.out))
                for name in sorted(owned_names(self.out) - {LOCK}):  # --overwrite: start afresh
                    path = self.out / name
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
        _barrier(world)
        decisions = self.plan()
        if rank == 0:
            claim(self.out, [RECIPE_COPY, *(st.name for st in self.stages)])
            (self.out / RECIPE_COPY).write_text(self.text)
        _barrier(world)
        ctx = run_stages.Context(self.recipe, self.out, self.console if rank == 0 else None, rank, world)
        ctx.recipe_doc = self.doc
        for st in self.stages:
            action, why = decisions[st]
            if action == "skip":
                if rank == 0:
                    self.console.print(f"[dim]{st.name}: skipped ({why})[/]")
                continue
            if rank == 0:
                self.console.rule(f"[bold]{st.name}[/]" + (f" (round {st.round})" if st.round else ""))
                self.console.print(f"{st.name}: {action} ({why})", highlight=False)
                if action != "resume" or st.kind not in RESUMABLE:
                    run_stages.clear(st)  # the others start again: their outputs are written atomically
                self._record(st, "running")
            _barrier(world)
            start = time.perf_counter()
            outputs = None
            if st.distributed or rank == 0:
                torch.manual_seed(self.recipe.seed)
                outputs = self._run_stage(ctx, st, action)
            _barrier(world)
            if rank == 0:
                self._record(st, "done", outputs=outputs, seconds=round(time.perf_counter() - start, 1))
        _barrier(world)
        return {st.name: st.record() for st in self.stages}

    def _run_stage(self, ctx, st: Stage, action: str) -> dict:
        if st.kind == "distill":
            return run_stages.distill(ctx, st, st.dir, resume=action == "resume")
        if st.kind == "report":
            return run_stages.report(ctx, st, st.dir, self.stages)
        if st.kind == "eval":
            return run_stages.evaluate(ctx, st, st.dir)
        return getattr(run_stages, st.kind)(ctx, st, st.dir)

    def _record(self, st: Stage, status: str, *, outputs: dict | None = None, seconds: float | None = None) -> None:
        st.dir.mkdir(parents=True, exist_ok=True)
        files = [name for name in OUTPUTS[st.kind].values() if (st.dir / name).exists()]
        _write_json(st.dir / RECORD, {
            "stage": st.kind, "name": st.name, "round": st.round, "key": st.key, "status": status,
            "describe": st.describe(), "common": self.common, "inputs": _input_names(st),
            "outputs": outputs or {}, "files": files, "seconds": seconds,
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat() if status == "done" else None,
        })


def _check_stage_dirs(out: Path, names) -> None:
    """Refuse, before `--overwrite` removes them, stage directories (`NN-kind`) holding what their stage does
    not write: the manifest lists the directory, not what someone put in it since."""
    for name in sorted(names):
        number, _, kind = name.partition("-")
        if number.isdigit() and kind in WRITES:
            foreign = foreign_in_stage(out / name, kind)
            if foreign:
                found, todo = foreign_words(out / name, foreign, f"a {kind} stage")
                raise OutputError(f"{found}, so --overwrite removes nothing: {todo}, then run again")


def _worth_resuming(out: Path) -> bool:
    """Whether run directory `out` holds a finished stage, or an interrupted stage that resumes
    (a search's candidate log, a distillation's checkpoints)."""
    from ..output.documents import DocumentError, read_document

    for stage_dir in out.iterdir():
        if stage_dir.is_symlink() or not stage_dir.is_dir():
            continue
        record = stage_dir / RECORD
        try:
            doc = read_document(record, {"status": str, "stage": str}, fix="")
        except (DocumentError, OSError):
            continue
        if doc.get("status") == "done":
            return True
        if doc.get("stage") in RESUMABLE and any(p.name != RECORD for p in record.parent.iterdir()):
            return True
    return False


def _input_names(st: Stage) -> dict[str, Any]:
    out: dict[str, Any] = {"model": st.model_in.name if st.model_in else "recipe model"}
    for k, v in st.inputs.items():
        if isinstance(v, Stage):
            out[k] = v.name
    return out


def _distributed() -> tuple[int, int]:
    """Join torchrun's process group (with a timeout long enough for rank 0's stages); (rank, world)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo",
                                timeout=datetime.timedelta(days=7))
    return dist.get_rank(), dist.get_world_size()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()

