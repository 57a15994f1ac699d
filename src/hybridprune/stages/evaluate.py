"""The eval stage: loss, perplexity, bits per byte, lm-eval tasks and generation speed of checkpoints,
side by side, the first the reference for ratios.

`hybridprune eval`, a recipe's `eval:` section and the Python API run `run` with `EvalSettings`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import SILENT, LoadSettings, Loader, Voice

EVAL_JSON = "eval.json"
EVAL_MD = "eval.md"


@dataclass(kw_only=True)
class EvalSettings(LoadSettings):
    """The eval stage's options (flags `--seq-len`, ...; recipe keys `eval.seq_len`, ...). `speed` measures
    generation at every batch size of `batch_sizes` and prompt length of `context`; `task_limit`: at
    most this many documents per task (a number >= 1, or a fraction < 1)."""

    split: str = "validation"
    samples: int = 256
    seq_len: int = 2048
    batch_size: int = 8
    speed: bool = False
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    context: list[int] = field(default_factory=lambda: [2048, 8192])
    new_tokens: int = 256
    repeats: int = 3
    warmup: int = 1
    tasks: list[str] = field(default_factory=list)
    task_limit: float | None = None


@dataclass
class Evaluation:
    """What `run` measured: the evaluation document (`eval.json`), its title, the loaded models and
    the token windows they read (a recipe's summary measures more on them)."""

    result: dict[str, Any]
    title: str
    models: dict[str, Any]
    samples: Any


def check(s: EvalSettings, data: str | None) -> None:
    """The settings' own rules, the device, and that something is to be measured (SettingError/OptionError)."""
    from ..checkpoint.devices import check_device, check_device_map
    from ..options import EVAL, SettingError

    check_device(s.device)
    check_device_map(s.device_map)
    EVAL.check({k: v for k, v in dataclasses.asdict(s).items() if k in EVAL})
    if data is None and not s.speed and not s.tasks:
        raise SettingError("nothing to measure: give --data (loss, perplexity, bits per byte), --speed, or --tasks")
    if s.tasks:
        from ..evaluate import MissingExtra
        from ..evaluate.harness import check_tasks

        try:
            check_tasks(list(s.tasks))  # unknown names are refused before any model is loaded
        except MissingExtra as exc:
            raise SettingError(str(exc)) from None


def run(s: EvalSettings, models: Mapping[str, str | Path], data: str | None = None, out: str | Path | None = None, *,
        overwrite: bool = False, voice: Voice = SILENT, loader: Loader | None = None) -> Evaluation:
    """Measure `models` ({name: checkpoint directory}) on the same footing; with `out`, write
    `eval.json` and `eval.md` there."""
    from ..checkpoint.load import resolve
    from ..output.atomic import check_output

    check(s, data)
    if out is not None:
        check_output(out, overwrite=overwrite)
    for path in models.values():  # a wrong path is named before torch is imported
        resolve(path, "checkpoint")
    from ..evaluate import MissingExtra, SpeedSettings, compare_models
    from ..options import SettingError
    from .common import say_forecast

    loader = loader or Loader()
    speed = SpeedSettings(batch_sizes=tuple(s.batch_sizes), contexts=tuple(s.context), new_tokens=s.new_tokens,
                          warmup=s.warmup, repeats=s.repeats, seed=s.seed) if s.speed else None
    reads = data is not None or bool(s.tasks)
    say_forecast(voice, forecast(s, list(models.values()), reads, speed),
                 force=s.force, lower="--batch-size, --seq-len, --batch-sizes or --context (or compare fewer models)",
                 spread=s.device_map is not None)
    loaded = {name: loader.model(path, s) for name, path in models.items()}
    tokenizers = {name: loader.tokenizer(path, s) for name, path in models.items()} if reads else {}
    names = list(models)
    tokens = None
    if data is not None:  # the windows are chosen with the first model's tokenizer; each model reads their text
        tokens = loader.samples(data, tokenizers[names[0]], split=s.split, seq_len=s.seq_len, n=s.samples,
                                seed=s.seed, text_field=s.text_field, vocab=loaded[names[0]].config.vocab_size)
    data_info = {} if data is None else {"source": data, "split": s.split, "samples": len(tokens), "seq_len": s.seq_len}
    limit = None if s.task_limit is None else (int(s.task_limit) if s.task_limit >= 1 else s.task_limit)
    try:
        result = compare_models(loaded, tokenizers=tokenizers, samples=tokens, batch_size=s.batch_size, speed=speed,
                                tasks=list(s.tasks), task_limit=limit, data_info=data_info, progress=voice.note)
    except MissingExtra as exc:
        raise SettingError(str(exc)) from None
    result["checkpoints"] = {name: str(path) for name, path in models.items()}
    title = (f"{s.split} split of {data}: {len(tokens)} samples x {s.seq_len} tokens" if tokens is not None
             else "models")
    if out is not None:
        _write(result, title, out, overwrite)
    return Evaluation(result, title, loaded, tokens)


def forecast(s: EvalSettings, models: list, loss: bool, speed):
    """Every model is held at once (they are measured interleaved); the largest pass of any one runs at a time."""
    from ..architectures import get_adapter
    from ..checkpoint.devices import resolve_device, weight_bytes
    from ..checkpoint.forecast import (
        RUNTIME_BYTES,
        Forecast,
        available_bytes,
        forward_parts,
        generation_parts,
    )
    from ..checkpoint.load import load_config

    weights, peak = 0, {}
    for path in models:
        config = load_config(path, trust_remote_code=s.trust_remote_code)
        adapter = get_adapter(config)
        dims = adapter.dims(config)
        wb = weight_bytes(config, s.dtype, s.device)
        chunk = adapter.scan_chunk(config)
        weights += adapter.num_parameters(dims) * wb
        passes = []
        if loss:
            f = forward_parts(adapter, dims, batch=s.batch_size, seq=s.seq_len, weight_bytes=wb, logit_copies=1.5,
                              chunk=chunk)
            passes.append({"activations": f["activations"] + f["logits"]})
        if speed is not None:
            passes.append(generation_parts(adapter, dims, batch=max(speed.batch_sizes), context=max(speed.contexts),
                                           new_tokens=speed.new_tokens, weight_bytes=wb, chunk=chunk))
        for p in passes:
            if sum(p.values()) > sum(peak.values()):
                peak = p
    target = str(resolve_device(s.device))
    return Forecast("evaluation", target, {"weights": weights, **peak, "runtime": RUNTIME_BYTES},
                    available_bytes(target))


def _write(result: dict, title: str, out, overwrite: bool) -> None:
    import json

    from ..output.atomic import atomic_directory

    markdown = evaluation_markdown(result, title)

    def write(tmp: Path) -> None:
        (tmp / EVAL_JSON).write_text(json.dumps(result, indent=2) + "\n")
        (tmp / EVAL_MD).write_text(markdown)

    atomic_directory(out, write, overwrite=overwrite, what="the evaluation")


def evaluation_markdown(evaluation: dict, title: str) -> str:
    from ..evaluate.tables import (
        kernels_text,
        quality_table,
        speed_note,
        speed_table,
        tokenizer_note,
    )
    from ..report.report import Report

    report = Report(title="Evaluation")
    report.add_table(title, *quality_table(evaluation), note=tokenizer_note(evaluation))
    if evaluation.get("speed"):
        report.add_table("Generation speed", *speed_table(evaluation), note=speed_note(evaluation))
        report.add_text("Kernels", "```\n" + kernels_text(evaluation) + "\n```")
    return report.markdown()
