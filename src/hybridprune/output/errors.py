"""A failed write as one sentence: what, where, why and what to do (`OutputError`).

A full disk does not always arrive as an `OSError`: safetensors raises `SafetensorError("Error while
serializing: I/O error: No space left on device (os error 28)")`, and `torch.save` a `RuntimeError`
from its zip writer ("unexpected pos 576 vs 534", "file write failed") that names no cause at all.
`as_os_error` recognises those, asking the file system when the message does not say why; `writing`
wraps a block of writes with it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

NAME_MAX = 255
#: Below this many free bytes a write that failed without a reason is taken for a full disk.
_NEARLY_FULL = 1 << 20
_ERRNO_IN_TEXT = re.compile(r"\(os error (\d+)\)|\[Errno (\d+)\]")
#: What torch's zip writer says when a write fails (it gives no errno).
_TORCH_WRITER = ("inline_container.cc", "PytorchStreamWriter", "file write failed")


class OutputError(Exception):
    """An output directory cannot be (over)written; the message says why and what to do."""


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def existing_ancestor(path: str | os.PathLike) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _out_of_inodes(where: Path) -> bool:
    """The file system has free bytes but no free inodes (ENOSPC all the same)."""
    try:
        st = os.statvfs(existing_ancestor(where))
    except OSError:
        return False
    return st.f_files > 0 and st.f_favail == 0  # f_files == 0: no inode limit (btrfs, some FUSE)


def describe_os_error(exc: OSError, what: str, where: str | os.PathLike, needed: int | None = None,
                      cleaned: bool = True) -> str:
    """One sentence for a failed write: what, where, why, and what to do about it."""
    where = Path(where)
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT) and _out_of_inodes(where):
        reason = "no free inodes left on the device: it can hold no more files"
        try:
            reason += f", though {human_bytes(shutil.disk_usage(existing_ancestor(where)).free)} of space is free"
        except OSError:
            pass
        advice = "delete files you do not need (many small ones free the most) or choose another --out"
    elif code in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left on the device" if code == errno.ENOSPC else "the disk quota is exhausted"
        if needed:
            reason += f" (about {human_bytes(needed)} needed"
            try:
                reason += f", {human_bytes(shutil.disk_usage(existing_ancestor(where)).free)} free"
            except OSError:
                pass
            reason += ")"
        advice = "free some space or choose another --out"
    elif code == errno.EROFS:
        reason, advice = "the file system is read-only", "choose a writable --out"
    elif code in (errno.EACCES, errno.EPERM):
        reason, advice = "permission denied", "choose a directory you can write to"
    elif code == errno.ENAMETOOLONG:
        reason, advice = f"a file name is too long (at most {NAME_MAX} bytes per name)", "choose a shorter --out"
    else:
        reason, advice = exc.strerror or str(exc), "check the path and try again"
    return f"cannot write {what} to {where}: {reason}; {advice}." + (" Nothing was left behind." if cleaned else "")


def _errno_of_file_system(where: str | os.PathLike) -> int:
    """Why a write failed that did not say: a full (or inode-less) file system, a read-only one, or EIO."""
    try:
        st = os.statvfs(existing_ancestor(where))
    except OSError:
        return errno.EIO
    if (st.f_files > 0 and st.f_favail == 0) or st.f_bavail * st.f_frsize < _NEARLY_FULL:
        return errno.ENOSPC
    return errno.EROFS if st.f_flag & os.ST_RDONLY else errno.EIO


def as_os_error(exc: BaseException, where: str | os.PathLike) -> OSError | None:
    """`exc` as the OSError of a failed write to `where`, or None when it is not an I/O failure.
    Besides OSError only the types the writers raise are read: torch's RuntimeError, SafetensorError."""
    if isinstance(exc, OSError):
        return exc
    if type(exc) is not RuntimeError and type(exc).__name__ != "SafetensorError":
        return None  # our own errors (bad input, a refused output) say what they mean
    text = str(exc)
    found = _ERRNO_IN_TEXT.search(text)
    if found:
        code = int(found.group(1) or found.group(2))
    elif "No space left on device" in text:
        code = errno.ENOSPC
    elif "I/O error" in text or any(mark in text for mark in _TORCH_WRITER):
        code = _errno_of_file_system(where)
    else:
        return None
    return OSError(code, os.strerror(code), str(where))


@contextmanager
def writing(what: str, where: str | os.PathLike, *, needed: int | None = None, cleaned: bool = False):
    """Report a write that fails inside the block (full disk, no inodes, read-only, ...) as one
    `OutputError` naming `what` and `where`, whatever type the writing library raised it as."""
    try:
        yield
    except (OutputError, FileNotFoundError):
        raise
    except Exception as exc:
        os_exc = as_os_error(exc, where)
        if os_exc is None:
            raise
        raise OutputError(describe_os_error(os_exc, what, where, needed, cleaned)) from None
