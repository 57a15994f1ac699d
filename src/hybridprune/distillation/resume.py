"""Saving a Distiller's complete state into a checkpoint and restoring it, so that a resumed run
continues bit for bit: weights, optimizer, scheduler, every process's RNG and the data position. A
checkpoint is only loaded into a run with the same settings, data and parallel mode. The on-disk
format (atomic writes, validation) is `checkpoint.py`'s."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from . import checkpoint as ckpt
from . import dist as hpdist
from .config import DistillError


class CheckpointingMixin:
    """`save_checkpoint`/`load_checkpoint` of `Distiller`, which holds the attributes they use."""

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
