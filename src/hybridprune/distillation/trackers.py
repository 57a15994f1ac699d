"""Where a run's metrics go besides `log.jsonl` (always written): a plain line per logging interval
when the console is not a terminal (a cluster's log file, where a progress bar prints nothing until
the end), and TensorBoard or Weights & Biases with `report_to` when the user has them installed
(optional extras, never required)."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

from .config import REPORTERS, DistillError, check_report_to  # noqa: F401 - named here too

TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"


def plain_line(rec: dict, total_steps: int, eta_s: float | None) -> str:
    """`step 10/100 tokens 40,960 loss 2.3456 tok/s 12,345 lr 1.00e-04 eta 0:01:23`: one line, no markup."""
    parts = [f"step {rec['step']}/{total_steps}", f"tokens {rec['tokens']:,}", f"loss {rec['loss']:.4f}",
             f"tok/s {rec['tokens_per_s']:,.0f}", f"lr {rec['lr']:.2e}"]
    if eta_s is not None:
        parts.append(f"eta {datetime.timedelta(seconds=round(eta_s))}")
    return " ".join(parts)


class Trackers:
    """The optional reporters of one run (main process only), and the plain-line ETA clock."""

    def __init__(self, names, out_dir: Path | None, config: dict, start_step: int):
        self.writers = []
        self._t0, self._s0 = time.perf_counter(), start_step
        names = check_report_to(names)
        if names and out_dir is None:
            raise DistillError("--report-to needs an output directory (--out) to write its logs into")
        for name in names:
            if name == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                self.writers.append(_TensorBoard(SummaryWriter(log_dir=str(out_dir / TENSORBOARD_DIR))))
            else:
                import wandb

                run = wandb.init(project="hybridprune", dir=str(out_dir), config=config, resume="allow",
                                 id=_run_id(out_dir))
                self.writers.append(_WandB(run))

    def eta(self, step: int, total: int) -> float | None:
        done = step - self._s0
        if done <= 0:
            return None
        return (time.perf_counter() - self._t0) / done * (total - step)

    def log(self, rec: dict) -> None:
        for w in self.writers:
            w.log(rec)

    def close(self) -> None:
        for w in self.writers:
            w.close()


def _run_id(out_dir: Path) -> str:
    import hashlib

    return hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:12]


class _TensorBoard:
    def __init__(self, writer):
        self.w = writer

    def log(self, rec: dict) -> None:
        step = rec.get("step", 0)
        for k, v in rec.items():
            if k != "step" and isinstance(v, (int, float)):
                self.w.add_scalar(k, v, step)
        self.w.flush()

    def close(self) -> None:
        self.w.close()


class _WandB:
    def __init__(self, run):
        self.run = run

    def log(self, rec: dict) -> None:
        self.run.log({k: v for k, v in rec.items() if k != "step" and isinstance(v, (int, float))},
                     step=rec.get("step", 0))

    def close(self) -> None:
        self.run.finish()
