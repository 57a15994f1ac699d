"""What a run produces besides its log: the validation loss, and at the end the exported student with
its summary and loss plot (`run_log.py` writes the log and the console lines)."""

from __future__ import annotations

import torch

from . import dist as hpdist
from .export import PLOT_FILE, export_student, plot_loss


class ReportingMixin:
    """Validation and export of `Distiller`, which holds the attributes they use."""

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
                ids, mask, lmask = self.val.batch(chunk)
                self._check_ids(ids)
                n_kd, n_ce = self._counts(mask if lmask is None else lmask, ids)
                ids, mask = ids.to(self.device), mask.to(self.device)
                lmask = None if lmask is None else lmask.to(self.device)
                _, kd_sum, ce_sum = self._forward_loss(ids, mask, 1.0, 1.0, lmask)
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
