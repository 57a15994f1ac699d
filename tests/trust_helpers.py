"""For the hostile-input tests of token directories and logit caches: which files outside a directory a
command touched (an audit hook), and the digests of a user's files to check they are unchanged."""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

_EVENTS = {"open", "os.remove", "os.unlink", "os.rename", "os.replace", "os.truncate", "os.listdir", "os.scandir",
           "os.rmdir", "os.mkdir", "shutil.rmtree", "os.chmod", "os.link", "os.symlink"}
_WATCHED: list[tuple[str, list]] = []


def _candidates(event: str, args) -> set[str]:
    path = args[0]
    if isinstance(path, int) or path is None or not isinstance(path, (str, bytes, os.PathLike)):
        return set()
    text = os.fsdecode(path)
    parent, name = os.path.split(os.path.abspath(text))
    out = {os.path.join(os.path.realpath(parent), name)}  # the entry itself (a link removed is not followed)
    follows = event == "open" and not (len(args) > 2 and isinstance(args[2], int) and args[2] & os.O_NOFOLLOW)
    if follows:
        out.add(os.path.realpath(text))
    return out


def _hook(event, args):
    if not _WATCHED or event not in _EVENTS or not args:
        return
    try:
        found = _candidates(event, args)
    except (TypeError, ValueError):
        return
    for root, hits in _WATCHED:
        for p in found:
            if p == root or p.startswith(root + os.sep):
                hits.append((event, p))


sys.addaudithook(_hook)


@contextmanager
def touches(outside: Path):
    """The file-system events (read, write, list, remove) under `outside` while the block runs."""
    hits: list = []
    entry = (os.path.realpath(outside), hits)
    _WATCHED.append(entry)
    try:
        yield hits
    finally:
        _WATCHED.remove(entry)


def digests(root: Path) -> dict[str, str]:
    """Every entry under `root` (not following links) with its content's digest."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


@contextmanager
def deadline(seconds: int):
    """Fail the block (rather than hang the test run) if it takes longer than `seconds`."""
    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
