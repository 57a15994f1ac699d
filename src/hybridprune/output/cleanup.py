"""What a failed command leaves: a run directory it created and that holds nothing worth resuming is
removed (`remove_if_failed`), within the scope of one command (`on_failure`, which `fail_cleanly`
opens). Only directories holding nothing but hybridprune's own entries are ever removed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from .atomic import OutputError, foreign_entries

_ON_FAILURE: list[Callable[[BaseException], None]] = []
_NOTES: list[str] = []


def remove_if_failed(out: str | os.PathLike, *, keep: Callable[[Path], bool] | None = None,
                     note: str | None = None) -> None:
    """Ask `on_failure` to remove run directory `out` if this command created it and then fails
    before `keep(out)` says it holds something worth resuming. `note` is said on an interrupt."""
    out = Path(out)
    created = not out.exists()

    def cleanup(exc: BaseException) -> None:
        resumable = keep is not None and out.is_dir() and keep(out)
        if created and out.is_dir() and not resumable and not foreign_entries(out):
            shutil.rmtree(out, ignore_errors=True)
        elif note and resumable:
            _NOTES.append(note)

    _ON_FAILURE.append(cleanup)


@contextmanager
def on_failure():
    """Scope of one command: the cleanups registered by `remove_if_failed` run if it fails.
    Yields the notes they leave (e.g. how to resume), for the error message."""
    _ON_FAILURE.clear()
    _NOTES.clear()
    try:
        yield _NOTES
    except BaseException as exc:
        for cleanup in reversed(_ON_FAILURE):
            try:
                cleanup(exc)
            except (OSError, OutputError):
                pass
        raise
    finally:
        _ON_FAILURE.clear()
