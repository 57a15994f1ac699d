"""`--device` and `--device-map` are checked in `hybridprune.checkpoint.devices`, below the command
line, so that recipes and the Python API check them the same way; the names stay importable here."""

from __future__ import annotations

from ..checkpoint.devices import (  # noqa: F401 - re-exported
    DEVICE_MAPS,
    DEVICE_TYPES,
    NAMING,
    available_devices,
    check_device,
    check_device_map,
    parse_device,
)
