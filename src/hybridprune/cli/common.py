"""Shared CLI plumbing: the load path with CLI dtypes and devices, torchrun, error reporting."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)


class CliError(Exception):
    """An error to show the user as one message, without a traceback."""


def _error(message: str) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)


def fail_cleanly(func):
    """Turn expected errors into a red message and exit status 2, without a traceback.

    A write that fails (full disk, read-only mount, ...) is reported the same way, and an interrupt
    (Ctrl-C, SIGTERM) ends the command with 130 or 143 and a note on what is kept.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from ..fsutil import OutputError, describe_os_error, on_failure
        from ..signals import Interrupted, terminate_as_interrupt

        notes: list[str] = []
        try:
            with terminate_as_interrupt(), on_failure() as notes:
                return func(*args, **kwargs)
        except (CliError, OutputError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as exc:
            _error(str(exc))
            raise typer.Exit(2) from None
        except OSError as exc:
            _error(describe_os_error(exc, "an output", getattr(exc, "filename", None) or "disk", cleaned=False))
            raise typer.Exit(2) from None
        except KeyboardInterrupt as exc:
            code = exc.exit_code if isinstance(exc, Interrupted) else 130
            _error("; ".join([str(exc) or "interrupted", *notes]))
            raise typer.Exit(code) from None

    return wrapper


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str):
    if dtype == "auto":
        return "auto"
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise CliError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(table)}")
    return table[dtype]


def check_checkpoint_dir(path: str | Path, role: str = "checkpoint") -> Path:
    from ..checkpoints import resolve

    return resolve(path, role)


def load_config(path: str | Path, *, trust_remote_code: bool = False, role: str = "checkpoint"):
    from .. import checkpoints

    return checkpoints.load_config(path, trust_remote_code=trust_remote_code, role=role)


def load_model(path: str | Path, *, dtype: str = "auto", device: str | None = None,
               trust_remote_code: bool = False, role: str = "checkpoint"):
    """Load a causal LM through the one checked load path (`hybridprune.checkpoints`)."""
    from .. import checkpoints

    return checkpoints.load_model(path, dtype=resolve_dtype(dtype), device=resolve_device(device),
                                  trust_remote_code=trust_remote_code, role=role)


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False, role: str = "checkpoint"):
    from .. import checkpoints

    return checkpoints.load_tokenizer(path, trust_remote_code=trust_remote_code, role=role)


def init_distributed() -> tuple[int, int]:
    """Join the process group when launched by torchrun; returns (rank, world_size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
