"""Devices and dtypes as the user names them: `--device`, `--device-map` and `--dtype` (a recipe's
`device`, `dtype`) checked where they enter, before anything is loaded, and resolved for the one
load path (`checkpoint.load.load_model`) and the memory forecasts.

torch accepts any well-formed device name (`cuda:7`, `mps`) and fails only when the first tensor is
moved, after minutes of loading, with a message about drivers. Here a name is refused unless the
device is present, with one line listing the devices this machine has.

A name's spelling is checked without torch (a typo answers at once); whether the device is there is
asked of torch, which is imported only for that (a device other than the CPU).
"""

from __future__ import annotations

import re

from ..options import SettingError

#: accelerate's big-model placement strategies (`from_pretrained(device_map=...)`)
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")

#: the device types torch.device() knows (c10's DeviceType names), and its grammar: `type` or `type:index`
DEVICE_TYPES = ("cpu", "cuda", "ipu", "xpu", "mkldnn", "opengl", "opencl", "ideep", "hip", "ve", "fpga", "maia",
                "xla", "lazy", "vulkan", "mps", "meta", "hpu", "mtia", "privateuseone")
_DEVICE_NAME = re.compile(r"([a-z]+)(?::(0|[1-9][0-9]*))?")
#: how a name is written, for the message refusing a misspelt one
NAMING = "auto (a GPU when there is one), cpu, cuda, cuda:N, mps or xpu"


def parse_device(device: str, option: str = "--device") -> tuple[str, int | None]:
    """The type and index of a device name, by torch.device's grammar, without importing torch."""
    match = _DEVICE_NAME.fullmatch(device)
    if match is None or match[1] not in DEVICE_TYPES:
        raise SettingError(f"{option} {device!r} is not a device name; name one as {NAMING}, "
                           f"e.g. pass {option} cpu")
    return match[1], None if match[2] is None else int(match[2])


def _backend(kind: str):
    import torch

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
    """Refuse (SettingError) a device name torch does not know or a device this machine does not have.

    The CPU is always there: checking it imports nothing."""
    if device is None or device == "auto":
        return
    kind, index = parse_device(device, option)
    if kind == "cpu" and index in (None, 0):
        return
    if kind == "meta" or (kind in ("cpu", "mps") and index not in (None, 0)):
        raise SettingError(f"{option} {device}: there is no such device; {_choices()}")
    count = _count(kind)
    if count == 0:
        raise SettingError(f"{option} {device}: this machine has no {kind} device (torch sees none); {_choices()}")
    if index is not None and index >= count:
        raise SettingError(f"{option} {device}: this machine has {count} {kind} device(s), numbered from 0; "
                           f"{_choices()}")


def check_device_map(device_map: str | None, option: str = "--device-map") -> None:
    """`--device-map` takes one of accelerate's strategies (a per-module mapping belongs in Python)."""
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise SettingError(f"{option} {device_map!r} is not a placement strategy; use one of "
                           f"{', '.join(DEVICE_MAPS)} (or leave it out and use --device)")


def resolve_device(device: str | None):
    """The torch device of a `--device` value (None and "auto": a GPU when there is one); a device this
    machine lacks is refused (SettingError)."""
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
        raise SettingError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(DTYPES)}")
    import torch

    return getattr(torch, DTYPES[dtype])


def load_dtype(dtype: str, device, device_map: str | None = None):
    """The dtype a model is loaded with: `dtype="auto"` keeps the stored dtype, except on a GPU (the
    target `device`, or a `device_map` on a machine with one), where it is bfloat16."""
    import torch

    torch_dtype = resolve_dtype(dtype) if isinstance(dtype, str) else dtype
    on_gpu = device is not None and torch.device(device).type == "cuda"
    if torch_dtype == "auto" and (on_gpu or (device_map and torch.cuda.is_available())):
        return torch.bfloat16
    return torch_dtype


def weight_bytes(config, dtype: str, device: str | None = None) -> int:
    """Bytes per parameter a model will be loaded with (`load_dtype`'s rule), for the memory forecasts."""
    from .dtypes import stored_bytes

    torch_dtype = load_dtype(dtype, resolve_device(device))
    return stored_bytes(config) if torch_dtype == "auto" else torch_dtype.itemsize
