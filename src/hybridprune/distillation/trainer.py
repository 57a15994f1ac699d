"""The distillation loop: teacher forward under no_grad, chunked KD loss, AdamW with warmup + cosine,
gradient accumulation to a global batch, clipping, optional bf16 autocast, periodic validation,
atomic checkpoints with exact resume, and the same code under DDP or FSDP2.

One optimizer step consumes `global_batch` samples. With `W` processes and micro-batches of `m`
samples, each process runs `global_batch / (W·m)` micro-batches. Every micro-batch's loss is its sum
of per-position losses divided by the number of positions of the whole global batch (times `W`,
because DDP and FSDP average gradients over processes), so the accumulated gradient is that of the
global-batch mean whatever `W` and `m` are.

The pieces live beside this module: `models.py` (model access and the KD forward), `placement.py`
(precision, devices, DDP/FSDP2 wrapping), `resume.py` (checkpoint save/load), `run_log.py` (the
log, its trackers and the console lines) and `reporting.py` (validation, export).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from . import checkpoint as ckpt
from . import dist as hpdist
from .config import DistillConfig, DistillError
from .data import GlobalBatches, TokenData, as_token_data
from .export import LOG_FILE, PLOT_FILE, foreign_run_files, remove_legacy_tmp
from .loss import IGNORE_INDEX, next_token_targets
from .models import StudentKD, check_head, head_of
from .models import base_model_of, final_hidden, logit_scale  # noqa: F401  (importable from here, as before)
from .placement import device_of, parallel_mode, use_bf16, wrap_parallel
from .reporting import ReportingMixin
from .run_log import RunLogMixin
from .resume import CheckpointingMixin
from .teacher_side import TeacherMixin, input_device
from .schedule import WarmupCosine, warmup_note
from ..output.signals import Interrupted, deferred


def _param_groups(model: nn.Module, weight_decay: float):
    """AdamW groups: weight decay on the trainable matrices only."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim >= 2 and not getattr(p, "_no_weight_decay", False):
            decay.append(p)
        else:
            no_decay.append(p)  # norms, biases, Mamba's A_log / D / dt_bias
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


class NonFiniteLoss(DistillError):
    """The loss or gradient norm became NaN/inf; the step was not applied."""


class Distiller(CheckpointingMixin, RunLogMixin, ReportingMixin, TeacherMixin):
    """One distillation run. `run()` trains; the pieces are separate for tests and benchmarks."""

    def __init__(self, teacher: nn.Module, student: nn.Module, train_data, cfg: DistillConfig, *, val_data=None,
                 console=None, teacher_logits=None):
        if teacher_logits is not None:
            if cfg.kd_topk not in (None, teacher_logits.k):
                raise DistillError(f"kd_topk={cfg.kd_topk}, but the cached teacher logits keep the top "
                                   f"{teacher_logits.k}; leave kd_topk out or compute them again")
            cfg.kd_topk = teacher_logits.k
        cfg.validate()
        self.teacher_logits = teacher_logits
        self.topk_k = cfg.kd_topk
        self.cfg = cfg
        self.console = console
        self.env = hpdist.setup(cfg.device)
        env = self.env
        self.device = env.device
        self.teacher = teacher
        self.student = student
        self.data: TokenData = as_token_data(train_data)
        self.val: TokenData | None = as_token_data(val_data, what="validation data") if val_data is not None else None
        self.seq_len = self.data.seq_len
        self.total_steps = cfg.total_steps(self.seq_len)
        self.tokens_per_step = cfg.global_batch * self.seq_len
        if cfg.global_batch % (cfg.micro_batch * env.world_size):
            raise DistillError(
                f"global_batch ({cfg.global_batch}) must be a multiple of micro_batch × processes "
                f"({cfg.micro_batch} × {env.world_size})"
            )
        self.accum = cfg.global_batch // (cfg.micro_batch * env.world_size)
        self.batches = GlobalBatches(len(self.data), cfg.global_batch, seed=cfg.seed, shuffle=cfg.shuffle)

        # precision
        self.bf16 = use_bf16(cfg, self.device)
        self.compute_dtype = torch.bfloat16 if self.bf16 else None

        # vocabulary and head checks (before any wrapping)
        t_head, s_head = head_of(teacher), head_of(student)
        if t_head.vocab_size != s_head.vocab_size:
            raise DistillError(
                f"teacher and student vocabulary sizes differ ({t_head.vocab_size} vs {s_head.vocab_size}): "
                "logit distillation needs the same tokenizer and LM-head size"
            )
        self.vocab_size = s_head.vocab_size
        max_id = self.data.max_token_id()
        if max_id is not None and max_id >= self.vocab_size:
            raise DistillError(
                f"the training data has token id {max_id}, outside the models' vocabulary of {self.vocab_size}"
            )
        mode = parallel_mode(cfg, env)
        self.mode = mode
        if mode != "fsdp":  # under FSDP the shards are moved to the device, never the whole model
            self._place_teacher()
            student.to(self.device)
        else:
            if cfg.teacher_device:
                raise DistillError("teacher_device does not apply under FSDP (the teacher is sharded with the student)")
            self._t_head = None
        if cfg.check_heads:
            check_head(teacher, self.vocab_size, "teacher", input_device(teacher))
            check_head(student, self.vocab_size, "student", device_of(student))

        teacher.eval()
        teacher.requires_grad_(False)
        student.train()

        # parallel wrapping
        self.kd_module = StudentKD(student, cfg, self.compute_dtype or s_head.weight.dtype)
        self.model = wrap_parallel(self.kd_module, teacher, student, mode, env)

        self.optimizer = torch.optim.AdamW(
            _param_groups(student, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(cfg.warmup, self.total_steps, cfg.min_lr / cfg.lr)
        )
        self.step = 0
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir else None
        self.ckpt_root = self.out_dir / ckpt.CHECKPOINT_DIR if self.out_dir else None
        self.log_path = self.out_dir / LOG_FILE if self.out_dir else None
        self.last_checkpoint: Path | None = None
        self.history: list[dict] = []
        self.trackers = None
        self._data_fp = self.data.fingerprint()
        if teacher_logits is not None:
            teacher_logits.check(self._data_fp, len(self.data), self.data.seq_len)

    # ------------------------------------------------------------------------------------- helpers

    def _autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _check_ids(self, ids: torch.Tensor) -> None:
        if ids.numel() and (int(ids.max()) >= self.vocab_size or int(ids.min()) < 0):
            raise DistillError(
                f"the data has token id {int(ids.max())} (min {int(ids.min())}), outside the vocabulary "
                f"of {self.vocab_size}"
            )

    def _forward_loss(self, ids, mask, kd_norm, ce_norm, loss_mask=None, rows=None):
        """`loss_mask` (chat data): the positions the loss counts; the attention still sees `mask`.
        `rows`: the training samples of this micro-batch (for cached teacher logits)."""
        if bool(mask.all()):
            mask = None  # same result; lets attention take its causal fast path and the loss skip a gather
        if self.topk_k:
            topk = self._teacher_topk(ids, mask, rows)
            with self._autocast():
                return self.model(ids, mask, None, None, None, 1.0, kd_normalizer=kd_norm, ce_normalizer=ce_norm,
                                  loss_mask=loss_mask, topk=topk)
        th = self.teacher_hidden(ids, mask)
        t_head = self._teacher_head()
        with self._autocast():
            return self.model(ids, mask, th, t_head.weight, t_head.bias, t_head.scale, kd_normalizer=kd_norm,
                              ce_normalizer=ce_norm, loss_mask=loss_mask)

    def _counts(self, mask: torch.Tensor, ids: torch.Tensor) -> tuple[int, int]:
        """Positions the KD and CE terms count (`mask`: the loss mask where the data has one)."""
        n_kd = int(mask.sum())
        n_ce = 0
        if self.cfg.ce_weight > 0:
            n_ce = int((next_token_targets(ids, mask) != IGNORE_INDEX).sum())
        return n_kd, n_ce

    # ---------------------------------------------------------------------------------------- step

    def train_step(self) -> dict:
        """One optimizer step over one global batch; returns the step's log record."""
        cfg, env = self.cfg, self.env
        t0 = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        mbs = self.batches.micro_batches(self.step, env.rank, env.world_size, cfg.micro_batch)
        loaded = [(*self.data.batch(mb), mb) for mb in mbs]
        counts = [0.0, 0.0]
        for ids, mask, lmask, _ in loaded:
            self._check_ids(ids)
            a, b = self._counts(mask if lmask is None else lmask, ids)
            counts[0] += a
            counts[1] += b
        n_kd, n_ce = hpdist.all_reduce_sum(env, counts)
        if n_kd == 0 and any(lm is not None for _, _, lm, _ in loaded):
            return self._empty_step(t0, lr)  # chat windows that hold no assistant token: nothing to learn
        if n_kd == 0:
            raise DistillError(f"step {self.step + 1}: every position of the global batch is masked out")
        w = env.world_size
        kd_sum = torch.zeros((), dtype=torch.float64)
        ce_sum = torch.zeros((), dtype=torch.float64)
        for i, (ids, mask, lmask, rows) in enumerate(loaded):
            ids, mask = ids.to(self.device), mask.to(self.device)
            lmask = None if lmask is None else lmask.to(self.device)
            last = i == len(loaded) - 1
            sync = contextlib.nullcontext()
            if not last and self.mode == "ddp":
                sync = self.model.no_sync()
            elif self.mode == "fsdp":
                self.model.set_requires_gradient_sync(last)
            with sync:
                loss, kd, ce = self._forward_loss(ids, mask, n_kd / w, max(n_ce, 1.0) / w, lmask, rows)
                loss.backward()
            kd_sum += kd.detach().double().cpu()
            ce_sum += ce.detach().double().cpu()
        kd_g, ce_g = hpdist.all_reduce_sum(env, [float(kd_sum), float(ce_sum)])
        kd_mean = kd_g / n_kd
        ce_mean = ce_g / n_ce if n_ce else 0.0
        loss_value = cfg.kd_weight * kd_mean + cfg.ce_weight * ce_mean
        params = [p for p in self.student.parameters() if p.grad is not None]
        if cfg.grad_clip is not None:
            gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        else:
            gnorm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if hasattr(gnorm, "full_tensor"):
            gnorm = gnorm.full_tensor()
        gnorm = float(gnorm)
        bad = [(w, v) for w, v in (("loss", loss_value), ("gradient norm", gnorm), ("learning rate", lr))
               if not math.isfinite(v)]
        if bad:  # stop at the first non-finite step: an update with it would make every weight NaN
            self.optimizer.zero_grad(set_to_none=True)
            what, value = bad[0]
            if self.last_checkpoint:
                advice = (f"the last good checkpoint is {self.last_checkpoint}. Lower the learning rate, check "
                          "the data, or train in fp32, then resume from it.")
            elif self.step == 0 and what != "learning rate":  # before any update: the models or the data
                advice = ("this happened before any update, so the teacher or the student computes non-finite "
                          "logits on this data: check both checkpoints and the data. Nothing was written.")
            else:
                advice = ("no checkpoint was written yet. Lower the learning rate, check the data, or train in "
                          "fp32, then start again.")
            raise NonFiniteLoss(f"the {what} became {value} at step {self.step + 1} (lr {lr:.3g}); stopped without "
                                f"applying the update: {advice}")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        dt = time.perf_counter() - t0
        rec = {
            "step": self.step,
            "loss": loss_value,
            "kd_loss": kd_mean,
            "lr": lr,
            "grad_norm": gnorm,
            "tokens": self.step * self.tokens_per_step,
            "step_time_s": dt,
            "tokens_per_s": self.tokens_per_step / dt if dt > 0 else float("inf"),
        }
        if cfg.ce_weight > 0:
            rec["ce_loss"] = ce_mean
        return rec

    def _empty_step(self, t0: float, lr: float) -> dict:
        """A step whose global batch has no position in the loss (chat data): the schedule advances,
        the weights and optimizer state do not change."""
        self.scheduler.step()
        self.step += 1
        dt = time.perf_counter() - t0
        return {"step": self.step, "loss": 0.0, "kd_loss": 0.0, "lr": lr, "grad_norm": 0.0,
                "tokens": self.step * self.tokens_per_step, "step_time_s": dt,
                "tokens_per_s": self.tokens_per_step / dt if dt > 0 else float("inf"), "loss_tokens": 0}

    # ------------------------------------------------------------------------------------------ run

    def _prepare_out_dir(self) -> None:
        if self.out_dir is None:
            return
        if self.env.is_main:
            from ..output.atomic import claim, clean_stale

            names = [ckpt.CHECKPOINT_DIR, LOG_FILE, PLOT_FILE]
            taken = foreign_run_files(self.out_dir, self.cfg.resume)  # resuming too: never append to or replace the user's
            if taken:
                raise DistillError(f"{self.out_dir} holds {', '.join(taken)}, not written by hybridprune; move them "
                                   "away or choose a new output directory")
            claim(self.out_dir, names, adopt=[ckpt.CHECKPOINT_DIR] if self.cfg.resume else [])  # before written
            removed = ckpt.remove_stale_tmp(self.ckpt_root) + remove_legacy_tmp(self.out_dir)
            removed += clean_stale(self.out_dir)
            for p in removed:
                self._say(f"removed {p.name}, left by a run interrupted while saving")
            if not self.cfg.resume and ckpt.list_checkpoints(self.ckpt_root):
                raise DistillError(
                    f"{self.out_dir} already holds checkpoints of a distillation run: pass --resume "
                    f"{self.out_dir} to continue it, or choose a new --out"
                )
        hpdist.barrier(self.env)

    def _stop_requested(self, stop) -> int | None:
        """The signal that asks every process to stop, agreed over the group (SIGTERM wins over SIGINT)."""
        import signal as _signal

        if not self.env.enabled:
            return stop.signum
        term, intr = hpdist.all_reduce_sum(self.env, [float(stop.signum == _signal.SIGTERM),
                                                      float(stop.signum == _signal.SIGINT)])
        return int(_signal.SIGTERM) if term else int(_signal.SIGINT) if intr else None

    def _interrupted(self, signum: int, finished: bool):
        import signal as _signal

        name = _signal.Signals(signum).name
        if finished:
            msg = (f"interrupted by {name} after the last step; the run is complete and the student is in {self.out_dir}"
                   if self.out_dir is not None else f"interrupted by {name} after this distillation's last step")
        elif self.last_checkpoint is not None:
            msg = (f"interrupted by {name} at step {self.step}/{self.total_steps}; checkpoint {self.last_checkpoint} "
                   f"written, continue with --resume {self.out_dir}")
        else:
            msg = f"interrupted by {name} at step {self.step}/{self.total_steps}; no output directory, nothing kept"
        return Interrupted(signum, msg)

    def run(self) -> nn.Module:
        cfg, env = self.cfg, self.env
        try:
            with deferred() as stop:  # a signal ends the current step, then a checkpoint, then the exit
                if cfg.resume:
                    where = self.load_checkpoint(cfg.resume)
                    self._say(f"resumed from {where} at step {self.step}/{self.total_steps}")
                self._prepare_out_dir()
                self._start_log()
                stop_at = min(self.total_steps, cfg.stop_at_step or self.total_steps)
                signum = None
                with self._progress() as progress:
                    task = progress.add_task("distill", total=self.total_steps, completed=self.step,
                                             loss=float("nan"), tps=0.0) if progress else None
                    while self.step < stop_at:
                        rec = self.train_step()
                        signum = self._stop_requested(stop)
                        if self.step % cfg.log_every == 0 or self.step == stop_at or signum:
                            rec = self._reduce_time(rec)
                            self._log(rec)
                        if progress:
                            progress.update(task, completed=self.step, loss=rec["loss"], tps=rec["tokens_per_s"])
                        if signum:
                            break
                        if cfg.eval_every and self.val is not None and self.step % cfg.eval_every == 0:
                            self._log(self.evaluate())
                        if cfg.save_every and self.step % cfg.save_every == 0 and self.step < stop_at:
                            self.save_checkpoint()
                finished = self.step >= self.total_steps
                if (self.val is not None and finished and not signum
                        and not (cfg.eval_every and self.step % cfg.eval_every == 0)):
                    self._log(self.evaluate())
                if self.out_dir is not None:
                    if self.last_checkpoint is None or self.last_checkpoint.name != ckpt.step_dir_name(self.step):
                        self.save_checkpoint()
                    if finished:
                        self._finish()
                signum = signum or self._stop_requested(stop)
                if signum:
                    raise self._interrupted(signum, finished)
            return self.student
        finally:
            if self.trackers is not None:
                self.trackers.close()
            hpdist.teardown(env)



def distill(teacher: nn.Module, student: nn.Module, train_data, config: DistillConfig | None = None, *,
            val_data=None, console=None, teacher_logits=None, **overrides) -> nn.Module:
    """Distil `student` from `teacher` on `train_data`; returns the trained student.

    `train_data`: a LongTensor `[N, T]`, a `hybridprune.data.TokenSamples`, or any torch Dataset whose
    items are `{"input_ids": LongTensor[T], "attention_mask": LongTensor[T]}`. Settings come from
    `config` (a `DistillConfig`), with keyword `overrides` on top, e.g. `distill(t, s, data, steps=100)`.
    With `out_dir` set, checkpoints, a JSONL log, the exported student and a loss plot are written
    there. Under `torchrun` (or a process group the caller initialised) the same call trains with DDP,
    or FSDP2 with `parallel="fsdp"`.
    """
    cfg = config if config is not None else DistillConfig()
    if overrides:
        unknown = set(overrides) - set(DistillConfig.field_names())
        if unknown:
            raise TypeError(f"unknown distill settings: {sorted(unknown)}")
        from dataclasses import replace

        cfg = replace(cfg, **overrides)
    d = Distiller(teacher, student, train_data, cfg, val_data=val_data, console=console, teacher_logits=teacher_logits)
    note = warmup_note(cfg.warmup, d.total_steps, cfg.lr)
    if note:
        warnings.warn(note.replace("--warmup", "warmup"), stacklevel=2)
    return d.run()
