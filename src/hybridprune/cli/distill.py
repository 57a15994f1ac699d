"""`hybridprune distill`: recover a pruned student's accuracy by logit distillation from its teacher.

Single process:   hybridprune distill --teacher T/ --student pruned/ --data corpus.jsonl --steps 1000 --out student/
Several devices:  torchrun --nproc-per-node 8 -m hybridprune distill ...   (DDP; --parallel fsdp for FSDP2)
Resume:           hybridprune distill ... --resume student/
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import typer

from ..options import DISTILL, KD_LOSSES, PARALLEL, PRECISIONS
from .checks import check_data_path, check_not_blank
from ..output.cleanup import lock_until_done, remove_if_failed
from ..output.atomic import check_output
from ..output.leftovers import remove_dead_temporaries, unfinished
from ..checkpoint.devices import check_device
from ..stages.distill import (  # noqa: F401 - `checkpoint_identity` and `_train_data`: imported from here too
    DistillSettings, Models, _has_checkpoint, _run_names, _train_data, check_placement,
    checkpoint_identity, run, with_cached_topk,
)
from .common import CliError, check_checkpoint_dir, console, fail_cleanly, voice

#: the flags' defaults: the stage's, defined once (`stages.distill.DistillSettings`)
DISTILL_DEFAULTS = DistillSettings()
#: the command's flags that are not the stage's settings: what it reads and writes, and how it loads
IO_FLAGS = ("teacher", "student", "data", "out", "resume", "overwrite", "force", "seed", "text_field", "device",
            "trust_remote_code")


def register(app: typer.Typer) -> None:
    app.command("distill")(distill_command)


@fail_cleanly
def distill_command(
    teacher: Path = typer.Option(..., "--teacher", help="Teacher: Hugging Face checkpoint directory."),
    student: Path = typer.Option(..., "--student", help="Student (e.g. the output of `hybridprune prune`)."),
    data: str = typer.Option(..., "--data", help="A token directory (`hybridprune tokenize`), or text (.txt/.jsonl/.json/.parquet, a directory, a glob, a saved dataset, a Hub id, 'shakespeare', a mixture a.jsonl:0.7,b.jsonl:0.3), tokenized once into --out/tokens. Its train split trains, its validation split validates."),
    out: Path = typer.Option(None, "--out", help="Run directory: checkpoints, log.jsonl, loss.png, and at the end the distilled student as a plain HF checkpoint. Defaults to --resume."),
    seq_len: int = typer.Option(DISTILL_DEFAULTS.seq_len, "--seq-len", **DISTILL.bounds("seq_len"), help="Tokens per sample."),
    global_batch: int = typer.Option(DISTILL_DEFAULTS.global_batch, "--global-batch", **DISTILL.bounds("global_batch"), help="Samples per optimizer step, over all processes."),
    micro_batch: int = typer.Option(DISTILL_DEFAULTS.micro_batch, "--micro-batch", **DISTILL.bounds("micro_batch"), help="Samples per forward pass on one process."),
    lr: float = typer.Option(DISTILL_DEFAULTS.lr, "--lr", help="Peak learning rate."),
    min_lr: float = typer.Option(DISTILL_DEFAULTS.min_lr, "--min-lr", help="Learning rate at the end of the cosine decay."),
    warmup: int = typer.Option(DISTILL_DEFAULTS.warmup, "--warmup", **DISTILL.bounds("warmup"), help="Linear warmup steps."),
    tokens: float = typer.Option(DISTILL_DEFAULTS.tokens, "--tokens", help="Training tokens (e.g. 2e9); rounded up to whole steps. Give this or --steps."),
    steps: int = typer.Option(DISTILL_DEFAULTS.steps, "--steps", **DISTILL.bounds("steps"), help="Optimizer steps. Give this or --tokens."),
    save_every: int = typer.Option(DISTILL_DEFAULTS.save_every, "--save-every", **DISTILL.bounds("save_every"), help="Checkpoint every N steps (always at the end)."),
    keep_last: int = typer.Option(DISTILL_DEFAULTS.keep_last, "--keep-last", **DISTILL.bounds("keep_last"), help="Checkpoints to keep."),
    resume: Path = typer.Option(None, "--resume", help="Continue the run in this directory from its newest good checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh in a non-empty --out, replacing only what hybridprune wrote there."),
    stop_at_step: int = typer.Option(DISTILL_DEFAULTS.stop_at_step, "--stop-at-step", **DISTILL.bounds("stop_at_step"), help="Stop (with a checkpoint) after this step, e.g. to fit a job time limit; --resume continues."),
    eval_every: int = typer.Option(DISTILL_DEFAULTS.eval_every, "--eval-every", **DISTILL.bounds("eval_every"), help="Validation loss every N steps (always at the end)."),
    val_samples: int = typer.Option(DISTILL_DEFAULTS.val_samples, "--val-samples", **DISTILL.bounds("val_samples"), help="Validation samples; 0 disables validation."),
    num_samples: int = typer.Option(DISTILL_DEFAULTS.num_samples, "--num-samples", **DISTILL.bounds("num_samples"), help="Use at most this many training samples (default: all of the train split)."),
    temperature: float = typer.Option(DISTILL_DEFAULTS.temperature, "--temperature", help="KD temperature τ (the loss is scaled by τ²)."),
    kd_loss: Literal[KD_LOSSES] = typer.Option(DISTILL_DEFAULTS.kd_loss, "--kd-loss", help="forward (KL(teacher‖student), the paper's) or reverse."),
    kd_weight: float = typer.Option(DISTILL_DEFAULTS.kd_weight, "--kd-weight", help="Weight of the KD term."),
    ce_weight: float = typer.Option(DISTILL_DEFAULTS.ce_weight, "--ce-weight", help="Weight of a next-token cross-entropy term (0: KD only)."),
    kd_topk: int = typer.Option(DISTILL_DEFAULTS.kd_topk, "--kd-topk", **DISTILL.bounds("kd_topk"), help="Distil from the teacher's top-k logits plus their tail mass (computed online) instead of the full vocabulary; see docs/benchmarks.md for the gap. Default: full KD."),
    teacher_logits: str = typer.Option(DISTILL_DEFAULTS.teacher_logits, "--teacher-logits", help="Top-k teacher logits written by `hybridprune teacher-logits` for this --data/--seq-len/--seed/--num-samples: the teacher is not run on the training data."),
    teacher_device: str = typer.Option(DISTILL_DEFAULTS.teacher_device, "--teacher-device", help="Run the teacher on this device (default: the student's)."),
    teacher_device_map: str = typer.Option(DISTILL_DEFAULTS.teacher_device_map, "--teacher-device-map", help="Spread a teacher larger than one device over the GPUs, CPU and disk (accelerate): auto, balanced, sequential."),
    chunk_size: int = typer.Option(DISTILL_DEFAULTS.chunk_size, "--chunk-size", **DISTILL.bounds("chunk_size"), help="Positions per logits chunk (default: one fp32 [chunk, vocab] buffer of ~512 MiB on a GPU, ~64 MiB on a CPU)."),
    weight_decay: float = typer.Option(DISTILL_DEFAULTS.weight_decay, "--weight-decay", help="AdamW weight decay (matrices only)."),
    grad_clip: float = typer.Option(DISTILL_DEFAULTS.grad_clip, "--grad-clip", help="Clip the global gradient norm; 0 disables."),
    precision: Literal[PRECISIONS] = typer.Option(DISTILL_DEFAULTS.precision, "--precision", help="auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16."),
    parallel: Literal[PARALLEL] = typer.Option(DISTILL_DEFAULTS.parallel, "--parallel", help="auto (DDP under torchrun), none, ddp or fsdp (FSDP2)."),
    force: bool = typer.Option(False, "--force", help="Start even when the memory forecast exceeds what the device has."),
    seed: int = typer.Option(0, "--seed", **DISTILL.bounds("seed"), help="Seed of the sample order."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text in JSON/parquet data."),
    num_proc: int = typer.Option(DISTILL_DEFAULTS.num_proc, "--num-proc", **DISTILL.bounds("num_proc"), help="Tokenize text --data in this many processes (as `hybridprune tokenize --num-proc`; the same tokens)."),
    chat: bool = typer.Option(DISTILL_DEFAULTS.chat, "--chat", help="Text records are conversations ('messages', the tokenizer's chat template) or prompt/completion pairs: the loss counts the assistant's tokens only."),
    device: str = typer.Option(None, "--device", help="Device (default: this process's GPU, else cpu)."),
    progress: bool = typer.Option(DISTILL_DEFAULTS.progress, "--progress/--no-progress", help="Show a progress bar on a terminal; elsewhere (a log file) one plain line per logged step."),
    report_to: list[str] = typer.Option(DISTILL_DEFAULTS.report_to, "--report-to", help="Also send the metrics to tensorboard or wandb (installed separately; repeat or comma-separate). log.jsonl is always written."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoints' own Python code."),
) -> None:
    """Distil the student from the teacher (forward KL on logits, chunked), with exact resume."""
    settings = DistillSettings(**{k: v for k, v in locals().items() if k not in IO_FLAGS})
    _check_options(settings, data, text_field, device)
    settings = with_cached_topk(settings, teacher, trust_remote_code=trust_remote_code)  # before anything else
    DISTILL.check({**settings.values(), "seed": seed})
    if out is None:
        if resume is None:
            raise CliError("--out is required (or --resume, which then is also the output directory)")
        out = resume
    check_checkpoint_dir(teacher, "teacher")  # a wrong path is named before torch is imported
    check_checkpoint_dir(student, "student")
    settings.trainer_config(out, student=student, seed=seed, device=device, resume=resume)  # before the output
    _claim_out(out, resume, overwrite)
    remove_if_failed(out, keep=_has_checkpoint)  # a run that failed before its first checkpoint leaves nothing
    if _main_process():
        lock_until_done(out)  # one run per directory
    trainer = run(settings, Models(teacher, student, trust_remote_code), data, out, seed=seed, text_field=text_field,
                  device=device, resume=resume, overwrite=overwrite, force=force, voice=voice())
    if _main_process():
        console.print(_finished(trainer, out))


def _main_process() -> bool:
    """Rank 0 of a torchrun launch (read before the process group is joined), or a single process."""
    return os.environ.get("RANK", "0") == "0"


def _check_options(settings: DistillSettings, data: str, text_field: str, device: str | None) -> None:
    check_device(device)
    check_placement(settings)
    check_not_blank(("--data", data, "shakespeare"), ("--text-field", text_field, "text"))
    check_data_path("--data", data)


def _claim_out(out: Path, resume: Path | None, overwrite: bool) -> None:
    """--out holds a run to --resume, or is new, or is started afresh with --overwrite."""
    if resume is not None and overwrite:
        raise CliError("give --resume (continue the run) or --overwrite (start afresh), not both")
    if resume is None and not overwrite and _has_checkpoint(out):
        raise CliError(f"{out} already holds checkpoints of a distillation run: pass --resume {out} to continue it, "
                       "--overwrite to start afresh, or choose a new --out")
    # killed in its setup (before its first checkpoint): only its own entries and dead temporaries, taken over
    leftover = resume is None and not overwrite and unfinished(out, _run_names(), done="config.json")
    check_output(out, overwrite=overwrite, resume=resume is not None or leftover)
    if leftover:
        remove_dead_temporaries(out)
    if resume is not None:
        from ..distillation import find_resume_checkpoint
        from ..distillation.export import foreign_run_files

        find_resume_checkpoint(resume, warn=lambda msg: None)
        taken = foreign_run_files(out, resume)
        if taken:
            raise CliError(f"--out {out} holds {', '.join(taken)}, not written by hybridprune; the resumed run would "
                           "write its own there: move them away or choose another --out")


def _finished(trainer, out: Path) -> str:
    last = next((r for r in reversed(trainer.history) if "loss" in r), None)
    val_rec = next((r for r in reversed(trainer.history) if "val_loss" in r), None)
    msg = f"step {trainer.step}/{trainer.total_steps}"
    if last:
        msg += f", train loss {last['loss']:.4f}"
    if val_rec:
        msg += f", validation loss {val_rec['val_loss']:.4f}"
    if trainer.step >= trainer.total_steps:
        return f"{msg}. Distilled student written to [bold]{out}[/] (loss curve: {out / 'loss.png'})"
    return f"{msg}. Stopped early; continue with --resume {out}"
