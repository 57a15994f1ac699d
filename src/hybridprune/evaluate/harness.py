"""Downstream tasks through lm-evaluation-harness, run in process on a model object already loaded.

lm-eval's `HFLM` wraps the model itself (`HFLM(pretrained=model, tokenizer=...)`), so anything we
hold in memory can be scored, including a pruned model that was never saved. lm-eval's built-in tasks
fetch their data from the Hub, so two small tasks built from the bundled corpus's held-out test split
ship with the package (`scripts/build_eval_tasks.py` rebuilds them):

- `next_line_choice`: multiple choice, which of four lines follows four lines of a play (acc);
- `corpus_bpb`: rolling log-likelihood of passages (bits per byte, byte and word perplexity).

Their YAML names the JSONL beside it as `{{data_dir}}/...`; at run time the YAML is copied into a
temporary include directory with the absolute path of the installed data filled in, so the tasks
resolve offline wherever the package is installed. Any other task name, or a path to a task YAML,
goes to lm-eval as it is (built-in tasks need the Hub reachable).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
LOCAL_TASKS = ("next_line_choice", "corpus_bpb")
#: the figure shown per task in tables (lm-eval reports more; all of it goes to the JSON)
HEADLINE = {"next_line_choice": "acc", "corpus_bpb": "bits_per_byte"}


class MissingExtra(ImportError):
    """lm-evaluation-harness is not installed."""


def require_lm_eval():
    """lm-eval's entry points, or `MissingExtra` naming the extra that installs it."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise MissingExtra(
            "downstream tasks need lm-evaluation-harness, which is not installed: "
            "pip install 'hybridprune[eval]' (or pip install lm-eval)"
        ) from exc
    return lm_eval, HFLM, TaskManager


def _task_name_of(yaml_path: Path) -> str:
    import yaml

    try:
        # lm-eval YAML may carry `!function` tags; only the task name is needed here
        loader = type("_Loader", (yaml.SafeLoader,), {})
        loader.add_multi_constructor("!", lambda *_: None)
        doc = yaml.load(yaml_path.read_text(), Loader=loader)  # noqa: S506 (a SafeLoader subclass)
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read the task YAML {yaml_path}: {exc}") from exc
    name = doc.get("task") if isinstance(doc, dict) else None
    if not isinstance(name, str):
        raise ValueError(f"{yaml_path} has no `task:` name; it is not an lm-eval task file")
    return name


def resolve_tasks(tasks: Sequence[str], include_dir: Path) -> tuple[list[str], list[Path]]:
    """Task names for lm-eval, and the include paths they need. Local tasks are materialised into `include_dir`."""
    names: list[str] = []
    include: list[Path] = [include_dir]
    if any(spec.strip() in LOCAL_TASKS for spec in tasks):
        # every shipped task, not only those named, once: lm-eval's index of the folder is kept per process
        # (`_task_manager`), and one made when it held fewer tasks would not know the others
        for local in LOCAL_TASKS:
            text = (TASKS_DIR / f"{local}.yaml").read_text().replace("{{data_dir}}", TASKS_DIR.as_posix())
            (include_dir / f"{local}.yaml").write_text(text)
    for spec in tasks:
        spec = spec.strip()
        if not spec:
            continue
        if spec in LOCAL_TASKS:
            names.append(spec)
        elif spec.endswith((".yaml", ".yml")):
            path = Path(spec).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"task file {path} does not exist")
            names.append(_task_name_of(path))
            include.append(path.resolve().parent)
        else:
            names.append(spec)
    if not names:
        raise ValueError("no tasks given; name at least one, e.g. next_line_choice,corpus_bpb")
    return names, include


def _flatten(results: dict[str, Any], names: Sequence[str]) -> dict[str, dict[str, float]]:
    """`{"acc,none": 0.3, "acc_stderr,none": ...}` -> `{"acc": 0.3, "acc_stderr": ...}` per task."""
    out: dict[str, dict[str, float]] = {}
    for task, metrics in results.items():
        if task not in names and not any(task.startswith(f"{n}_") for n in names):
            continue
        row = {}
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and metric != "sample_len":
                row[metric if filt in ("", "none") else f"{metric},{filt}"] = float(value)
        out[task] = row
    return out


@contextlib.contextmanager
def _quiet():
    """lm-eval logs every request batch at INFO; keep the user's console to our own table (a level
    raised further, as the command line does without -v, stays)."""
    loggers = [logging.getLogger(n) for n in ("lm_eval", "lm-eval")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.level, logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _bars_off() -> bool:
    """tqdm's own switch (`TQDM_DISABLE`, which the command line sets without -v)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")


def _bars_hidden():
    """With `TQDM_DISABLE` set, lm-eval's bars go nowhere: it passes `disable=` to its request bars
    itself, and tqdm reads the variable only when it is first imported; both write to `sys.stderr`.
    Its log lines and warnings go through `logging`, whose handlers keep the real stream."""
    return contextlib.redirect_stderr(io.StringIO()) if _bars_off() else contextlib.nullcontext()


@functools.lru_cache(maxsize=8)
def _task_manager(TaskManager, include: tuple[str, ...], builtin: bool):
    """One index per process and set of task folders: lm-eval's own ~200 folders take many seconds to
    index, and the tasks are checked before loading, then run for every model."""
    return TaskManager(include_path=list(include), include_defaults=builtin, verbosity="ERROR")


@functools.lru_cache(maxsize=1)
def _include_dir() -> Path:
    """Where the shipped tasks are materialised, once per process (removed at exit)."""
    path = Path(tempfile.mkdtemp(prefix="hybridprune-tasks-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _known_tasks(TaskManager, tasks: Sequence[str], names: Sequence[str], include: Sequence[Path]):
    """lm-eval's task manager for `tasks`; ValueError naming the valid tasks when one is unknown."""
    # lm-eval's own task folders are indexed only when a task needs them
    given = [t.strip() for t in tasks if t.strip()]
    builtin = any(t not in LOCAL_TASKS and not t.endswith((".yaml", ".yml")) for t in given)
    manager = _task_manager(TaskManager, tuple(str(p) for p in include), builtin)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise ValueError(f"lm-eval does not know the task(s) {', '.join(unknown)}; valid tasks: "
                         f"{', '.join(LOCAL_TASKS)} (shipped), a task name of your lm-eval install "
                         "(`lm-eval ls tasks` lists them), or the path of a task YAML")
    return manager


def check_tasks(tasks: Sequence[str]) -> list[str]:
    """The lm-eval task names of `tasks`, checked before any model is loaded: MissingExtra without
    lm-eval, ValueError for no task, an unknown name or a task YAML that is missing or has no name."""
    lm_eval, HFLM, TaskManager = require_lm_eval()
    names, include = resolve_tasks(tasks, _include_dir())
    with _quiet():
        _known_tasks(TaskManager, tasks, names, include)
    return names


def run_tasks(model: torch.nn.Module, tokenizer, tasks: Sequence[str], *, limit: int | float | None = None,
              batch_size: int = 8, max_length: int | None = None, num_fewshot: int | None = None,
              seed: int = 0) -> dict[str, dict[str, float]]:
    """Score `model` on lm-eval `tasks` in process; returns `{task: {metric: value}}`.

    `tasks`: the local `next_line_choice` / `corpus_bpb`, any task name lm-eval knows, or a task YAML
    path. `limit` caps the documents per task (an int, or a fraction). `max_length`: the longest
    sequence fed to the model (default: the model's `max_position_embeddings`, else 2048).
    """
    lm_eval, HFLM, TaskManager = require_lm_eval()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_length is None:
        max_length = int(getattr(model.config, "max_position_embeddings", None) or 2048)
    was_training = model.training
    model.eval()
    try:
        # the shipped tasks' folder lives as long as the process, so lm-eval's index is reused
        names, include = resolve_tasks(tasks, _include_dir())
        with _quiet(), _bars_hidden():
            manager = _known_tasks(TaskManager, tasks, names, include)
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length,
                      device=str(next(model.parameters()).device))
            out = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, limit=limit,
                                          num_fewshot=num_fewshot, log_samples=False, bootstrap_iters=0,
                                          random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                          fewshot_random_seed=seed, verbosity="ERROR")
    finally:
        model.train(was_training)
    return _flatten(out["results"], names)


def headline(task: str, metrics: dict[str, float]) -> tuple[str, float | None]:
    """The one figure of a task shown in tables: its known headline metric, else the first finite one."""
    key = HEADLINE.get(task)
    if key in metrics:
        return key, metrics[key]
    for key in ("acc_norm", "acc", "exact_match", "bits_per_byte", "word_perplexity"):
        if key in metrics:
            return key, metrics[key]
    for key, value in metrics.items():
        if not key.endswith("_stderr") and math.isfinite(value):
            return key, value
    return "-", None
