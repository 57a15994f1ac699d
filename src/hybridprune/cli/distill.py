"""`hybridprune distill`: recover a pruned student's accuracy by logit distillation from its teacher.

Single process:   hybridprune distill --teacher T/ --student pruned/ --data corpus.jsonl --steps 1000 --out student/
Several devices:  torchrun --nproc-per-node 8 -m hybridprune distill ...   (DDP; --parallel fsdp for FSDP2)
Resume:           hybridprune distill ... --resume student/
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from ..options import DISTILL, KD_LOSSES, PARALLEL, PRECISIONS
from .checks import check_data_path, check_not_blank
from ..output.cleanup import lock_until_done, remove_if_failed
from ..output.atomic import check_output, remove_owned
from ..output.leftovers import remove_dead_temporaries, unfinished
from .devices import check_device, check_device_map
from .common import (
    CliError, alerts, check_checkpoint_dir, console, fail_cleanly, forecast_memory, load_config, load_model,
    load_tokenizer,
)


TOKENS_DIR = "tokens"


def register(app: typer.Typer) -> None:
    app.command("distill")(distill_command)


@fail_cleanly
def distill_command(
    teacher: Path = typer.Option(..., "--teacher", help="Teacher: Hugging Face checkpoint directory."),
    student: Path = typer.Option(..., "--student", help="Student (e.g. the output of `hybridprune prune`)."),
    data: str = typer.Option(..., "--data", help="A token directory (`hybridprune tokenize`), or text (.txt/.jsonl/.json/.parquet, a directory, a glob, a saved dataset, a Hub id, 'shakespeare', a mixture a.jsonl:0.7,b.jsonl:0.3), tokenized once into --out/tokens. Its train split trains, its validation split validates."),
    out: Path = typer.Option(None, "--out", help="Run directory: checkpoints, log.jsonl, loss.png, and at the end the distilled student as a plain HF checkpoint. Defaults to --resume."),
    seq_len: int = typer.Option(4096, "--seq-len", **DISTILL.bounds("seq_len"), help="Tokens per sample."),
    global_batch: int = typer.Option(64, "--global-batch", **DISTILL.bounds("global_batch"), help="Samples per optimizer step, over all processes."),
    micro_batch: int = typer.Option(2, "--micro-batch", **DISTILL.bounds("micro_batch"), help="Samples per forward pass on one process."),
    lr: float = typer.Option(1e-4, "--lr", help="Peak learning rate."),
    min_lr: float = typer.Option(1e-5, "--min-lr", help="Learning rate at the end of the cosine decay."),
    warmup: int = typer.Option(100, "--warmup", **DISTILL.bounds("warmup"), help="Linear warmup steps."),
    tokens: float = typer.Option(None, "--tokens", help="Training tokens (e.g. 2e9); rounded up to whole steps. Give this or --steps."),
    steps: int = typer.Option(None, "--steps", **DISTILL.bounds("steps"), help="Optimizer steps. Give this or --tokens."),
    save_every: int = typer.Option(None, "--save-every", **DISTILL.bounds("save_every"), help="Checkpoint every N steps (always at the end)."),
    keep_last: int = typer.Option(2, "--keep-last", **DISTILL.bounds("keep_last"), help="Checkpoints to keep."),
    resume: Path = typer.Option(None, "--resume", help="Continue the run in this directory from its newest good checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh in a non-empty --out, replacing only what hybridprune wrote there."),
    stop_at_step: int = typer.Option(None, "--stop-at-step", **DISTILL.bounds("stop_at_step"), help="Stop (with a checkpoint) after this step, e.g. to fit a job time limit; --resume continues."),
    eval_every: int = typer.Option(None, "--eval-every", **DISTILL.bounds("eval_every"), help="Validation loss every N steps (always at the end)."),
    val_samples: int = typer.Option(64, "--val-samples", **DISTILL.bounds("val_samples"), help="Validation samples; 0 disables validation."),
    num_samples: int = typer.Option(None, "--num-samples", **DISTILL.bounds("num_samples"), help="Use at most this many training samples (default: all of the train split)."),
    temperature: float = typer.Option(1.0, "--temperature", help="KD temperature τ (the loss is scaled by τ²)."),
    kd_loss: Literal[KD_LOSSES] = typer.Option("forward", "--kd-loss", help="forward (KL(teacher‖student), the paper's) or reverse."),
    kd_weight: float = typer.Option(1.0, "--kd-weight", help="Weight of the KD term."),
    ce_weight: float = typer.Option(0.0, "--ce-weight", help="Weight of a next-token cross-entropy term (0: KD only)."),
    kd_topk: int = typer.Option(None, "--kd-topk", **DISTILL.bounds("kd_topk"), help="Distil from the teacher's top-k logits plus their tail mass (computed online) instead of the full vocabulary; see docs/benchmarks.md for the gap. Default: full KD."),
    teacher_logits: Path = typer.Option(None, "--teacher-logits", help="Top-k teacher logits written by `hybridprune teacher-logits` for this --data/--seq-len/--seed/--num-samples: the teacher is not run on the training data."),
    teacher_device: str = typer.Option(None, "--teacher-device", help="Run the teacher on this device (default: the student's)."),
    teacher_device_map: str = typer.Option(None, "--teacher-device-map", help="Spread a teacher larger than one device over the GPUs, CPU and disk (accelerate): auto, balanced, sequential."),
    chunk_size: int = typer.Option(None, "--chunk-size", **DISTILL.bounds("chunk_size"), help="Positions per logits chunk (default: one fp32 [chunk, vocab] buffer of ~512 MiB on a GPU, ~64 MiB on a CPU)."),
    weight_decay: float = typer.Option(0.1, "--weight-decay", help="AdamW weight decay (matrices only)."),
    grad_clip: float = typer.Option(1.0, "--grad-clip", help="Clip the global gradient norm; 0 disables."),
    precision: Literal[PRECISIONS] = typer.Option("auto", "--precision", help="auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16."),
    parallel: Literal[PARALLEL] = typer.Option("auto", "--parallel", help="auto (DDP under torchrun), none, ddp or fsdp (FSDP2)."),
    force: bool = typer.Option(False, "--force", help="Start even when the memory forecast exceeds what the device has."),
    seed: int = typer.Option(0, "--seed", **DISTILL.bounds("seed"), help="Seed of the sample order."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text in JSON/parquet data."),
    num_proc: int = typer.Option(1, "--num-proc", **DISTILL.bounds("num_proc"), help="Tokenize text --data in this many processes (as `hybridprune tokenize --num-proc`; the same tokens)."),
    chat: bool = typer.Option(False, "--chat", help="Text records are conversations ('messages', the tokenizer's chat template) or prompt/completion pairs: the loss counts the assistant's tokens only."),
    device: str = typer.Option(None, "--device", help="Device (default: this process's GPU, else cpu)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on a terminal; elsewhere (a log file) one plain line per logged step."),
    report_to: list[str] = typer.Option([], "--report-to", help="Also send the metrics to tensorboard or wandb (installed separately; repeat or comma-separate). log.jsonl is always written."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoints' own Python code."),
) -> None:
    """Distil the student from the teacher (forward KL on logits, chunked), with exact resume."""
    check_device(device)
    check_device(teacher_device, "--teacher-device")
    check_device_map(teacher_device_map, "--teacher-device-map")
    if teacher_device and teacher_device_map:
        raise CliError("give --teacher-device or --teacher-device-map, not both")
    if teacher_logits is not None:  # a cache of another k is refused before anything else
        from ..distillation.teacher_logits import TeacherLogits

        cache = TeacherLogits.open(teacher_logits)
        cache.check_teacher(checkpoint_identity(teacher, trust_remote_code=trust_remote_code), teacher)
        cached_k = cache.k
        if kd_topk not in (None, cached_k):
            raise CliError(f"--kd-topk {kd_topk}, but the teacher logits in {teacher_logits} keep the top {cached_k}; "
                           f"leave --kd-topk out, or compute them again with `hybridprune teacher-logits --top-k "
                           f"{kd_topk}`")
        kd_topk = cached_k
    device = None if device == "auto" else device
    check_not_blank(("--data", data, "shakespeare"), ("--text-field", text_field, "text"))
    check_data_path("--data", data)
    DISTILL.check({"steps": steps, "tokens": tokens, "lr": lr, "min_lr": min_lr, "temperature": temperature,
                   "kd_loss": kd_loss, "kd_weight": kd_weight, "ce_weight": ce_weight, "weight_decay": weight_decay,
                   "grad_clip": grad_clip, "global_batch": global_batch, "micro_batch": micro_batch})
    if out is None:
        if resume is None:
            raise CliError("--out is required (or --resume, which then is also the output directory)")
        out = resume
    check_checkpoint_dir(teacher, "teacher")  # a wrong path is named before torch is imported
    check_checkpoint_dir(student, "student")
    from ..distillation import DistillConfig
    from ..distillation.dist import setup as dist_setup
    from ..distillation.dist import teardown

    cfg = DistillConfig(
        steps=steps, tokens=tokens, global_batch=global_batch, micro_batch=micro_batch, lr=lr, min_lr=min_lr,
        warmup=warmup, weight_decay=weight_decay, grad_clip=grad_clip or None, temperature=temperature,
        kd_loss=kd_loss, kd_weight=kd_weight, ce_weight=ce_weight, chunk_size=chunk_size, kd_topk=kd_topk,
        teacher_device=None if teacher_device in (None, "auto") else teacher_device, precision=precision,
        parallel=parallel, device=device, seed=seed, out_dir=str(out), save_every=save_every, keep_last=keep_last,
        resume=str(resume) if resume is not None else None, stop_at_step=stop_at_step, eval_every=eval_every,
        progress=progress, report_to=tuple(n.strip() for r in report_to for n in r.split(",") if n.strip()),
        tokenizer_dir=str(student),
    )
    cfg.validate()  # before loading anything large
    from ..distillation.schedule import warmup_note

    note = warmup_note(cfg.warmup, cfg.total_steps(seq_len), cfg.lr)
    if note:
        alerts.print(f"[yellow]warning:[/] {note}", soft_wrap=True, highlight=False)
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

    env = dist_setup(device)  # joins the torchrun group; the trainer reuses it
    try:
        remove_if_failed(out, keep=_has_checkpoint)  # a run that failed before its first checkpoint leaves nothing
        if env.is_main:
            lock_until_done(out)  # one run per directory
        _run(env, teacher, student, data, out, seq_len, num_samples, val_samples, seed, text_field, precision,
             trust_remote_code, cfg, overwrite, force, chat, teacher_logits, teacher_device_map, num_proc)
    finally:
        teardown(env)


def checkpoint_identity(path: Path | str, *, trust_remote_code: bool = False) -> str | None:
    """The fingerprint of the safetensors checkpoint `path` (a directory, shipped teacher or Hub id), from its files (a few sampled windows per
    tensor, no model built); None when it has no safetensors weights to read."""
    from ..checkpoint.files import CheckpointFiles, CheckpointFormatError
    from ..checkpoint.fingerprint import checkpoint_fingerprint
    from ..checkpoint.load import resolve

    path = resolve(path, role="teacher")  # a shipped teacher's name or a Hub id is a directory from here on
    try:
        files = CheckpointFiles(path)
    except CheckpointFormatError:
        return None  # the model loader names what is wrong with it
    return checkpoint_fingerprint(files, load_config(path, trust_remote_code=trust_remote_code, role="teacher"))


def _forecast(teacher, student, cfg, seq_len, bf16, device, trust_remote_code):
    """Distillation's memory forecast, from the two configs (`hybridprune.checkpoint.forecast`)."""
    from ..architectures import get_adapter
    from ..distillation.chunked_loss import auto_chunk_size
    from ..checkpoint.forecast import forecast_distill

    t_cfg = load_config(teacher, trust_remote_code=trust_remote_code, role="teacher")
    s_cfg = load_config(student, trust_remote_code=trust_remote_code, role="student")
    t_adapter, s_adapter = get_adapter(t_cfg), get_adapter(s_cfg)
    student_dims = s_adapter.dims(s_cfg)
    chunk = cfg.chunk_size or auto_chunk_size(student_dims.vocab_size, device)
    return forecast_distill(s_adapter, t_adapter.dims(t_cfg), student_dims, micro_batch=cfg.micro_batch,
                            seq=seq_len, weight_bytes=4, teacher_weight_bytes=2 if bf16 else 4, chunk_positions=chunk,
                            chunk=getattr(t_cfg, "chunk_size", None) or 128, device=str(device),
                            teacher_adapter=t_adapter)


def _run_names() -> tuple[str, ...]:
    """What a distillation run writes in --out before its first checkpoint."""
    from ..distillation.checkpoint import CHECKPOINT_DIR
    from ..distillation.export import LOG_FILE, PLOT_FILE
    from ..distillation.trackers import TENSORBOARD_DIR, WANDB_DIR

    return TOKENS_DIR, CHECKPOINT_DIR, LOG_FILE, PLOT_FILE, TENSORBOARD_DIR, WANDB_DIR


def _has_checkpoint(out: Path) -> bool:
    from ..distillation.checkpoint import CHECKPOINT_DIR, list_checkpoints

    return bool(list_checkpoints(out / CHECKPOINT_DIR))


def _token_dir(env, data, out, tokenizer, text_field, chat, overwrite, num_proc=1) -> Path:
    """`data` itself when it is a token directory; else the run's own `tokens/`, written once by the main
    process (reused on --resume without reading the text again)."""
    from ..data.shards import is_token_dir
    from ..distillation.dist import barrier
    from ..output.atomic import claim

    if is_token_dir(data):
        if chat:
            raise CliError(f"--chat applies to text; {data} is already tokenized (as conversations or not, as its "
                           "manifest says): drop --chat")
        return Path(data).expanduser()
    tokens = Path(out) / TOKENS_DIR
    if env.is_main:
        from ..data.tokenize import tokenize_to

        claim(out, [TOKENS_DIR])
        tokenize_to(tokens, data, tokenizer, text_field=text_field, chat=chat, overwrite=overwrite, num_proc=num_proc,
                    say=lambda m: console.print(m, soft_wrap=True, highlight=False))
    barrier(env)
    return tokens


def _teacher_logits(directory: Path, train, token_dir: Path, tokenizer):
    """The cached teacher logits, checked against this run's tokenizer, token directory and training
    samples before any model is loaded."""
    from ..data.shards import read_manifest
    from ..data.tokenize import tokenizer_identity
    from ..distillation.data import as_token_data
    from ..distillation.teacher_logits import TeacherLogits

    cache = TeacherLogits.open(directory)
    identity = tokenizer_identity(tokenizer) if hasattr(tokenizer, "backend_tokenizer") else None
    cache.check_run(k=None, token_manifest=read_manifest(token_dir), tokenizer_identity=identity)
    data = as_token_data(train)
    cache.check(data.fingerprint(), len(data), data.seq_len)
    return cache


def _train_data(token_dir: Path, seq_len: int, seed: int, num_samples: int | None):
    """The train split's windows, read lazily from the shards (`num_samples`: a seeded subset)."""
    import torch

    from ..data.shards import ShardWindows

    windows = ShardWindows(token_dir, "train", seq_len, seed=seed)
    if num_samples is None or num_samples >= len(windows):
        return windows
    pick = torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed))[:num_samples]
    return torch.utils.data.Subset(windows, pick.tolist())


def _run(env, teacher, student, data, out, seq_len, num_samples, val_samples, seed, text_field, precision,
         trust_remote_code, cfg, overwrite=False, force=False, chat=False, teacher_logits=None,
         teacher_device_map=None, num_proc=1) -> None:
    import torch

    from ..data import DataError, load_token_samples
    from ..data.samples import check_token_dir
    from ..distillation import Distiller
    bf16 = precision == "bf16" or (precision == "auto" and env.device.type == "cuda" and torch.cuda.is_bf16_supported())
    # The teacher only runs forward: under bf16 it is held in bf16. The student keeps fp32 master weights.
    if env.is_main:
        forecast_memory(_forecast(teacher, student, cfg, seq_len, bf16, env.device, trust_remote_code), force=force,
                        lower="--micro-batch or --seq-len (or --chunk-size)")
    try:
        tokenizer = load_tokenizer(student, trust_remote_code=trust_remote_code, role="student")
    except ValueError:
        tokenizer = load_tokenizer(teacher, trust_remote_code=trust_remote_code, role="teacher")
    token_dir = _token_dir(env, data, out, tokenizer, text_field, chat, overwrite, num_proc)
    train = _train_data(token_dir, seq_len, seed, num_samples)
    cache = _teacher_logits(teacher_logits, train, token_dir, tokenizer) if teacher_logits is not None else None
    t_model = load_model(teacher, dtype="bfloat16" if bf16 else "float32", device="cpu",
                         trust_remote_code=trust_remote_code, role="teacher", device_map=teacher_device_map)
    s_model = load_model(student, dtype="float32", device="cpu", trust_remote_code=trust_remote_code, role="student")
    vocab = s_model.get_output_embeddings().weight.shape[0]
    if cache is not None:  # its ids were checked in range of the head that computed them: of this one too?
        cache.check_vocab(vocab)
    check_token_dir((train.dataset if isinstance(train, torch.utils.data.Subset) else train).manifest, token_dir,
                    vocab, tokenizer)
    val = None
    if val_samples:
        try:
            val = load_token_samples(token_dir, tokenizer, seq_len=seq_len, num_samples=val_samples, split="validation",
                                     seed=seed, model_vocab_size=vocab)
        except DataError as exc:
            if env.is_main:
                alerts.print(f"[yellow]warning:[/] no validation: {exc}")
    if env.is_main:
        console.print(
            f"distilling {student} from {teacher}: {len(train)} training samples × {seq_len} tokens"
            + (f", {len(val)} validation samples" if val is not None else "")
            + f", {env.world_size} process(es) on {env.device}"
        )
    trainer = Distiller(t_model, s_model, train, cfg, val_data=val, console=console, teacher_logits=cache)
    if overwrite and env.is_main:
        remove_owned(out, keep=(TOKENS_DIR,))  # only now that both models loaded: a failed start keeps the earlier run
    trainer.run()
    if env.is_main:
        last = next((r for r in reversed(trainer.history) if "loss" in r), None)
        val_rec = next((r for r in reversed(trainer.history) if "val_loss" in r), None)
        msg = f"step {trainer.step}/{trainer.total_steps}"
        if last:
            msg += f", train loss {last['loss']:.4f}"
        if val_rec:
            msg += f", validation loss {val_rec['val_loss']:.4f}"
        if trainer.step >= trainer.total_steps:
            console.print(f"{msg}. Distilled student written to [bold]{out}[/] (loss curve: {out / 'loss.png'})")
        else:
            console.print(f"{msg}. Stopped early; continue with --resume {out}")
