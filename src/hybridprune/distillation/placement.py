"""Where the models run and in what precision: bf16 autocast or not, the parallel mode (none, DDP,
FSDP2) and the wrapping for it. FSDP2 shards each repeated block of teacher and student and moves only
the shards to the device; everything else is moved whole."""

from __future__ import annotations

import torch
from torch import nn

from . import dist as hpdist
from .config import DistillConfig
from .models import base_model_of


def use_bf16(cfg: DistillConfig, device: torch.device) -> bool:
    """Whether to train under bf16 autocast: `precision="auto"` means bf16 on a GPU that supports it."""
    if cfg.precision == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    else:
        bf16 = cfg.precision == "bf16"
    return bf16


def parallel_mode(cfg: DistillConfig, env: hpdist.DistEnv) -> str:
    """`"none"`, `"ddp"` or `"fsdp"`: `auto` means DDP in a process group; outside one, nothing to wrap."""
    mode = cfg.parallel
    if mode == "auto":
        mode = "ddp" if env.enabled else "none"
    if mode in ("ddp", "fsdp") and not env.enabled:
        mode = "none"
    return mode


def wrap_parallel(kd_module: nn.Module, teacher: nn.Module, student: nn.Module, mode: str,
                  env: hpdist.DistEnv) -> nn.Module:
    """The module the loop calls: `kd_module` under DDP, sharded in place under FSDP2, or as is."""
    device = env.device
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        return DDP(kd_module, device_ids=ids)
    if mode == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        if device.type == "cuda":
            torch.cuda.set_device(device)  # the mesh (and the shards) live on this process's GPU
        mesh = init_device_mesh(device.type, (env.world_size,))
        # Each teacher block is its own FSDP root (the teacher has no backward): reshard explicitly
        # after its forward, or it would stay gathered. Its embeddings and head stay replicated.
        for layer in _layers_of(teacher):
            fully_shard(layer, mesh=mesh, reshard_after_forward=True)
        for layer in _layers_of(student):
            fully_shard(layer, mesh=mesh)
        fully_shard(kd_module, mesh=mesh)
        _move_unsharded(teacher, device)  # the replicated rest: embeddings, final norm, head
        _move_unsharded(student, device)
    return kd_module  # FSDP2 shards it in place


def _layers_of(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a HF model (the FSDP units): the longest ModuleList in the base model."""
    best: list[nn.Module] = []
    for m in base_model_of(model).modules():
        if isinstance(m, nn.ModuleList) and len(m) > len(best):
            best = list(m)
    return best


def device_of(model: nn.Module) -> torch.device:
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
