"""Shared CLI plumbing: loading checkpoints with clear errors, devices, torchrun, error reporting."""

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


def fail_cleanly(func):
    """Turn expected errors into a red one-line message and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (CliError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None

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


def check_checkpoint_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise CliError(f"checkpoint {path} does not exist")
    if not path.is_dir():
        raise CliError(f"checkpoint {path} is not a directory (expected a Hugging Face model directory)")
    if not (path / "config.json").is_file():
        raise CliError(f"{path} has no config.json: not a Hugging Face checkpoint")
    return path


def load_config(path: str | Path, *, trust_remote_code: bool = False):
    from transformers import AutoConfig

    path = check_checkpoint_dir(path)
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise CliError(f"cannot read the config in {path}: {exc}") from exc


def load_model(path: str | Path, *, dtype: str = "auto", device: str | None = None,
               trust_remote_code: bool = False):
    """Load a causal LM from a local directory (safetensors only unless the user opts in)."""
    from transformers import AutoModelForCausalLM

    path = check_checkpoint_dir(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code, use_safetensors=True,
        )
    except Exception as exc:
        raise CliError(f"cannot load the model in {path}: {exc}. Is the checkpoint complete "
                       "(config.json and *.safetensors)?") from exc
    return model.to(resolve_device(device)).eval()


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise CliError(f"cannot load a tokenizer from {path}: {exc}") from exc


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
