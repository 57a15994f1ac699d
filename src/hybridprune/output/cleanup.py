"""What a failed command leaves: a run directory it created and that holds nothing worth resuming is
removed (`remove_if_failed`), within the scope of one command (`on_failure`, which `fail_cleanly`
opens). Only directories holding nothing but hybridprune's own entries are ever removed. A command that
writes a directory in place holds its lock (`lock_until_done`) until it ends, its cleanups included."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .atomic import OutputError, foreign_entries
from .lock import locked

_ON_FAILURE: list[Callable[[BaseException], None]] = []
_NOTES: list[str] = []
_HELD: list[ExitStack] = []


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


def lock_until_done(out: str | os.PathLike) -> None:
    """Lock directory `out` (`lock.locked`: a second command writing it is refused, naming this one's
    PID; a killed command's lock is taken over) until this command ends, after its cleanups: no other
    command starts there while this one removes what it began."""
    if not _HELD:
        raise RuntimeError("lock_until_done is called within a command (on_failure)")
    _HELD[-1].enter_context(locked(out))


@contextmanager
def on_failure():
    """Scope of one command: the cleanups registered by `remove_if_failed` run if it fails.
    Yields the notes they leave (e.g. how to resume), for the error message."""
    _ON_FAILURE.clear()
    _NOTES.clear()
    with ExitStack() as held:
        _HELD.append(held)
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
            _HELD.remove(held)
