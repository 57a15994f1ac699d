"""The options several commands take, declared once: their flag, help text and rule. A command passes
the default of its stage's settings (`hybridprune.stages`), the one place defaults are defined:

    device: str = shared.device(D.device)

and a help text of its own only where the option means more for it (`prune --device`).
"""

from __future__ import annotations

from typing import Any

import typer

from ..options import SEED

DEVICE_HELP = "auto, cpu, cuda, cuda:1, ..."
DTYPE_HELP = "auto (as saved; bfloat16 on a GPU), float32, bfloat16, float16."


def device(default: str | None, help: str = DEVICE_HELP, flag: str = "--device") -> Any:
    return typer.Option(default, flag, help=help)


def device_map(what: str = "a model larger than one device", flag: str = "--device-map") -> Any:
    return typer.Option(None, flag, help=f"Spread {what} over the GPUs, CPU and disk (accelerate's big-model "
                                         "inference): auto, balanced, sequential.")


def dtype(default: str, help: str = DTYPE_HELP) -> Any:
    return typer.Option(default, "--dtype", help=help)


def seed(default: int, help: str) -> Any:
    return typer.Option(default, "--seed", min=SEED.low, max=SEED.high, help=help)


def trust_remote_code(default: bool, whose: str = "the checkpoint's") -> Any:
    return typer.Option(default, "--trust-remote-code", help=f"Allow {whose} own Python code (off by default).")


def force(default: bool) -> Any:
    return typer.Option(default, "--force", help="Start even when the memory forecast exceeds what the device has.")


def text_field(default: str) -> Any:
    return typer.Option(default, "--text-field", help="Field holding the text in JSON/parquet data.")


def overwrite(what: str) -> Any:
    return typer.Option(False, "--overwrite", help=f"Replace {what} in --out (never files hybridprune did not write).")
