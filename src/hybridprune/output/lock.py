"""One writer per output directory: an exclusive `flock` on `LOCK` inside it (`locked`).

Two commands writing one directory would interleave their files, so the second is refused at once,
naming the first one's PID. The kernel releases the lock when its holder dies, so a lock file left by
a killed command is taken over; a `LOCK` that is a link, not a regular file, or holds something other
than a PID is someone else's, and is refused untouched.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError

LOCK = ".hybridprune-lock"  # held by the command writing the directory


@contextlib.contextmanager
def locked(directory: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock of `directory` (created if missing) while the body runs.

    Another process holding it makes this refuse at once (`OutputError`, naming its PID): two commands
    writing one directory would interleave their files. The lock is an flock on `LOCK` inside the
    directory, released by the kernel when the holder dies (a file left by a killed run is taken over)
    and removed when the body ends. A `LOCK` that is a link, not a regular file, or not a PID is someone
    else's: refused, untouched.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = _acquire(directory / LOCK)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if _same_file(fd, directory / LOCK):
                os.unlink(directory / LOCK)
        os.close(fd)


def _acquire(path: Path) -> int:
    for _ in range(100):  # the holder may remove the file between our open and our lock: lock the one there now
        fd = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"PID {pid}" if pid.isdigit() else "another process"
            raise OutputError(f"{path.parent} is being written by another hybridprune command ({who}); wait "
                              "for it to finish (or stop it), then run this again") from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)
    raise OutputError(f"could not lock {path.parent}: its lock file keeps being replaced; run this again")


def _open_lock(path: Path) -> int:
    def foreign(what: str):
        return OutputError(f"{path} {what}, so it is not hybridprune's lock file; nothing was written through it. "
                           f"Remove it, or choose another output directory")

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError:
        if path.is_symlink() or path.is_dir():
            raise foreign("is a symbolic link" if path.is_symlink() else "is a directory") from None
        raise
    info = os.fstat(fd)
    content = os.pread(fd, 64, 0) if stat.S_ISREG(info.st_mode) else b""
    problem = ("is not a regular file" if not stat.S_ISREG(info.st_mode) else
               "has other names (hard links)" if info.st_nlink != 1 else
               "holds something other than a PID" if content.strip() and not content.strip().isdigit() else None)
    if problem:
        os.close(fd)
        raise foreign(problem)
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, held = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)
