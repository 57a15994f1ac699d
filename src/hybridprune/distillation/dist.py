"""Process-group plumbing: one code path for a single process, `torchrun`/`accelerate launch`, or
a group the caller initialised itself (as the tests do with `torch.multiprocessing`)."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str | None = None) -> DistEnv:
    """Join the process group when launched as several processes; pick this process's device."""
    owns = False
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if not dist.is_initialized() and env_world > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
        owns = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    local_rank = int(os.environ.get("LOCAL_RANK", rank if world > 1 else 0))
    if device is not None:
        dev = torch.device(device)
    elif torch.cuda.is_available() and (not dist.is_initialized() or dist.get_backend() == "nccl"):
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    else:
        dev = torch.device("cpu")
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev, owns_group=owns)


def teardown(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.barrier()  # leave together: gloo aborts a process whose peer tears down mid-exchange
        dist.destroy_process_group()


def all_reduce_sum(env: DistEnv, values: list[float]) -> list[float]:
    """Sum a few numbers over processes (float64, so counts and sums stay exact enough)."""
    if not env.enabled:
        return list(values)
    device = env.device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def gather_to_main(env: DistEnv, obj):
    """Every process's `obj` as a list on rank 0 (None elsewhere)."""
    if not env.enabled:
        return [obj]
    out = [None] * env.world_size if env.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(env: DistEnv, obj):
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
