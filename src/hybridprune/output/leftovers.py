"""What a resumable writer killed (SIGKILL, power loss) during its setup leaves, and how its rerun takes
it over.

A writer records its names in the directory's manifest (`atomic.claim`) and writes its progress record
through a temporary file; killed in between, the directory holds only hybridprune's own entries and a
temporary of a dead process, with no progress record yet. That is nothing to refuse as "not empty" and
nothing to keep: the same command run again continues (or starts) there, after removing the dead
process's temporaries so that the finished directory is the one an uninterrupted run writes. Its lock
file (`lock.LOCK`) is hybridprune's too: the rerun takes it over (`lock.locked`), or, while its
writer still runs, is refused naming that writer's PID.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from .atomic import MANIFEST, _pid_alive, is_temp_name, owned_names
from .lock import LOCK


def unfinished(directory: str | os.PathLike, names: Iterable[str], *, done: str) -> bool:
    """`directory` holds what a writer of `names` killed before it finished leaves: no `done` file, and
    besides dead processes' temporaries only entries among `names` that the manifest lists as hybridprune's."""
    d = Path(directory)
    if not d.is_dir() or (d / done).exists():
        return False
    present = {p.name for p in d.iterdir() if not _dead_temporary(p.name)}  # a live one: another run writes
    return present <= {*names, MANIFEST, LOCK} and present - {MANIFEST, LOCK} <= owned_names(d)


def _dead_temporary(name: str) -> bool:
    pid = name.rpartition("-")[2]
    return is_temp_name(name) and pid.isdigit() and not _pid_alive(int(pid))


def remove_dead_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporaries (`*.hybridprune-tmp-PID`, the manifest's `.tmp-PID`) in `directory` whose
    process is gone; returns them."""
    removed = []
    for p in Path(directory).iterdir():
        if _dead_temporary(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed
