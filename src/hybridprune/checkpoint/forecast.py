"""Memory forecast: what a command will need, from the dimensions alone, before anything is loaded.

Every term is bytes, computed from `Dims` and the run's batch, sequence length and dtypes:

- weights: the exact parameter count (the adapter's) at the weight dtype;
- forward activations: the residual stream, plus the largest transient of any one unit (layers free
  their intermediates before the next one runs; the allocator keeps that high-water mark), taken from the shapes the Hugging Face torch paths
  create: the Mamba2 chunked scan's float32 tensors (x, B/C expanded to heads, the intra-chunk
  `[chunk, chunk]` score and decay matrices, the chunk states), the attention projections and its
  mask, the MLP's intermediate;
- logits: `[batch, seq, vocab]` at the activation dtype, and the float32 copies the loss, the log-softmax
  of the depth KL divergence or the chunked distillation loss make;
- the inference cache (KV, conv and SSM state) for generation;
- for distillation: the student's gradients and AdamW's two moments (float32), the activations saved for
  the backward pass (every unit's transient, summed over layers), and the teacher's weights.

The forecast is an estimate: tests hold it within 20% of the measured peak on a CPU. Commands print it
and refuse to start when it clearly exceeds what the device has (`MemoryForecastError`), unless forced.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from ..architectures import ATTENTION, CONV, GDN, MAMBA, MLP, MOE, Dims
from ..architectures.base import unit_kinds

GIB = 2**30
#: what a process adds beyond tensors once it has loaded a model and run a forward: the model's code,
#: allocator caches and kernel workspaces (measured on CPU, transformers 5.24 / torch 2.13)
RUNTIME_BYTES = 96 * 2**20
#: float32 copies of the logits each stage makes, beyond the logits themselves (measured): the
#: evaluation loss upcasts and gathers them, the depth KL divergence keeps two log-softmaxes and their terms
LOGIT_COPIES = {"calibrate": 0.0, "evaluate": 1.5, "depth": 5.5}
#: a forecast this far above what the device has is refused (the estimate is good to about 20%)
REFUSE_ABOVE = 1.25
F32 = 4


class MemoryForecastError(ValueError):
    """The forecast clearly exceeds the memory the device has."""


def unit_transient_bytes(dims: Dims, kind: str, batch: int, seq: int, act: int, chunk: int = 128) -> int:
    """Bytes one unit's forward holds at its peak (no gradients), beyond its input and output."""
    tokens = batch * seq
    if kind == MAMBA:
        nh, hd, n, g = dims.mamba_num_heads, dims.mamba_head_dim, dims.mamba_state_size, dims.mamba_n_groups
        inner = nh * hd
        proj = 2 * inner + 2 * g * n + nh
        padded = batch * math.ceil(seq / chunk) * chunk
        chunks = batch * math.ceil(seq / chunk)
        return (tokens * (proj + inner + 2 * g * n) * act  # in_proj output, conv output
                + padded * F32 * (6 * inner + 3 * nh * n + 5 * nh * min(chunk, seq))  # scan tensors
                + 3 * chunks * inner * n * F32)  # chunk states
    if kind == ATTENTION:
        nq, nkv, hd = dims.num_attention_heads, dims.num_key_value_heads, dims.attention_head_dim
        return tokens * (2 * (nq + 2 * nkv) + 2 * nq + nq) * hd * act + batch * seq * seq  # + bool mask
    if kind == MLP:
        return tokens * 3 * dims.ffn_hidden_size * act
    if kind == CONV:  # short convolution (LFM2): in_proj's B, C, x, the gated input and the conv output
        return tokens * 5 * dims.hidden_size * act
    if kind == MOE:  # router scores (fp32, a few copies), each token's top-k expert activations, shared expert
        width = dims.moe_latent_size or dims.hidden_size
        routed = (dims.moe_top_k or 1) * (3 * dims.moe_ffn_hidden_size + 2 * width) * act
        return tokens * (4 * dims.num_moe_experts * F32 + routed + 3 * (dims.moe_shared_expert_intermediate_size or 0) * act)
    if kind == GDN:  # projections and conv output, then the chunked delta rule in float32
        kd = dims.linear_num_key_heads * dims.linear_key_head_dim
        vd = dims.linear_num_value_heads * dims.linear_value_head_dim
        hv = dims.linear_num_value_heads
        padded = batch * math.ceil(seq / 64) * 64
        return (tokens * (2 * (2 * kd + vd) + 2 * vd + 2 * hv) * act
                + padded * F32 * (2 * hv * dims.linear_key_head_dim + 3 * vd + 2 * hv * 64)
                + batch * hv * dims.linear_key_head_dim * dims.linear_value_head_dim * F32 * 2)
    return 0  # unknown unit kinds add nothing (their weights are still counted exactly)


def _max_transient(dims: Dims, batch: int, seq: int, act: int, chunk: int) -> int:
    kinds = {k for t in set(dims.block_kinds) for k in unit_kinds(t)}
    return max((unit_transient_bytes(dims, k, batch, seq, act, chunk) for k in kinds), default=0)


def _saved_for_backward(dims: Dims, batch: int, seq: int, act: int, chunk: int) -> int:
    total = 0
    for t in dims.block_kinds:
        for k in unit_kinds(t):
            total += unit_transient_bytes(dims, k, batch, seq, act, chunk)
        total += 4 * batch * seq * dims.hidden_size * act  # norms and residual adds
    return total


@dataclass
class Forecast:
    """Bytes per part for one stage on one device, and what the device has (None: unknown)."""

    stage: str
    device: str
    parts: dict[str, int] = field(default_factory=dict)
    available: int | None = None

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / GIB:.2f}" for k, v in self.parts.items() if v)
        have = f"; {self.device} has {self.available / GIB:.1f} GiB available" if self.available else ""
        return f"memory forecast for {self.stage}: {self.total / GIB:.2f} GiB ({parts}){have}"

    def check(self, *, force: bool = False, lower: str = "--batch-size or --seq-len") -> None:
        """Raise MemoryForecastError if the need clearly exceeds what the device has, unless `force`."""
        if force or self.available is None or self.total <= REFUSE_ABOVE * self.available:
            return
        raise MemoryForecastError(
            f"{self.stage} needs about {self.total / GIB:.1f} GiB but {self.device} has "
            f"{self.available / GIB:.1f} GiB available ({self.describe().split(': ', 1)[1].split(';')[0]}). "
            f"Lower {lower}, use a smaller --dtype, spread the model with --device-map auto, or pass --force "
            "to try anyway."
        )


def forward_parts(adapter, dims: Dims, *, batch: int, seq: int, weight_bytes: int, act_bytes: int | None = None,
                  logit_copies: float = 0.0, chunk: int = 128) -> dict[str, int]:
    """Weights, activations and logits of no-grad forward passes at `batch x seq`.

    `logit_copies`: float32 copies of the logits the caller makes (`LOGIT_COPIES`)."""
    act = act_bytes or weight_bytes
    residual = 4 * batch * seq * dims.hidden_size * act
    return {
        "weights": adapter.num_parameters(dims) * weight_bytes,
        "activations": residual + _max_transient(dims, batch, seq, act, chunk),
        "logits": int(batch * seq * dims.vocab_size * (act + logit_copies * F32)),
    }


def forecast_forward(stage: str, adapter, dims: Dims, *, batch: int, seq: int, weight_bytes: int,
                     depth: bool = False, chunk: int = 128, device: str = "cpu") -> Forecast:
    """Forward-only stages: `stage` "calibrate" (with `depth=True` when the KL divergence of every
    block's removal is measured too) or "evaluate"."""
    copies = LOGIT_COPIES["depth" if depth else stage]
    parts = forward_parts(adapter, dims, batch=batch, seq=seq, weight_bytes=weight_bytes, logit_copies=copies,
                          chunk=chunk)
    parts["runtime"] = RUNTIME_BYTES
    return Forecast(stage, device, parts, available_bytes(device))


def forward_forecast(config, stage: str, *, batch: int, seq: int, dtype: str, device: str | None,
                     depth: bool = False) -> Forecast:
    """`forecast_forward` of the model `config` describes, loaded as `--dtype` and `--device` say
    (the load path's rule: `devices.weight_bytes`)."""
    from ..architectures import get_adapter
    from .devices import resolve_device, weight_bytes

    adapter = get_adapter(config)
    return forecast_forward(stage, adapter, adapter.dims(config), batch=batch, seq=seq, depth=depth,
                            weight_bytes=weight_bytes(config, dtype, device), chunk=adapter.scan_chunk(config),
                            device=str(resolve_device(device)))


def forecast_distill(adapter, teacher: Dims, student: Dims, *, micro_batch: int, seq: int, weight_bytes: int = 4,
                     teacher_weight_bytes: int | None = None, chunk_positions: int, chunk: int = 128,
                     device: str = "cpu", teacher_adapter=None) -> Forecast:
    """Distillation: the student trained with AdamW (`weight_bytes` per master weight), the teacher
    forward only (`teacher_weight_bytes`, default the same), logits in chunks."""
    teacher_adapter = teacher_adapter or adapter
    n_student = adapter.num_parameters(student)
    teacher_forward = forward_parts(teacher_adapter, teacher, batch=micro_batch, seq=seq,
                                    weight_bytes=teacher_weight_bytes or weight_bytes, chunk=chunk)
    parts = {
        "student weights": n_student * weight_bytes,
        "gradients": n_student * F32,
        "optimizer": 2 * n_student * F32,
        "saved activations": _saved_for_backward(student, micro_batch, seq, weight_bytes, chunk),
        "logit chunks": 6 * chunk_positions * max(teacher.vocab_size, student.vocab_size) * F32,
        "teacher weights": teacher_forward["weights"],
        "teacher activations": teacher_forward["activations"],
        "runtime": RUNTIME_BYTES,
    }
    return Forecast("distillation", device, parts, available_bytes(device))


def generation_parts(adapter, dims: Dims, *, batch: int, context: int, new_tokens: int, weight_bytes: int,
                     chunk: int = 128) -> dict[str, int]:
    """The prefill of `batch x context` tokens (logits of the last position only) and the cache it fills."""
    from ..architectures.cache import cache_bytes

    dtype = {2: "bfloat16", 4: "float32"}.get(weight_bytes, "float32")
    cache = cache_bytes(dims, batch=batch, seq_len=context + new_tokens, dtype=dtype, adapter=adapter)
    return {
        "activations": 4 * batch * context * dims.hidden_size * weight_bytes
        + _max_transient(dims, batch, context, weight_bytes, chunk) + batch * dims.vocab_size * F32,
        "cache": sum(cache.values()),
    }


def forecast_prune(adapter, dims: Dims, *, weight_bytes: int, largest_tensor_bytes: int | None = None,
                   device: str = "cpu") -> Forecast:
    """Pruning: streamed, at most three of the largest tensors (an upper bound: blocks of at most 64 MiB of
    them are mapped and cut, a few at once, `pruning.stream_tensors`); in memory, the model and its pruned
    copy."""
    if largest_tensor_bytes is not None:
        parts = {"tensors in flight": 3 * largest_tensor_bytes}
    else:
        weights = adapter.num_parameters(dims) * weight_bytes
        parts = {"weights": weights, "pruned copy": weights}
    parts["runtime"] = RUNTIME_BYTES
    return Forecast("pruning", device, parts, available_bytes(device))


def available_bytes(device: str = "cpu") -> int | None:
    """Memory the device can still give: free CUDA memory, or the host's available memory (cgroup-aware)."""
    if str(device).startswith("cuda"):
        try:
            import torch

            free, _ = torch.cuda.mem_get_info(torch.device(device))
            return int(free)
        except Exception:
            return None
    candidates = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:  # a container's own limit, if set
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        used = int(open("/sys/fs/cgroup/memory.current").read().strip())
        if limit != "max":
            candidates.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    if not candidates and hasattr(os, "sysconf"):
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            pass
    return min(candidates) if candidates else None
