"""Knowledge distillation of a pruned student from its teacher (paper §6): chunked logit KD, a
training loop with exact checkpoint/resume, and DDP/FSDP2 scaling. See docs/distillation.md.

The names are imported lazily: `distillation.config` (the trainer's settings, whose defaults the
distill stage's settings take) stays importable without torch, for the command line's `--help`."""

from __future__ import annotations

from .. import lazy_names

_NAMES = {
    "CheckpointError": "checkpoint", "find_resume_checkpoint": "checkpoint", "chunked_kd_loss": "chunked_loss",
    "DistillConfig": "config", "DistillError": "config", "Head": "loss", "KDLossOutput": "loss",
    "kd_loss_from_logits": "loss", "WarmupCosine": "schedule", "Distiller": "trainer", "NonFiniteLoss": "trainer",
    "distill": "trainer",
}

__all__ = sorted(_NAMES)
__getattr__ = lazy_names(__name__, {name: f"{__name__}.{module}" for name, module in _NAMES.items()})
