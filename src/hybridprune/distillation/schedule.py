"""Learning-rate schedule: linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import math


class WarmupCosine:
    """Multiplier of the peak LR at optimizer step `step` (0-based), for `torch.optim.lr_scheduler.LambdaLR`.

    Steps `0 .. warmup-1` ramp linearly to the peak (step 0 already trains, at `peak / warmup`); the
    remaining steps follow a half cosine from the peak down to `min_ratio · peak`, reached at the
    last step. A plain object (not a closure) so that the scheduler's state dict round-trips.
    """

    def __init__(self, warmup: int, total: int, min_ratio: float):
        self.warmup = int(warmup)
        self.total = int(total)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        decay_steps = self.total - self.warmup - 1
        if decay_steps <= 0:
            return 1.0 if step < self.total else self.min_ratio
        progress = min(1.0, (step - self.warmup) / decay_steps)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_note(warmup: int, total: int, lr: float) -> str | None:
    """One line for a warmup not shorter than the run (e.g. `--steps 3` with the default `--warmup 100`):
    what the schedule will do instead of a warmup and a decay."""
    if warmup <= 0 or warmup < total:
        return None
    top = total / warmup
    return (f"the warmup ({warmup} steps) is not shorter than the run ({total} steps): the learning rate only "
            f"ramps up, to {top:.0%} of the peak ({lr * top:.3g}) at the last step, and never decays; lower "
            f"--warmup (e.g. to {max(1, total // 10)})")
