"""Copying files out of someone else's checkpoint into an output that users upload.

Only regular files that lie inside the source checkpoint are copied. A checkpoint whose `merges.txt`
is a link to `~/.cache/huggingface/token` would otherwise put the token into the output; a FIFO
would hang the copy. What is skipped is said, one warning line per file.

"Inside" is judged after following links. A Hub cache snapshot (`models--org--name/snapshots/REV/`)
links every file into the repository's own `../../blobs/`, so there the repository folder
`models--org--name/` is the boundary.

Every carrier (the in-memory and streaming prune's export, the distilled student's export, the
tokenizer files of test checkpoints) copies through `copy_file` / `copy_tree`.
"""

from __future__ import annotations

import os
import shutil
import stat
import warnings
from pathlib import Path

def checkpoint_root(source: str | os.PathLike) -> Path:
    """The folder a file of checkpoint `source` must resolve inside: the checkpoint itself, or the
    repository folder of a Hub cache snapshot."""
    from .files import hub_snapshot

    real = Path(os.path.realpath(source))
    hub = hub_snapshot(real)
    return hub[1].parent if hub else real


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def refusal(path: str | os.PathLike, root: str | os.PathLike) -> str | None:
    """Why `path` must not be copied out of the checkpoint at `root` (see `checkpoint_root`), or None."""
    path, root = Path(path), Path(root)
    if os.path.islink(path) and not os.path.exists(path):
        return f"it is a link to {os.readlink(path)}, which does not exist"
    real = Path(os.path.realpath(path))
    if not _inside(real, root):
        return f"it links to {real}, outside the source checkpoint"
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        return f"it cannot be read ({exc.strerror})"
    if not stat.S_ISREG(mode):
        return "it is not a regular file"
    return None


def _skip(path: Path, reason: str) -> None:
    warnings.warn(f"not carried over from the source checkpoint: {path}: {reason}", stacklevel=2)


def copy_file(src: str | os.PathLike, dest: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Copy the contents of `src` to `dest` if it is a regular file inside `root`; otherwise warn and
    return False. The file is opened without following a last-moment link, and checked again."""
    src, dest = Path(src), Path(dest)
    reason = refusal(src, root)
    if reason is None:
        try:
            fd = os.open(os.path.realpath(src), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            reason = f"it cannot be read ({exc.strerror})"
        else:
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    reason = "it is not a regular file"
                else:
                    with open(dest, "wb") as out:  # contents only: permissions follow the umask
                        shutil.copyfileobj(f, out)
                    return True
    _skip(src, reason)
    return False


def copy_tree(src: str | os.PathLike, dest: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Copy folder `src` to `dest` (which must not exist), file by file through `copy_file`; links to
    folders are not followed. False (with a warning) if `src` itself leads outside `root`."""
    src, dest = Path(src), Path(dest)
    real = Path(os.path.realpath(src))
    if not _inside(real, Path(root)):
        _skip(src, f"it links to {real}, outside the source checkpoint")
        return False
    for dirpath, dirnames, filenames in os.walk(real):
        here = Path(dirpath)
        target = dest / here.relative_to(real)
        target.mkdir(parents=True, exist_ok=True)
        for name in list(dirnames):
            if (here / name).is_symlink():
                dirnames.remove(name)
                _skip(src / (here / name).relative_to(real), "it is a link to a folder")
        for name in filenames:
            copy_file(here / name, target / name, root)
    return True
