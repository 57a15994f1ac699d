"""`--device` and `--device-map` checked where they enter, before anything is loaded.

torch accepts any well-formed device name (`cuda:7`, `mps`) and fails only when the first tensor is
moved, after minutes of loading, with a message about drivers. Here a name is refused unless the
device is present, with one line listing the devices this machine has.
"""

from __future__ import annotations

import torch

from .common import CliError

#: accelerate's big-model placement strategies (`from_pretrained(device_map=...)`)
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def _backend(kind: str):
    if kind == "mps":
        return getattr(torch.backends, "mps", None)
    return getattr(torch, kind, None)


def _count(kind: str) -> int:
    """How many devices of this kind torch can use here (0 when the backend is missing or not usable)."""
    if kind == "cpu":
        return 1
    backend = _backend(kind)
    try:
        if backend is None or not backend.is_available():
            return 0
        return int(backend.device_count()) if hasattr(backend, "device_count") else 1
    except (RuntimeError, AssertionError):
        return 0


def available_devices() -> list[str]:
    """The devices this machine has, as `--device` takes them."""
    names = ["cpu"]
    for kind in ("cuda", "xpu", "mps"):
        n = _count(kind)
        names += [kind] if kind == "mps" and n else [f"{kind}:{i}" for i in range(n)]
    return names


def _choices() -> str:
    have = available_devices()
    gpu = next((d for d in have if d != "cpu"), None)
    hint = f"--device {gpu} or --device cpu" if gpu else "--device cpu"
    return f"devices here: {', '.join(have)}; pass {hint} (or auto, which takes a GPU when there is one)"


def check_device(device: str | None, option: str = "--device") -> None:
    """Refuse (CliError) a device name torch does not know or a device this machine does not have."""
    if device is None or device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise CliError(f"{option} {device!r} is not a device name; {_choices()}") from None
    if dev.type == "meta" or (dev.type in ("cpu", "mps") and dev.index not in (None, 0)):
        raise CliError(f"{option} {device}: there is no such device; {_choices()}")
    count = _count(dev.type)
    if count == 0:
        raise CliError(f"{option} {device}: this machine has no {dev.type} device (torch sees none); {_choices()}")
    if dev.index is not None and dev.index >= count:
        raise CliError(f"{option} {device}: this machine has {count} {dev.type} device(s), numbered from 0; "
                       f"{_choices()}")


def check_device_map(device_map: str | None, option: str = "--device-map") -> None:
    """`--device-map` takes one of accelerate's strategies (a per-module mapping belongs in Python)."""
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise CliError(f"{option} {device_map!r} is not a placement strategy; use one of "
                       f"{', '.join(DEVICE_MAPS)} (or leave it out and use --device)")
