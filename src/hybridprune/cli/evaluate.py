"""`hybridprune eval`: loss, perplexity, bits per byte, lm-eval tasks and generation speed of checkpoints, side by side."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..options import EVAL
from ..stages.evaluate import EVAL_JSON, EVAL_MD, EvalSettings  # noqa: F401 - importable here
from . import shared
from .checks import check_data_path, check_not_blank, listed
from .common import CliError, console, fail_cleanly, voice

D = EvalSettings()
#: the flags that name the stage's inputs and output rather than its settings
IO_FLAGS = ("models", "data", "out", "overwrite")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise CliError(f"{option} takes comma-separated whole numbers, e.g. 1,8; got {text!r}") from None
    if EVAL["batch_sizes"].problem(option, list(values)):  # the rule of --batch-sizes and --context alike
        raise CliError(f"{option} needs positive numbers, e.g. 1,8; got {text!r}")
    return values


def _names(models: list[Path]) -> list[str]:
    names: list[str] = []
    for path in models:
        name = str(path)
        names.append(name if name not in names else f"{name} #{len(names) + 1}")
    return names


def _rich_table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _task_list(tasks: str | None) -> list[str]:
    if tasks is None:
        return []
    from ..evaluate import LOCAL_TASKS

    return listed("--tasks", tasks, ",".join(LOCAL_TASKS))


def _joined(values) -> str:
    return ",".join(str(v) for v in values)


@fail_cleanly
def eval_command(
    models: list[Path] = typer.Argument(..., help="One or more Hugging Face checkpoint directories; the first is the reference for ratios."),
    data: str = typer.Option(None, "--data", help="Text source for loss, perplexity and bits per byte: .txt/.jsonl/.json/.parquet, a saved dataset, or 'shakespeare'."),
    split: str = typer.Option(D.split, help="Data split to measure on (validation, test, ...)."),
    samples: int = typer.Option(D.samples, **EVAL.bounds("samples"), help="Samples to evaluate."),
    seq_len: int = typer.Option(D.seq_len, "--seq-len", **EVAL.bounds("seq_len"), help="Tokens per sample."),
    batch_size: int = typer.Option(D.batch_size, "--batch-size", **EVAL.bounds("batch_size"), help="Samples per forward pass (loss and tasks)."),
    speed: bool = typer.Option(D.speed, "--speed/--no-speed", help="Measure generation speed side by side: prefill, time to first token, cached decode, peak memory, cache size."),
    batch_sizes: str = typer.Option(_joined(D.batch_sizes), "--batch-sizes", help="Batch sizes for --speed, comma-separated."),
    context: str = typer.Option(_joined(D.context), "--context", help="Prompt lengths in tokens for --speed, comma-separated."),
    new_tokens: int = typer.Option(D.new_tokens, "--new-tokens", **EVAL.bounds("new_tokens"), help="Tokens decoded per sequence for --speed (no early stop)."),
    repeats: int = typer.Option(D.repeats, "--repeats", **EVAL.bounds("repeats"), help="Interleaved timed rounds for --speed (the median is reported)."),
    warmup: int = typer.Option(D.warmup, "--warmup", **EVAL.bounds("warmup"), help="Untimed warm-up rounds for --speed."),
    tasks: str = typer.Option(_joined(D.tasks) or None, "--tasks", help="lm-eval tasks, comma-separated: next_line_choice, corpus_bpb (shipped, offline), any task your lm-eval knows, or a task YAML path. Needs hybridprune[eval]."),
    task_limit: float = typer.Option(D.task_limit, "--task-limit", help="At most this many documents per task (a number >= 1, or a fraction < 1)."),
    out: Path = typer.Option(None, "--out", help=f"Directory for {EVAL_JSON} and {EVAL_MD} (created; refused if not empty unless --overwrite)."),
    overwrite: bool = shared.overwrite("an earlier evaluation"),
    text_field: str = shared.text_field(D.text_field),
    seed: int = shared.seed(D.seed, "Seed for sampling the windows and the speed prompts."),
    device: str = shared.device(D.device),
    device_map: str = shared.device_map("models larger than one device"),
    dtype: str = shared.dtype(D.dtype),
    force: bool = shared.force(D.force),
    trust_remote_code: bool = shared.trust_remote_code(D.trust_remote_code, "the checkpoints'"),
) -> None:
    """Measure every checkpoint on the same footing and print the tables (and write them with --out)."""
    from ..stages import evaluate

    EVAL.check({"task_limit": task_limit, "dtype": dtype})
    check_not_blank(("--data", data, "shakespeare"), ("--text-field", text_field, "text"))
    check_data_path("--data", data)
    settings = EvalSettings(
        split=split, samples=samples, seq_len=seq_len, batch_size=batch_size, speed=speed, new_tokens=new_tokens,
        batch_sizes=list(_int_list(batch_sizes, "--batch-sizes")), context=list(_int_list(context, "--context")),
        repeats=repeats, warmup=warmup, tasks=_task_list(tasks),
        task_limit=task_limit, text_field=text_field, seed=seed, device=device, device_map=device_map, dtype=dtype,
        force=force, trust_remote_code=trust_remote_code)
    evaluation = evaluate.run(settings, dict(zip(_names(models), models)), data, out, overwrite=overwrite,
                              voice=voice())
    _show(evaluation.result, evaluation.title, speed)
    if out is not None:
        console.print(f"written: [bold]{out / EVAL_JSON}[/], [bold]{out / EVAL_MD}[/]")


def _show(evaluation: dict, title: str, speed: bool) -> None:
    from ..evaluate.tables import (
        kernels_text,
        quality_table,
        speed_note,
        speed_table,
        tokenizer_note,
    )

    console.print(_rich_table(title, *quality_table(evaluation)))
    if tokenizer_note(evaluation):
        console.print(escape(tokenizer_note(evaluation)), highlight=False, soft_wrap=True)
    if speed:
        console.print(_rich_table("generation speed (medians; ratio to the first model)", *speed_table(evaluation)))
        console.print(speed_note(evaluation))
        console.print(kernels_text(evaluation))
