"""Shared CLI plumbing: error reporting, the memory forecast printed, torchrun, the load path's names.

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

from ..options import SettingError
from .console import alerts, console  # noqa: F401 - the commands import `console` from here
from .errors import CliError  # noqa: F401 - the commands import `CliError` from here


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
        from ..output.atomic import OutputError, describe_os_error
        from ..output.cleanup import on_failure
        from ..output.signals import Interrupted, terminate_as_interrupt

        notes: list[str] = []
        try:
            with terminate_as_interrupt(), on_failure() as notes, _warnings_as_notes():
                return func(*args, **kwargs)
        except (SettingError, OutputError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as exc:
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


def check_checkpoint_dir(path: str | Path, role: str = "checkpoint") -> Path:
    from ..checkpoint.load import resolve

    return resolve(path, role)


def load_model(path: str | Path, *, dtype: str = "auto", device: str | None = None,
               trust_remote_code: bool = False, role: str = "checkpoint", device_map: str | None = None,
               whole: bool = False):
    """Load a causal LM through the one checked load path (`hybridprune.checkpoint.load.load_model`,
    which holds the dtype and device rules); `device=None` is "auto" here, a GPU when there is one."""
    from ..checkpoint.load import load_model as load

    return load(path, dtype=dtype, device=device or "auto", trust_remote_code=trust_remote_code, role=role,
                device_map=device_map, whole=whole)


def voice():
    """A stage's lines on the command line: notes dim on the console, warnings on `alerts` (shown under -q)."""
    from ..stages.common import console_voice

    return console_voice(console, alerts)


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
