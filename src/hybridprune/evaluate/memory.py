"""Peak memory of one measured region: CUDA peak allocated on a GPU, peak RSS growth on the CPU.

On the CPU, torch allocates through the C allocator, outside what `tracemalloc` sees, so the honest
figure is the process's resident set. Linux keeps its high-water mark (`VmHWM` in
`/proc/self/status`) and resets it to the current RSS when `5` is written to `/proc/self/clear_refs`;
the growth of that mark over a region is the region's peak extra memory (weights already loaded are
not counted, freed temporaries are). It is growth, not use: a long-lived process may serve the
region from heap pages it freed earlier and still holds (glibc keeps a fragmented heap resident),
which costs the machine nothing more and reads as 0. Measure a step's own peak in a fresh process,
as `bench/kd_memory.py` does. Where `/proc` is missing or read-only the figure is `None`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(m.group(1)) if m else None


class PeakMemory:
    """`with PeakMemory(device) as peak: ...` then `peak.mib` (None where it cannot be measured)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.mib: float | None = None
        self._base: int | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            try:
                _CLEAR_REFS.write_text("5")
            except OSError:
                self._base = None
                return self
            self._base = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self._base is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        else:
            peak = _status_kib("VmHWM")
            self.mib = None if peak is None else max(0, peak - self._base) / 1024
