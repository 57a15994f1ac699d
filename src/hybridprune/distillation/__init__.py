"""Knowledge distillation of a pruned student from its teacher (paper §6): chunked logit KD, a
training loop with exact checkpoint/resume, and DDP/FSDP2 scaling. See docs/distillation.md."""

from __future__ import annotations

from .checkpoint import CheckpointError, find_resume_checkpoint
from .chunked_loss import chunked_kd_loss
from .config import DistillConfig, DistillError
from .loss import Head, KDLossOutput, kd_loss_from_logits
from .schedule import WarmupCosine
from .trainer import Distiller, NonFiniteLoss, distill

__all__ = [
    "CheckpointError",
    "DistillConfig",
    "DistillError",
    "Distiller",
    "Head",
    "KDLossOutput",
    "NonFiniteLoss",
    "WarmupCosine",
    "chunked_kd_loss",
    "distill",
    "find_resume_checkpoint",
    "kd_loss_from_logits",
]
