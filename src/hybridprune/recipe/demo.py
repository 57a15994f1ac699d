"""`hybridprune demo`: `hybridprune run` of the shipped `recipes/demo.yaml`, one code path.

`DemoSettings` are the demo's flags; their defaults are the recipe's values (a test checks that the
defaults leave the recipe unchanged), and each one sets the recipe keys it stands for. The run goes
through the recipe runner (`hybridprune.recipe`): one `NN-stage/` per stage, resumable, the report,
`results.json` and the student's card at the end.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console


SCALED = -1  # `task_limit`: in proportion to `val_samples`


@dataclass
class DemoSettings:
    """Sizes of the demo run; the defaults (those of `recipes/demo.yaml`) finish in minutes on 2 CPU cores.

    A size left at None follows the size it scales with (`sized`), so the flags of `hybridprune demo`
    reach every stage: `calib_samples` the depth samples, `search_top_k` the candidates searched,
    `val_samples` the lm-eval task documents, `seq_len` the generation speed's context and new tokens,
    `batch` its batch sizes."""

    out: str = "runs/demo"
    teacher: str | None = None  # a checkpoint or a bundled teacher's name; default: the shipped tiny Nemotron-H
    data: str = "shakespeare"
    target_params: float = 0.5  # fraction of the teacher's non-embedding parameters
    seq_len: int = 256
    calib_samples: int = 128
    depth_samples: int | None = None  # None: an eighth of calib_samples (16)
    val_samples: int = 48  # held out: the search's zero-shot loss, the distillation's validation, the evaluation
    search_top_k: int = 3
    search_max_candidates: int | None = None  # None: 4 per top-k candidate (12)
    search_kd_steps: int = 15
    kd_steps: int = 150
    batch: int = 8
    lr: float = 1e-3
    min_lr: float = 1e-4
    seed: int = 0
    overwrite: bool = False
    # generation speed of teacher / pruned / distilled, side by side (see evaluate.speed)
    speed_batch_sizes: tuple[int, ...] | None = None  # None: 1 and `batch`
    speed_contexts: tuple[int, ...] | None = None  # None: seq_len
    speed_new_tokens: int | None = None  # None: an eighth of seq_len (32)
    speed_repeats: int = 3
    # lm-eval tasks (skipped with a note when lm-eval is not installed)
    tasks: tuple[str, ...] = ("next_line_choice", "corpus_bpb")
    task_limit: int | None = SCALED  # documents per task; SCALED: 100 at 48 val_samples, in proportion; None: all

    def sized(self) -> "DemoSettings":
        """These settings with every size left to follow another one filled in."""
        return dataclasses.replace(
            self,
            depth_samples=max(1, self.calib_samples // 8) if self.depth_samples is None else self.depth_samples,
            search_max_candidates=(4 * self.search_top_k if self.search_max_candidates is None
                                   else self.search_max_candidates),
            speed_batch_sizes=(tuple(dict.fromkeys((1, self.batch))) if self.speed_batch_sizes is None
                               else self.speed_batch_sizes),
            speed_contexts=(self.seq_len,) if self.speed_contexts is None else self.speed_contexts,
            speed_new_tokens=max(1, self.seq_len // 8) if self.speed_new_tokens is None else self.speed_new_tokens,
            task_limit=max(1, round(100 * self.val_samples / 48)) if self.task_limit == SCALED else self.task_limit)


def demo_recipe_path() -> Path:
    from . import SHIPPED

    return SHIPPED / "demo.yaml"


def demo_recipe(settings: DemoSettings) -> dict[str, Any]:
    """The shipped demo recipe with the keys each setting stands for set from `settings`."""
    s = settings.sized()
    doc = copy.deepcopy(yaml.safe_load(demo_recipe_path().read_text()))
    if s.teacher:  # a directory, or a shipped teacher's name (tiny-qwen3-5)
        from ..data import resolve_teacher

        doc["model"] = str(resolve_teacher(str(s.teacher)))
    doc.update(data=s.data, seed=s.seed)
    doc["calibrate"].update(samples=s.calib_samples, seq_len=s.seq_len, batch_size=s.batch,
                            depth_samples=s.depth_samples)
    doc["search"].update(params=f"{s.target_params:g}x", seq_len=s.seq_len, batch=s.batch, top_k=s.search_top_k,
                         max_candidates=s.search_max_candidates, kd_steps=s.search_kd_steps, kd_batch=s.batch,
                         kd_micro_batch=s.batch, kd_lr=s.lr, kd_min_lr=s.min_lr, eval_samples=s.val_samples,
                         eval_seq_len=s.seq_len, batch_size=s.batch)
    doc["distill"].update(steps=s.kd_steps, seq_len=s.seq_len, global_batch=s.batch, micro_batch=s.batch, lr=s.lr,
                          min_lr=s.min_lr, warmup=max(1, s.kd_steps // 10), val_samples=s.val_samples,
                          eval_every=max(1, s.kd_steps // 5))
    doc["eval"].update(samples=s.val_samples, seq_len=s.seq_len, batch_size=s.batch, tasks=list(s.tasks),
                       task_limit=s.task_limit, batch_sizes=list(s.speed_batch_sizes),
                       context=list(s.speed_contexts), new_tokens=s.speed_new_tokens, repeats=s.speed_repeats)
    teacher = f"`{s.teacher}`" if s.teacher else "The shipped tiny Nemotron-H"
    doc["report"]["intro"] = (
        f"{teacher} pruned group-aware to {s.target_params:g}x of its non-embedding parameters, then distilled for "
        f"{s.kd_steps} steps on `{s.data}`. Loss, perplexity and bits per byte are measured on {s.val_samples} "
        f"held-out samples of {s.seq_len} tokens; tasks run through lm-evaluation-harness on the held-out test "
        "plays; generation speed is measured on this machine with the three models interleaved.")
    return doc


def run_demo(settings: DemoSettings | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run the demo recipe into `settings.out`; returns the measured results (`results.json`)."""
    from ..output.documents import read_document
    from ..report.run import RESULTS_SHAPE
    from . import run_recipe_text

    settings = settings or DemoSettings()
    console = console or Console(stderr=True)
    text = "# hybridprune demo: recipes/demo.yaml with the demo's flags applied\n" + \
        yaml.safe_dump(demo_recipe(settings), sort_keys=False)
    out = Path(settings.out)
    run_recipe_text(text, "demo recipe", out, console=console, overwrite=settings.overwrite)
    console.print(f"report: [bold]{out / 'report.html'}[/] and [bold]{out / 'report.md'}[/]  "
                  f"student: [bold]{out / '04-distill' / 'student'}[/]")
    return read_document(out / "results.json", RESULTS_SHAPE, non_finite=True,
                         fix="it changed after the run wrote it: run the demo again with --overwrite")
