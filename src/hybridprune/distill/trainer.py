"""The distillation loop: teacher forward under no_grad, chunked KD loss, AdamW with warmup + cosine,
gradient accumulation to a global batch, clipping, optional bf16 autocast, periodic validation,
atomic checkpoints with exact resume, and the same code under DDP or FSDP2.

One optimizer step consumes `global_batch` samples. With `W` processes and micro-batches of `m`
samples, each process runs `global_batch / (W·m)` micro-batches. Every micro-batch's loss is its sum
of per-position losses divided by the number of positions of the whole global batch (times `W`,
because DDP and FSDP average gradients over processes), so the accumulated gradient is that of the
global-batch mean whatever `W` and `m` are.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import torch
from torch import nn

from . import checkpoint as ckpt
from . import dist as hpdist
from .config import DistillConfig, DistillError
from .data import GlobalBatches, TokenData, as_token_data
from .export import LOG_FILE, PLOT_FILE, export_student, plot_loss, truncate_log
from .loss import IGNORE_INDEX, Head, chunked_kd_loss, next_token_targets
from .schedule import WarmupCosine


# ------------------------------------------------------------------------------------ model access


def base_model_of(model: nn.Module) -> nn.Module:
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        raise DistillError(
            f"{type(model).__name__} is not a causal LM with a separate base model and head "
            "(expected a Hugging Face *ForCausalLM)"
        )
    return base


def logit_scale(model: nn.Module) -> float:
    """The factor some architectures apply to the head's output (Granite divides, Falcon-H1 multiplies)."""
    cfg = getattr(model, "config", None)
    scale = 1.0
    div = getattr(cfg, "logits_scaling", None)
    if div not in (None, 0):
        scale /= float(div)
    mult = getattr(getattr(model, "base_model", None), "lm_head_multiplier", None)
    if mult is None:
        mult = getattr(cfg, "lm_head_multiplier", None)
    if mult is not None:
        scale *= float(mult)
    return scale


def head_of(model: nn.Module) -> Head:
    emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if emb is None or not hasattr(emb, "weight"):
        raise DistillError(f"{type(model).__name__} has no output embedding (LM head) to distil through")
    return Head(weight=emb.weight, bias=getattr(emb, "bias", None), scale=logit_scale(model))


def final_hidden(model: nn.Module, input_ids, attention_mask) -> torch.Tensor:
    out = base_model_of(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


@torch.no_grad()
def check_head(model: nn.Module, vocab_size: int, name: str, device) -> None:
    """The chunked loss rebuilds the logits as head(final hidden state) · scale: check that this is what
    the model's own forward computes, on a few tokens."""
    was_training = model.training
    model.eval()
    try:
        ids = torch.arange(12, device=device).remainder(vocab_size).unsqueeze(0)
        ref = model(input_ids=ids, use_cache=False).logits.float()
        head = head_of(model)
        h = final_hidden(model, ids, None)
        z = h.to(head.weight.dtype) @ head.weight.t()
        if head.bias is not None:
            z = z + head.bias
        z = z.float() * head.scale
    finally:
        model.train(was_training)
    tol = 1e-3 * max(1.0, float(ref.abs().max()))
    if ref.shape != z.shape or float((ref - z).abs().max()) > tol:
        raise DistillError(
            f"cannot reproduce the {name}'s logits from its final hidden states and LM head "
            f"({type(model).__name__}); this architecture is not supported by the chunked KD loss"
        )


class StudentKD(nn.Module):
    """The student with the chunked KD loss as its forward, so that DDP/FSDP see one module call."""

    def __init__(self, student: nn.Module, cfg: DistillConfig, compute_dtype: torch.dtype):
        super().__init__()
        self.student = student
        self.cfg = cfg
        self.compute_dtype = compute_dtype

    def forward(self, input_ids, attention_mask, teacher_hidden, teacher_weight, teacher_bias, teacher_scale: float,
                kd_normalizer: float, ce_normalizer: float):
        h = final_hidden(self.student, input_ids, attention_mask)
        cfg = self.cfg
        out = chunked_kd_loss(
            h,
            head_of(self.student),
            teacher_hidden,
            Head(teacher_weight, teacher_bias, teacher_scale),
            attention_mask,
            input_ids,
            kind=cfg.kd_loss,
            temperature=cfg.temperature,
            kd_weight=cfg.kd_weight,
            ce_weight=cfg.ce_weight,
            chunk_size=cfg.chunk_size,
            kd_normalizer=kd_normalizer,
            ce_normalizer=ce_normalizer,
            compute_dtype=self.compute_dtype,
        )
        return out.loss, out.kd_sum, out.ce_sum


def _layers_of(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a HF model (the FSDP units): the longest ModuleList in the base model."""
    best: list[nn.Module] = []
    for m in base_model_of(model).modules():
        if isinstance(m, nn.ModuleList) and len(m) > len(best):
            best = list(m)
    return best


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _move_unsharded(model: nn.Module, device: torch.device) -> None:
    """Move the parameters and buffers FSDP does not manage (plain tensors) to `device`."""
    from torch.distributed.tensor import DTensor

    with torch.no_grad():
        for m in model.modules():
            for p in m._parameters.values():
                if p is not None and not isinstance(p, DTensor) and p.device != device:
                    p.data = p.data.to(device)
            for k, b in list(m._buffers.items()):
                if b is not None and not isinstance(b, DTensor) and b.device != device:
                    m._buffers[k] = b.to(device)


def _param_groups(model: nn.Module, weight_decay: float):
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


# -------------------------------------------------------------------------------------------- trainer


class NonFiniteLoss(DistillError):
    """The loss or gradient norm became NaN/inf; the step was not applied."""


class Distiller:
    """One distillation run. `run()` trains; the pieces are separate for tests and benchmarks."""

    def __init__(self, teacher: nn.Module, student: nn.Module, train_data, cfg: DistillConfig, *, val_data=None,
                 console=None):
        cfg.validate()
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
        if cfg.precision == "auto":
            bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        else:
            bf16 = cfg.precision == "bf16"
        self.bf16 = bf16
        self.compute_dtype = torch.bfloat16 if bf16 else None

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
        mode = cfg.parallel
        if mode == "auto":
            mode = "ddp" if env.enabled else "none"
        if mode in ("ddp", "fsdp") and not env.enabled:
            mode = "none"
        self.mode = mode
        if mode != "fsdp":  # under FSDP the shards are moved to the device, never the whole model
            teacher.to(self.device)
            student.to(self.device)
        if cfg.check_heads:
            check_head(teacher, self.vocab_size, "teacher", _device_of(teacher))
            check_head(student, self.vocab_size, "student", _device_of(student))

        teacher.eval()
        teacher.requires_grad_(False)
        student.train()

        # parallel wrapping
        self.kd_module = StudentKD(student, cfg, self.compute_dtype or s_head.weight.dtype)
        if mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.kd_module, device_ids=ids)
        elif mode == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)  # the mesh (and the shards) live on this process's GPU
            mesh = init_device_mesh(self.device.type, (env.world_size,))
            # Each teacher block is its own FSDP root (the teacher has no backward): reshard explicitly
            # after its forward, or it would stay gathered. Its embeddings and head stay replicated.
            for layer in _layers_of(teacher):
                fully_shard(layer, mesh=mesh, reshard_after_forward=True)
            for layer in _layers_of(student):
                fully_shard(layer, mesh=mesh)
            fully_shard(self.kd_module, mesh=mesh)
            _move_unsharded(teacher, self.device)  # the replicated rest: embeddings, final norm, head
            _move_unsharded(student, self.device)
            self.model = self.kd_module
        else:
            self.model = self.kd_module

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
        self._data_fp = self.data.fingerprint()

    # ------------------------------------------------------------------------------------- helpers

    def _say(self, msg: str) -> None:
        if self.env.is_main:
            if self.console is not None:
                self.console.print(msg)
            else:
                print(msg, flush=True)

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

    @torch.no_grad()
    def teacher_hidden(self, ids, mask) -> torch.Tensor:
        with self._autocast():
            return final_hidden(self.teacher, ids, mask)

    def _teacher_head(self) -> Head:
        return head_of(self.teacher)

    def _forward_loss(self, ids, mask, kd_norm, ce_norm):
        if bool(mask.all()):
            mask = None  # same result; lets attention take its causal fast path and the loss skip a gather
        th = self.teacher_hidden(ids, mask)
        t_head = self._teacher_head()
        with self._autocast():
            return self.model(ids, mask, th, t_head.weight, t_head.bias, t_head.scale, kd_norm, ce_norm)

    def _counts(self, mask: torch.Tensor, ids: torch.Tensor) -> tuple[int, int]:
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
        loaded = [self.data.get(mb) for mb in mbs]
        counts = [0.0, 0.0]
        for ids, mask in loaded:
            self._check_ids(ids)
            a, b = self._counts(mask, ids)
            counts[0] += a
            counts[1] += b
        n_kd, n_ce = hpdist.all_reduce_sum(env, counts)
        if n_kd == 0:
            raise DistillError(f"step {self.step + 1}: every position of the global batch is masked out")
        w = env.world_size
        kd_sum = torch.zeros((), dtype=torch.float64)
        ce_sum = torch.zeros((), dtype=torch.float64)
        for i, (ids, mask) in enumerate(loaded):
            ids, mask = ids.to(self.device), mask.to(self.device)
            last = i == len(loaded) - 1
            sync = contextlib.nullcontext()
            if not last and self.mode == "ddp":
                sync = self.model.no_sync()
            elif self.mode == "fsdp":
                self.model.set_requires_gradient_sync(last)
            with sync:
                loss, kd, ce = self._forward_loss(ids, mask, n_kd / w, max(n_ce, 1.0) / w)
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
        if not math.isfinite(loss_value) or not math.isfinite(gnorm):
            self.optimizer.zero_grad(set_to_none=True)
            what = "loss" if not math.isfinite(loss_value) else "gradient norm"
            where = (
                f"the last good checkpoint is {self.last_checkpoint}"
                if self.last_checkpoint
                else "no checkpoint was written yet"
            )
            raise NonFiniteLoss(
                f"the {what} became {loss_value if what == 'loss' else gnorm} at step {self.step + 1} "
                f"(lr {lr:.3g}); stopped without applying the update, {where}. Lower the learning rate, "
                "check the data, or train in fp32, then resume."
            )
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

    # ------------------------------------------------------------------------------------ validation

    @torch.no_grad()
    def evaluate(self) -> dict:
        """The KD objective (token mean) on the validation data, sharded over processes."""
        cfg, env = self.cfg, self.env
        if self.val is None:
            return {}
        self.student.eval()
        try:
            idx = list(range(env.rank, len(self.val), env.world_size))
            # Every process runs the same number of forwards (FSDP gathers weights collectively);
            # one that has run out of samples repeats sample 0 and discards the result.
            per_rank = -(-len(self.val) // env.world_size)
            sums = [0.0, 0.0, 0.0, 0.0]  # kd_sum, ce_sum, n_kd, n_ce
            for i in range(0, per_rank, cfg.micro_batch):
                chunk = idx[i : i + cfg.micro_batch]
                if not chunk:
                    ids, mask = self.val.get([0])
                    self._forward_loss(ids.to(self.device), mask.to(self.device), 1.0, 1.0)
                    continue
                ids, mask = self.val.get(chunk)
                self._check_ids(ids)
                n_kd, n_ce = self._counts(mask, ids)
                ids, mask = ids.to(self.device), mask.to(self.device)
                _, kd_sum, ce_sum = self._forward_loss(ids, mask, 1.0, 1.0)
                sums[0] += float(kd_sum)
                sums[1] += float(ce_sum)
                sums[2] += n_kd
                sums[3] += n_ce
            kd, ce, n_kd, n_ce = hpdist.all_reduce_sum(env, sums)
        finally:
            self.student.train()
        rec = {"step": self.step, "val_loss": cfg.kd_weight * kd / max(n_kd, 1) + cfg.ce_weight * ce / max(n_ce, 1),
               "val_kd_loss": kd / max(n_kd, 1), "val_tokens": int(n_kd)}
        return rec

    # ---------------------------------------------------------------------------------- checkpoints

    def _full_model_state(self) -> dict | None:
        """The student's full state dict on rank 0 (None elsewhere); collective under FSDP."""
        if self.mode == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            sd = get_model_state_dict(self.kd_module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            prefix = "student."
            return {k[len(prefix):]: v for k, v in sd.items()} if self.env.is_main else None
        return self.student.state_dict() if self.env.is_main else None

    def _full_optim_state(self) -> dict | None:
        if self.mode == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            sd = get_optimizer_state_dict(
                self.kd_module, self.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
            return sd if self.env.is_main else None
        return self.optimizer.state_dict() if self.env.is_main else None

    def _run_state(self) -> dict:
        return {
            "total_steps": self.total_steps,
            "tokens_seen": self.step * self.tokens_per_step,
            "data": {"num_samples": len(self.data), "seq_len": self.seq_len, "fingerprint": self._data_fp,
                     **self.batches.position(self.step)},
            "world_size": self.env.world_size,
            "parallel": self.mode,
            "trajectory": self.cfg.trajectory(),
            "config": self.cfg.to_dict(),
        }

    def save_checkpoint(self) -> Path | None:
        if self.ckpt_root is None:
            return None
        model_state = self._full_model_state()
        optim_state = self._full_optim_state()
        rngs = hpdist.gather_to_main(self.env, ckpt.rng_state())
        path = None
        if self.env.is_main:
            path = ckpt.write_checkpoint(
                self.ckpt_root,
                self.step,
                model_state=model_state,
                optimizer_state=optim_state,
                scheduler_state=self.scheduler.state_dict(),
                rng_states=rngs,
                state=self._run_state(),
                keep_last=self.cfg.keep_last,
            )
        hpdist.barrier(self.env)
        self.last_checkpoint = self.ckpt_root / ckpt.step_dir_name(self.step)
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> Path:
        where, state = ckpt.find_resume_checkpoint(path, warn=self._say)
        # what defines the run must match
        mism = {
            k: (state["trajectory"].get(k), v)
            for k, v in self.cfg.trajectory().items()
            if state.get("trajectory", {}).get(k) != v
        }
        if state.get("total_steps") != self.total_steps:
            mism["total_steps"] = (state.get("total_steps"), self.total_steps)
        if mism:
            diff = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in mism.items())
            raise ckpt.CheckpointError(f"cannot resume from {where}: the run's settings differ ({diff})")
        d = state.get("data", {})
        if (d.get("num_samples"), d.get("seq_len"), d.get("fingerprint")) != (len(self.data), self.seq_len, self._data_fp):
            raise ckpt.CheckpointError(
                f"cannot resume from {where}: it was trained on other data "
                f"({d.get('num_samples')} samples × {d.get('seq_len')} tokens, fingerprint {d.get('fingerprint')}; "
                f"now {len(self.data)} × {self.seq_len}, {self._data_fp})"
            )
        if state.get("parallel") == "fsdp" and self.mode != "fsdp" or state.get("parallel") != "fsdp" and self.mode == "fsdp":
            raise ckpt.CheckpointError(
                f"cannot resume from {where}: it was written with parallel={state.get('parallel')!r}, "
                f"now {self.mode!r}; resume in the same mode"
            )
        if state.get("world_size") != self.env.world_size:
            self._say(
                f"note: {where} was written by {state.get('world_size')} processes, resuming with "
                f"{self.env.world_size}: the data order is the same, the float summation order is not"
            )
        weights = ckpt.load_weights(where / ckpt.MODEL_FILE)
        optim_state = ckpt.load_torch(where / ckpt.OPTIM_FILE)
        sched_state = ckpt.load_torch(where / ckpt.SCHED_FILE)
        rngs = ckpt.load_torch(where / ckpt.RNG_FILE)
        try:
            if self.mode == "fsdp":
                from torch.distributed.checkpoint.state_dict import (
                    StateDictOptions,
                    set_model_state_dict,
                    set_optimizer_state_dict,
                )

                opts = StateDictOptions(full_state_dict=True)
                set_model_state_dict(self.kd_module, {f"student.{k}": v for k, v in weights.items()}, options=opts)
                set_optimizer_state_dict(self.kd_module, self.optimizer, optim_state, options=opts)
            else:
                with torch.no_grad():
                    missing, unexpected = self.student.load_state_dict(weights, strict=False)
                if missing or unexpected:
                    raise ckpt.CheckpointError(
                        f"{where / ckpt.MODEL_FILE} does not match the student: missing {missing[:5]}, "
                        f"unexpected {unexpected[:5]}"
                    )
                self.optimizer.load_state_dict(optim_state)
            self.scheduler.load_state_dict(sched_state)
        except (RuntimeError, ValueError, KeyError) as e:
            if isinstance(e, DistillError):
                raise
            raise ckpt.CheckpointError(f"cannot load {where} into this student/optimizer: {e}") from None
        if isinstance(rngs, list) and rngs:
            ckpt.set_rng_state(rngs[min(self.env.rank, len(rngs) - 1)])
        self.step = int(state["step"])
        self.last_checkpoint = where
        return where

    # ------------------------------------------------------------------------------------------ run

    def _log(self, rec: dict) -> None:
        self.history.append(rec)
        if self.log_path is not None and self.env.is_main:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def _prepare_out_dir(self) -> None:
        if self.out_dir is None:
            return
        if self.env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            removed = ckpt.remove_stale_tmp(self.ckpt_root)
            for p in removed:
                self._say(f"removed {p.name}, left by a run interrupted while saving")
            if not self.cfg.resume and ckpt.list_checkpoints(self.ckpt_root):
                raise DistillError(
                    f"{self.out_dir} already holds checkpoints of a distillation run: pass --resume "
                    f"{self.out_dir} to continue it, or choose a new --out"
                )
        hpdist.barrier(self.env)

    def run(self) -> nn.Module:
        cfg, env = self.cfg, self.env
        try:
            if cfg.resume:
                where = self.load_checkpoint(cfg.resume)
                self._say(f"resumed from {where} at step {self.step}/{self.total_steps}")
            self._prepare_out_dir()
            if self.log_path is not None and env.is_main:
                if cfg.resume:
                    truncate_log(self.log_path, self.step)
                elif self.log_path.exists():
                    self.log_path.unlink()
            stop = min(self.total_steps, cfg.stop_at_step or self.total_steps)
            with self._progress() as progress:
                task = progress.add_task("distill", total=self.total_steps, completed=self.step, loss=float("nan"),
                                         tps=0.0) if progress else None
                while self.step < stop:
                    rec = self.train_step()
                    if self.step % cfg.log_every == 0 or self.step == stop:
                        rec = self._reduce_time(rec)
                        self._log(rec)
                    if progress:
                        progress.update(task, completed=self.step, loss=rec["loss"], tps=rec["tokens_per_s"])
                    if cfg.eval_every and self.val is not None and self.step % cfg.eval_every == 0:
                        self._log(self.evaluate())
                    if cfg.save_every and self.step % cfg.save_every == 0 and self.step < stop:
                        self.save_checkpoint()
            finished = self.step >= self.total_steps
            if self.val is not None and finished and not (cfg.eval_every and self.step % cfg.eval_every == 0):
                self._log(self.evaluate())
            if self.out_dir is not None:
                if self.last_checkpoint is None or self.last_checkpoint.name != ckpt.step_dir_name(self.step):
                    self.save_checkpoint()
                if finished:
                    self._finish()
            return self.student
        finally:
            hpdist.teardown(env)

    def _reduce_time(self, rec: dict) -> dict:
        """Throughput of the whole group, from the step time averaged over processes."""
        if self.env.enabled:
            (t,) = hpdist.all_reduce_sum(self.env, [rec["step_time_s"]])
            rec["step_time_s"] = t / self.env.world_size
            rec["tokens_per_s"] = self.tokens_per_step / rec["step_time_s"]
        return rec

    def _finish(self) -> None:
        cfg = self.cfg
        state = self._full_model_state() if self.mode == "fsdp" else None
        if self.env.is_main:
            if cfg.export:
                last = next((r for r in reversed(self.history) if "loss" in r), {})
                val = next((r for r in reversed(self.history) if "val_loss" in r), {})
                summary = {
                    "steps": self.step,
                    "tokens": self.step * self.tokens_per_step,
                    "final_train_loss": last.get("loss"),
                    "final_val_loss": val.get("val_loss"),
                    "config": cfg.to_dict(),
                    "world_size": self.env.world_size,
                    "parallel": self.mode,
                }
                export_student(self.student, self.out_dir, state_dict=state, tokenizer_dir=cfg.tokenizer_dir,
                               summary=summary)
            if cfg.plot:
                plot_loss(self.log_path, self.out_dir / PLOT_FILE)
        hpdist.barrier(self.env)

    def _progress(self):
        if not (self.cfg.progress and self.env.is_main):
            return contextlib.nullcontext(None)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        return Progress(
            TextColumn("[bold]distill"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[tps]:,.0f} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )


def distill(teacher: nn.Module, student: nn.Module, train_data, config: DistillConfig | None = None, *,
            val_data=None, console=None, **overrides) -> nn.Module:
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
    return Distiller(teacher, student, train_data, cfg, val_data=val_data, console=console).run()
