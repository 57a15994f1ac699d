"""A run's log: `log.jsonl` (started afresh, or cut back to the resumed step), the trackers
(`--report-to`), and on the console a progress bar on a terminal or one plain line per logged step
elsewhere. Only the main process writes or prints."""

from __future__ import annotations

import contextlib
import json
import sys

from . import dist as hpdist
from .export import truncate_log
from .trackers import plain_line


class RunLogMixin:
    """The log of `Distiller`, which holds the attributes it uses."""

    def _open_trackers(self) -> None:
        from .trackers import TENSORBOARD_DIR, WANDB_DIR, Trackers

        if self.out_dir is not None and self.cfg.report_to:
            from ..output.atomic import claim

            claim(self.out_dir, [{"tensorboard": TENSORBOARD_DIR, "wandb": WANDB_DIR}[n] for n in self.cfg.report_to])
        self.trackers = Trackers(self.cfg.report_to, self.out_dir, self.cfg.to_dict(), self.step)

    def _start_log(self) -> None:
        """Trackers opened; `log.jsonl` cut back to the resumed step, or removed for a fresh run."""
        if not self.env.is_main:
            return
        self._open_trackers()
        if self.log_path is not None:
            if self.cfg.resume:
                truncate_log(self.log_path, self.step)
            elif self.log_path.exists():
                self.log_path.unlink()

    def _say(self, msg: str) -> None:
        if self.env.is_main:
            if self.console is not None:
                self.console.print(msg)
            else:
                print(msg, flush=True)

    def _log(self, rec: dict) -> None:
        self.history.append(rec)
        if not self.env.is_main:
            return
        if self.log_path is not None:
            from ..output.atomic import writing

            with writing("the training log", self.log_path), open(self.log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        trackers = getattr(self, "trackers", None)
        if trackers is not None:
            trackers.log(rec)
            if self.cfg.progress and not self._terminal():  # a log file: one plain line, not a bar
                if "loss" in rec:
                    self._say_plain(plain_line(rec, self.total_steps, trackers.eta(rec["step"], self.total_steps)))
                elif "val_loss" in rec:
                    self._say_plain(f"step {rec['step']}/{self.total_steps} val_loss {rec['val_loss']:.4f}")

    def _terminal(self) -> bool:
        if self.console is not None:
            return bool(self.console.is_terminal)
        return sys.stdout.isatty()

    def _say_plain(self, line: str) -> None:
        if self.console is not None:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, flush=True)

    def _reduce_time(self, rec: dict) -> dict:
        """Throughput of the whole group, from the step time averaged over processes."""
        if self.env.enabled:
            (t,) = hpdist.all_reduce_sum(self.env, [rec["step_time_s"]])
            rec["step_time_s"] = t / self.env.world_size
            rec["tokens_per_s"] = self.tokens_per_step / rec["step_time_s"]
        return rec

    def _progress(self):
        if not (self.cfg.progress and self.env.is_main and self._terminal()):
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
