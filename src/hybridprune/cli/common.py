"""Shared CLI plumbing: the load path with CLI dtypes and devices, torchrun, error reporting.

Importing this module imports no torch: `--help` and every refusal that needs no model answer at
once. The helpers that need torch import it when called.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from pathlib import Path

import typer
from rich.markup import escape

from .console import alerts, console  # noqa: F401 - the commands import `console` from here
from .errors import CliError  # the commands import `CliError` from here


def _error(message: str) -> None:
    alerts.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)


@contextlib.contextmanager
def _warnings_as_notes():
    """Our own warnings (e.g. scores from another model) as one yellow line, not Python's
    `file:line: UserWarning` with a source excerpt; other libraries' warnings are left as they are."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if "hybridprune" in str(filename):
            alerts.print(f"[yellow]warning:[/] {escape(str(message))}", soft_wrap=True, highlight=False)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def fail_cleanly(func):
    """Turn expected errors into a red message and exit status 2, without a traceback.

    A write that fails (full disk, read-only mount, ...) is reported the same way, and an interrupt
    (Ctrl-C, SIGTERM) ends the command with 130 or 143 and a note on what is kept.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from ..output.cleanup import on_failure
        from ..output.atomic import OutputError, describe_os_error
        from ..output.signals import Interrupted, terminate_as_interrupt

        notes: list[str] = []
        try:
            with terminate_as_interrupt(), on_failure() as notes, _warnings_as_notes():
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


def resolve_device(device: str | None):
    """The torch device of a `--device` value; a device this machine lacks is refused (CliError)."""
    from .devices import check_device

    check_device(device)
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


#: `--dtype` names and the torch dtype each stands for
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def resolve_dtype(dtype: str):
    """The torch dtype of a `--dtype` value, or "auto"; an unknown name is refused before torch is imported."""
    if dtype == "auto":
        return "auto"
    if dtype not in DTYPES:
        raise CliError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(DTYPES)}")
    import torch

    return getattr(torch, DTYPES[dtype])


def check_checkpoint_dir(path: str | Path, role: str = "checkpoint") -> Path:
    from ..checkpoint.load import resolve

    return resolve(path, role)


def load_config(path: str | Path, *, trust_remote_code: bool = False, role: str = "checkpoint"):
    from ..checkpoint import load as checkpoints

    return checkpoints.load_config(path, trust_remote_code=trust_remote_code, role=role)


def load_model(path: str | Path, *, dtype: str = "auto", device: str | None = None,
               trust_remote_code: bool = False, role: str = "checkpoint", device_map: str | None = None,
               whole: bool = False):
    """Load a causal LM through the one checked load path (`hybridprune.checkpoint.load`); `whole`: a
    vision-language wrapper with its vision tower (see `checkpoints.load_model`).

    `dtype="auto"` keeps the stored dtype, except on a GPU, where it is bfloat16. `device_map` ("auto"
    or accelerate's other strategies) spreads the model over the GPUs, the CPU and disk instead of
    placing it on `device`."""
    import torch

    from ..checkpoint import load as checkpoints

    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    if torch_dtype == "auto" and (target.type == "cuda" or (device_map and torch.cuda.is_available())):
        torch_dtype = torch.bfloat16
    return checkpoints.load_model(path, dtype=torch_dtype, device=None if device_map else target,
                                  trust_remote_code=trust_remote_code, role=role, device_map=device_map, whole=whole)


def weight_bytes(config, dtype: str, device: str | None = None) -> int:
    """Bytes per parameter a model will be loaded with (`load_model`'s rule), for the memory forecast."""
    import torch

    torch_dtype = resolve_dtype(dtype)
    if torch_dtype == "auto":
        if resolve_device(device).type == "cuda":
            return 2
        stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32"
        torch_dtype = getattr(torch, str(stored).replace("torch.", ""), torch.float32)
    return torch.empty((), dtype=torch_dtype).element_size()


def forward_forecast(config, stage: str, *, batch: int, seq: int, dtype: str, device: str | None,
                     depth: bool = False):
    """The memory forecast of a forward-only stage ("calibrate" or "evaluate") of the model `config` describes."""
    from ..architectures import get_adapter
    from ..checkpoint.forecast import forecast_forward

    adapter = get_adapter(config)
    chunk = getattr(config, "chunk_size", None) or getattr(config, "mamba_chunk_size", None) or 128
    return forecast_forward(stage, adapter, adapter.dims(config), batch=batch, seq=seq, depth=depth,
                            weight_bytes=weight_bytes(config, dtype, device), chunk=int(chunk),
                            device=str(resolve_device(device)))


def forecast_memory(forecast, *, force: bool, lower: str, spread: bool = False) -> None:
    """Print the memory forecast; refuse (MemoryForecastError) when it clearly exceeds the device,
    unless `force`, or the model is spread over devices (`spread`: a device map places it)."""
    console.print(f"[dim]{escape(forecast.describe())}[/]", highlight=False)
    if not spread:
        forecast.check(force=force, lower=lower)


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False, role: str = "checkpoint"):
    from ..checkpoint import load as checkpoints

    return checkpoints.load_tokenizer(path, trust_remote_code=trust_remote_code, role=role)


def init_distributed() -> tuple[int, int]:
    """Join the process group when launched by torchrun; returns (rank, world_size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch
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
