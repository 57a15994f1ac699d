"""Settings of a distillation run, and the one exception the distillation stage raises."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from ..options import PARALLEL, PRECISIONS  # noqa: F401 - the names the command line and recipes offer


class DistillError(ValueError):
    """Bad input or a failed run: the message says what is wrong and what to do about it."""



# The settings that define the trajectory: a resumed run must use the same ones.
TRAJECTORY_FIELDS = (
    "global_batch",
    "lr",
    "min_lr",
    "warmup",
    "weight_decay",
    "betas",
    "eps",
    "grad_clip",
    "temperature",
    "kd_loss",
    "kd_weight",
    "ce_weight",
    "seed",
    "shuffle",
    "precision",
    "kd_topk",
)


@dataclass
class DistillConfig:
    """Everything `distill()` needs besides the models and the data.

    Exactly one of `steps` and `tokens` sets the length of the run; `tokens` is rounded up to whole
    optimizer steps of `global_batch × seq_len` tokens.

    `precision`: "fp32", "bf16" (autocast, fp32 master weights and optimizer) or "auto" (bf16 on a
    CUDA device with bf16 support, fp32 otherwise: CPU runs stay exact and reproducible).

    `parallel`: "auto" (DDP when launched with more than one process, else none), "none", "ddp" or
    "fsdp" (FSDP2 `fully_shard` of each block and of the student root; the teacher's blocks are
    sharded too, its embeddings and head are replicated).
    """

    steps: int | None = None
    tokens: float | None = None
    global_batch: int = 64
    micro_batch: int = 2
    lr: float = 1e-4
    min_lr: float = 1e-5
    warmup: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    # loss
    temperature: float = 1.0
    kd_loss: str = "forward"
    kd_weight: float = 1.0
    ce_weight: float = 0.0
    chunk_size: int | None = None
    kd_topk: int | None = None
    # numerics and placement
    precision: str = "auto"
    parallel: str = "auto"
    device: str | None = None
    teacher_device: str | None = None
    seed: int = 0
    shuffle: bool = True
    # outputs
    out_dir: str | None = None
    save_every: int | None = None
    keep_last: int = 2
    resume: str | None = None
    stop_at_step: int | None = None
    eval_every: int | None = None
    log_every: int = 1
    progress: bool = True
    report_to: tuple[str, ...] | list[str] = field(default_factory=list)  # checked into a tuple by validate()
    export: bool = True
    plot: bool = True
    tokenizer_dir: str | None = None
    check_heads: bool = True

    def validate(self) -> None:
        if (self.steps is None) == (self.tokens is None):
            raise DistillError(
                "give exactly one of steps and tokens (the length of the run); "
                f"got steps={self.steps}, tokens={self.tokens}"
            )
        if self.steps is not None and (int(self.steps) != self.steps or self.steps < 1):
            raise DistillError(f"steps must be a positive integer, got {self.steps}")
        if self.tokens is not None and not (self.tokens > 0 and math.isfinite(self.tokens)):
            raise DistillError(f"tokens must be a positive number, got {self.tokens}")
        for name in ("global_batch", "micro_batch", "keep_last", "log_every"):
            if int(getattr(self, name)) < 1:
                raise DistillError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.global_batch % self.micro_batch:
            raise DistillError(
                f"global_batch ({self.global_batch}) must be a multiple of micro_batch ({self.micro_batch})"
            )
        if not (self.lr > 0) or self.min_lr < 0 or self.min_lr > self.lr:
            raise DistillError(f"need 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.warmup < 0:
            raise DistillError(f"warmup must be >= 0, got {self.warmup}")
        for name in ("save_every", "eval_every", "stop_at_step", "chunk_size"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise DistillError(f"{name} must be >= 1 when given, got {v}")
        if self.grad_clip is not None and not (self.grad_clip > 0):
            raise DistillError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.precision not in PRECISIONS:
            raise DistillError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.parallel not in PARALLEL:
            raise DistillError(f"parallel must be one of {PARALLEL}, got {self.parallel!r}")
        from .loss import check_loss_options

        try:
            check_loss_options(self.kd_loss, self.temperature, self.kd_weight, self.ce_weight)
        except ValueError as e:
            raise DistillError(str(e)) from None
        if self.kd_weight == 0:
            raise DistillError("kd_weight is 0: that is plain training, not distillation")
        if self.kd_topk is not None:
            if int(self.kd_topk) < 1:
                raise DistillError(f"kd_topk must be >= 1 when given, got {self.kd_topk}")
            if self.kd_loss != "forward" or self.temperature != 1.0:
                raise DistillError("top-k teacher logits keep the forward KL at temperature 1 (the tail mass is "
                                   f"known only there); got kd_loss={self.kd_loss!r}, temperature={self.temperature}")
        if self.report_to:
            self.report_to = check_report_to(self.report_to)

    def total_steps(self, seq_len: int) -> int:
        if self.steps is not None:
            return int(self.steps)
        return max(1, math.ceil(float(self.tokens) / (self.global_batch * seq_len)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        d["report_to"] = list(self.report_to)
        return d

    def trajectory(self) -> dict:
        d = self.to_dict()
        return {k: d[k] for k in TRAJECTORY_FIELDS}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


REPORTERS = ("tensorboard", "wandb")


def check_report_to(names) -> tuple[str, ...]:
    """Known names, and their package importable: refused before anything is loaded."""
    names = tuple(dict.fromkeys(names or ()))
    for name in names:
        if name not in REPORTERS:
            raise DistillError(f"report_to {name!r} is not one of {', '.join(REPORTERS)}")
        package = {"tensorboard": "tensorboard", "wandb": "wandb"}[name]
        try:
            __import__(package)
        except ImportError:
            raise DistillError(f"--report-to {name} needs the {package} package, which is not installed: "
                               f"pip install {package} (or leave --report-to {name} out; log.jsonl is always "
                               "written)") from None
    return names
