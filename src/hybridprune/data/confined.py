"""Files inside a directory hybridprune wrote (token shards, a logit cache's arrays), opened without
leaving it.

A token directory or a logit cache may come from someone else, so its files are opened by names the
code derives (never names read from a document), one directory level at a time, and no symbolic
link is followed on the way: a planted link could otherwise make a reader train on a file elsewhere,
or a resumed writer truncate and append to one. A file opened for writing must have no other name
(a hard link would be the same bytes as someone's file); a fresh file is created anew (`O_EXCL`),
after removing whatever entry had its name.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from hybridprune.data.errors import DataError
from hybridprune.output.documents import is_plain_name

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO planted under a file's name must not block the open


def _refuse(error, what: str, fix: str, why: str):
    return error(f"{what} {why}; {fix}")


def _walk(directory: Path, parts: list[str], *, what: str, fix: str, error, create: bool) -> int:
    """A descriptor of `directory/parts...`, each part a real directory (created if `create`)."""
    fd = os.open(directory, os.O_RDONLY | _DIRECTORY)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                sub = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                raise _refuse(error, what, fix, f"is missing (no {part}/ in {directory})") from None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    kind = "a symbolic link" if _is_link(part, fd) else "not a directory"
                    raise _refuse(error, what, fix, f"cannot be opened: {part} in {directory} is {kind}, which "
                                  "hybridprune never writes there (and does not follow)") from None
                raise
            os.close(fd)
            fd = sub
        return fd
    except BaseException:
        os.close(fd)
        raise


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_in(directory: str | os.PathLike, relative: str, mode: str = "r", *, what: str, fix: str,
            error=DataError):
    """The file `directory/relative` (a name the code derived, `a/b` at most a few levels), opened
    binary: `mode` "r" reads, "r+" reads and writes an existing file, "new" replaces any entry of
    that name by a new empty file. Refused with `error("{what} ...; {fix}")`: a symbolic link on the
    way, anything not a regular file, and (for writing) a file with another name (a hard link)."""
    *dirs, name = relative.split("/")
    if not all(map(is_plain_name, (*dirs, name))):  # the callers derive names: this never leaves the directory
        raise _refuse(error, what, fix, "is not a plain name inside the directory")
    dir_fd = _walk(Path(directory), dirs, what=what, fix=fix, error=error, create=mode == "new")
    try:
        if mode == "new":
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                raise _refuse(error, what, fix, "is a directory, which hybridprune never writes there") from None
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL
        else:
            flags = os.O_RDONLY if mode == "r" else os.O_RDWR
        try:
            fd = os.open(name, flags | _NOFOLLOW | _NONBLOCK, 0o666, dir_fd=dir_fd)
        except FileNotFoundError:
            raise _refuse(error, what, fix, "is missing") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP or _is_link(name, dir_fd):
                raise _refuse(error, what, fix, "is a symbolic link, which hybridprune never writes (and does not "
                              "follow)") from None
            if exc.errno in (errno.EISDIR, errno.ENXIO):
                raise _refuse(error, what, fix, "is not a regular file") from None
            raise _refuse(error, what, fix, f"cannot be opened ({exc.strerror or exc})") from None
    finally:
        os.close(dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _refuse(error, what, fix, "is not a regular file")
        if mode == "r+" and info.st_nlink > 1:
            raise _refuse(error, what, fix, f"has {info.st_nlink - 1} other name(s) (a hard link), so writing it "
                          "would change another file too")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb" if mode == "r" else "r+b")
    except BaseException:
        os.close(fd)
        raise


def entries(directory: str | os.PathLike, sub: str, *, what: str, fix: str, error=DataError) -> list[tuple[str, str]]:
    """`(name, kind)` of the entries of `directory/sub` (kind: "file", "link", "dir" or "other"), read
    without following a link; [] when `sub` is missing."""
    if not os.path.lexists(Path(directory) / sub):
        return []
    fd = _walk(Path(directory), [sub], what=what, fix=fix, error=error, create=False)
    try:
        out = []
        for name in sorted(os.listdir(fd)):
            mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
            kind = ("link" if stat.S_ISLNK(mode) else "file" if stat.S_ISREG(mode) else
                    "dir" if stat.S_ISDIR(mode) else "other")
            out.append((name, kind))
        return out
    finally:
        os.close(fd)


def remove_in(directory: str | os.PathLike, sub: str, name: str, *, what: str, fix: str, error=DataError) -> None:
    """Remove the entry `directory/sub/name` (a file or a link itself, never what a link points to)."""
    fd = _walk(Path(directory), [sub], what=what, fix=fix, error=error, create=False)
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)
