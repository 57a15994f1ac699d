"""`hybridprune eval`: loss, perplexity, bits per byte, lm-eval tasks and generation speed of checkpoints, side by side."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..options import EVAL
from .checks import check_data_path, check_not_blank, listed
from .devices import check_device, check_device_map
from ..output.atomic import check_output
from .common import (
    CliError, check_checkpoint_dir, console, fail_cleanly, forecast_memory, load_config, load_model, load_tokenizer,
    resolve_device, weight_bytes,
)

EVAL_JSON = "eval.json"
EVAL_MD = "eval.md"


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


@fail_cleanly
def eval_command(
    models: list[Path] = typer.Argument(..., help="One or more Hugging Face checkpoint directories; the first is the reference for ratios."),
    data: str = typer.Option(None, "--data", help="Text source for loss, perplexity and bits per byte: .txt/.jsonl/.json/.parquet, a saved dataset, or 'shakespeare'."),
    split: str = typer.Option("validation", help="Data split to measure on (validation, test, ...)."),
    samples: int = typer.Option(256, **EVAL.bounds("samples"), help="Samples to evaluate."),
    seq_len: int = typer.Option(2048, "--seq-len", **EVAL.bounds("seq_len"), help="Tokens per sample."),
    batch_size: int = typer.Option(8, "--batch-size", **EVAL.bounds("batch_size"), help="Samples per forward pass (loss and tasks)."),
    speed: bool = typer.Option(False, "--speed/--no-speed", help="Measure generation speed side by side: prefill, time to first token, cached decode, peak memory, cache size."),
    batch_sizes: str = typer.Option("1,8", "--batch-sizes", help="Batch sizes for --speed, comma-separated."),
    context: str = typer.Option("2048,8192", "--context", help="Prompt lengths in tokens for --speed, comma-separated."),
    new_tokens: int = typer.Option(256, "--new-tokens", **EVAL.bounds("new_tokens"), help="Tokens decoded per sequence for --speed (no early stop)."),
    repeats: int = typer.Option(3, "--repeats", **EVAL.bounds("repeats"), help="Interleaved timed rounds for --speed (the median is reported)."),
    warmup: int = typer.Option(1, "--warmup", **EVAL.bounds("warmup"), help="Untimed warm-up rounds for --speed."),
    tasks: str = typer.Option(None, "--tasks", help="lm-eval tasks, comma-separated: next_line_choice, corpus_bpb (shipped, offline), any task your lm-eval knows, or a task YAML path. Needs hybridprune[eval]."),
    task_limit: float = typer.Option(None, "--task-limit", help="At most this many documents per task (a number >= 1, or a fraction < 1)."),
    out: Path = typer.Option(None, "--out", help=f"Directory for {EVAL_JSON} and {EVAL_MD} (created; refused if not empty unless --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier evaluation in --out (never files hybridprune did not write)."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text in JSON/parquet data."),
    seed: int = typer.Option(0, **EVAL.bounds("seed"), help="Seed for sampling the windows and the speed prompts."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    device_map: str = typer.Option(None, "--device-map", help="Spread models larger than one device over the GPUs, CPU and disk (accelerate's big-model inference): auto, balanced, sequential."),
    dtype: str = typer.Option("auto", help="auto (as saved; bfloat16 on a GPU), float32, bfloat16, float16."),
    force: bool = typer.Option(False, "--force", help="Start even when the memory forecast exceeds what the device has."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoints' own Python code."),
) -> None:
    """Measure every checkpoint on the same footing and print the tables (and write them with --out)."""
    check_device(device)
    check_device_map(device_map)
    EVAL.check({"task_limit": task_limit, "dtype": dtype})
    check_not_blank(("--data", data, "shakespeare"), ("--text-field", text_field, "text"))
    check_data_path("--data", data)
    if out is not None:
        check_output(out, overwrite=overwrite)
    for path in models:  # a wrong path is named before torch is imported
        check_checkpoint_dir(path)
    from ..data import load_token_samples
    from ..evaluate import LOCAL_TASKS, MissingExtra, SpeedSettings, compare_models
    from ..evaluate.tables import kernels_text, quality_table, speed_note, speed_table, tokenizer_note
    from ..output.atomic import atomic_directory

    task_list = [] if tasks is None else listed("--tasks", tasks, ",".join(LOCAL_TASKS))
    if data is None and not speed and not task_list:
        raise CliError("nothing to measure: give --data (loss, perplexity, bits per byte), --speed, or --tasks")
    speed_settings = None
    if speed:
        speed_settings = SpeedSettings(batch_sizes=_int_list(batch_sizes, "--batch-sizes"),
                                       contexts=_int_list(context, "--context"), new_tokens=new_tokens,
                                       warmup=warmup, repeats=repeats, seed=seed)
    limit = None if task_limit is None else (int(task_limit) if task_limit >= 1 else task_limit)
    if task_list:
        try:
            from ..evaluate.harness import check_tasks

            check_tasks(task_list)  # unknown names are refused before any model is loaded
        except MissingExtra as exc:
            raise CliError(str(exc)) from None

    names = _names(models)
    forecast_memory(_forecast(models, dtype, device, data is not None or task_list, batch_size, seq_len,
                              speed_settings, trust_remote_code),
                    force=force, lower="--batch-size, --seq-len, --batch-sizes or --context (or compare fewer models)",
                    spread=device_map is not None)
    loaded, tokenizers = {}, {}
    for name, path in zip(names, models):
        loaded[name] = load_model(path, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                                  device_map=device_map)
        if data is not None or task_list:
            tokenizers[name] = load_tokenizer(path, trust_remote_code=trust_remote_code)
    tokens = None
    if data is not None:  # the windows are chosen with the first model's tokenizer; each model reads their text
        first = loaded[names[0]]
        tokens = load_token_samples(data, tokenizers[names[0]], seq_len=seq_len, num_samples=samples, split=split,
                                    seed=seed, text_field=text_field, model_vocab_size=first.config.vocab_size)
    data_info = {} if data is None else {"source": data, "split": split, "samples": len(tokens), "seq_len": seq_len}
    try:
        evaluation = compare_models(loaded, tokenizers=tokenizers, samples=tokens, batch_size=batch_size,
                                    speed=speed_settings, tasks=task_list, task_limit=limit, data_info=data_info,
                                    progress=lambda msg: console.print(f"[dim]{msg}[/]"))
    except MissingExtra as exc:
        raise CliError(str(exc)) from None
    evaluation["checkpoints"] = {name: str(path) for name, path in zip(names, models)}

    title = f"{split} split of {data}: {len(tokens)} samples x {seq_len} tokens" if tokens is not None else "models"
    console.print(_rich_table(title, *quality_table(evaluation)))
    if tokenizer_note(evaluation):
        console.print(escape(tokenizer_note(evaluation)), highlight=False, soft_wrap=True)
    if speed_settings is not None:
        console.print(_rich_table("generation speed (medians; ratio to the first model)", *speed_table(evaluation)))
        console.print(speed_note(evaluation))
        console.print(kernels_text(evaluation))
    if out is not None:
        markdown = evaluation_markdown(evaluation, title)

        def write(tmp: Path) -> None:
            (tmp / EVAL_JSON).write_text(json.dumps(evaluation, indent=2) + "\n")
            (tmp / EVAL_MD).write_text(markdown)

        atomic_directory(out, write, overwrite=overwrite, what="the evaluation")
        console.print(f"written: [bold]{out / EVAL_JSON}[/], [bold]{out / EVAL_MD}[/]")


def _forecast(models, dtype, device, loss, batch_size, seq_len, speed, trust_remote_code):
    """Every model is held at once (they are measured interleaved); the largest pass of any one runs at a time."""
    from ..architectures import get_adapter
    from ..checkpoint.forecast import RUNTIME_BYTES, Forecast, available_bytes, forward_parts, generation_parts

    weights, peak = 0, {}
    for path in models:
        config = load_config(path, trust_remote_code=trust_remote_code)
        adapter = get_adapter(config)
        dims = adapter.dims(config)
        wb = weight_bytes(config, dtype, device)
        chunk = getattr(config, "chunk_size", None) or 128
        weights += adapter.num_parameters(dims) * wb
        passes = []
        if loss:
            f = forward_parts(adapter, dims, batch=batch_size, seq=seq_len, weight_bytes=wb, logit_copies=1.5,
                              chunk=chunk)
            passes.append({"activations": f["activations"] + f["logits"]})
        if speed is not None:
            passes.append(generation_parts(adapter, dims, batch=max(speed.batch_sizes), context=max(speed.contexts),
                                           new_tokens=speed.new_tokens, weight_bytes=wb, chunk=chunk))
        for p in passes:
            if sum(p.values()) > sum(peak.values()):
                peak = p
    target = str(resolve_device(device))
    return Forecast("evaluation", target, {"weights": weights, **peak, "runtime": RUNTIME_BYTES},
                    available_bytes(target))


def evaluation_markdown(evaluation: dict, title: str) -> str:
    from ..evaluate.tables import kernels_text, quality_table, speed_note, speed_table, tokenizer_note
    from ..report.report import Report

    report = Report(title="Evaluation")
    report.add_table(title, *quality_table(evaluation), note=tokenizer_note(evaluation))
    if evaluation.get("speed"):
        report.add_table("Generation speed", *speed_table(evaluation), note=speed_note(evaluation))
        report.add_text("Kernels", "```\n" + kernels_text(evaluation) + "\n```")
    return report.markdown()
