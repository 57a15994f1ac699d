"""The one output path: every directory hybridprune writes appears complete or not at all, and no file
the user put there is ever deleted or overwritten.

- A directory output (scores, a pruned checkpoint, the demo) is written into a temporary sibling
  `.NAME.hybridprune-tmp-PID` and renamed into place when complete (`atomic_directory`).
- A run directory that grows while it runs and resumes (search, distill) is claimed instead
  (`claim`): the names it will write are recorded before they are written.
- Either way `.hybridprune-outputs` in the directory lists the top-level names hybridprune wrote.
  `--overwrite` replaces only those; a directory holding anything else is refused, naming it.
- Temporary siblings left by a killed process (its PID is gone) are removed by the next run; a
  previous output moved aside for a replacement that never finished is moved back.
- Directories follow the umask (no `mkdtemp`, whose 0700 would hide outputs from a group).
- A failed write (full disk, read-only mount, a name too long) becomes one `OutputError` that says
  what, where and, when known, how many bytes were needed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

MANIFEST = ".hybridprune-outputs"
TMP_TAG = ".hybridprune-tmp-"
OLD_TAG = ".hybridprune-old-"
NAME_MAX = 255


class OutputError(Exception):
    """An output directory cannot be (over)written; the message says why and what to do."""


# ------------------------------------------------------------------------------------ messages


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def describe_os_error(exc: OSError, what: str, where: str | os.PathLike, needed: int | None = None,
                      cleaned: bool = True) -> str:
    """One sentence for a failed write: what, where, why, and what to do about it."""
    where = Path(where)
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left on the device"
        if needed:
            reason += f" (about {human_bytes(needed)} needed"
            try:
                reason += f", {human_bytes(shutil.disk_usage(_existing_ancestor(where)).free)} free"
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


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# ------------------------------------------------------------------------------------ manifest


def owned_names(directory: str | os.PathLike) -> set[str]:
    """Top-level names in `directory` that hybridprune wrote (from its manifest)."""
    try:
        names = json.loads((Path(directory) / MANIFEST).read_text())
    except (OSError, ValueError):
        return set()
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def foreign_entries(directory: str | os.PathLike) -> list[str]:
    """Top-level entries of `directory` that hybridprune did not write, sorted."""
    directory = Path(directory)
    owned = owned_names(directory) | {MANIFEST}
    return sorted(p.name for p in directory.iterdir() if p.name not in owned and not is_temp_name(p.name))


def is_temp_name(name: str) -> bool:
    """A temporary file or directory hybridprune names recognisably (`*.hybridprune-tmp-PID`)."""
    head, tag, pid = name.rpartition(TMP_TAG)
    return bool(tag) and pid.isdigit() or name.startswith(f"{MANIFEST}.tmp-")


def _write_manifest(directory: Path, names: Iterable[str]) -> None:
    tmp = directory / f"{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(sorted(set(names)), indent=0) + "\n")
    os.replace(tmp, directory / MANIFEST)


def claim(directory: str | os.PathLike, names: Iterable[str]) -> None:
    """Record `names` as written by hybridprune in `directory` (created if missing), before writing them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    new = set(names)
    owned = owned_names(directory)
    if not new <= owned:
        _write_manifest(directory, owned | new)


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ------------------------------------------------------------------------------------ checks


def check_output(out: str | os.PathLike, *, overwrite: bool = False, resume: bool = False,
                 option: str = "--out") -> Path:
    """Refuse an output path that cannot or must not be written, before any work is done.

    Non-empty directories are refused unless `resume` (the caller continues what is there) or
    `overwrite`; `overwrite` too is refused when the directory holds entries hybridprune did not write.
    """
    out = Path(out)
    for part in out.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise OutputError(f"{option} {str(out)[:60]}...: the name {part[:40]!r}... has "
                              f"{len(os.fsencode(part))} bytes, more than the {NAME_MAX} a file name may have; "
                              f"choose a shorter {option}")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{option} {out} is a file, not a directory; choose another {option}")
    if out.is_dir():
        try:
            entries = sorted(p.name for p in out.iterdir())
            shown = [e for e in entries if e != MANIFEST] or entries
        except OSError as exc:
            raise OutputError(describe_os_error(exc, "the output", out)) from None
        if entries and not resume:
            if not overwrite:
                raise OutputError(
                    f"{option} {out} already exists and is not empty ({_listing(shown)}); choose another "
                    f"{option}, or pass --overwrite to replace what hybridprune wrote there")
            foreign = foreign_entries(out)
            if foreign:
                raise OutputError(
                    f"{option} {out} holds files hybridprune did not write ({_listing(foreign)}); --overwrite "
                    f"replaces only hybridprune's own outputs. Move them away or choose another {option}")
    for place in {_existing_ancestor(out.parent), *([out] if out.is_dir() else [])}:
        if not _writable(place):
            reason = "the file system is read-only" if _read_only(place) else "permission denied"
            raise OutputError(f"cannot write {option} {out}: {place} is not writable ({reason}); "
                              f"choose a directory you can write to")
    return out


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


# ------------------------------------------------------------------------------------ temporaries


def _stem(out: Path) -> str:
    """The output's name, shortened (with a hash) so that temporary names stay under NAME_MAX."""
    name = out.name
    if len(os.fsencode(name)) <= 200:
        return name
    digest = hashlib.sha1(os.fsencode(name)).hexdigest()[:10]
    return os.fsdecode(os.fsencode(name)[:180]).rstrip("\udcff") + "-" + digest


def temp_sibling(out: str | os.PathLike, tag: str = TMP_TAG) -> Path:
    out = Path(out)
    return out.parent / f".{_stem(out)}{tag}{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours, from an earlier call in this process that failed to clean up
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(out: str | os.PathLike) -> list[Path]:
    """Remove temporary siblings of `out` left by dead processes; restore an output moved aside."""
    out = Path(out)
    parent = out.parent
    if not parent.is_dir():
        return []
    removed = []
    prefix = f".{_stem(out)}"
    for p in sorted(parent.iterdir()):
        if not p.name.startswith(prefix):
            continue
        rest = p.name[len(prefix):]
        for tag in (TMP_TAG, OLD_TAG):
            if rest.startswith(tag) and rest[len(tag):].isdigit() and not _pid_alive(int(rest[len(tag):])):
                if tag == OLD_TAG and not out.exists():
                    os.replace(p, out)  # killed between moving the old output aside and the new one in
                else:
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
    return removed


# ------------------------------------------------------------------------------------ writers


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(root: str | os.PathLike) -> None:
    """Give every file under `root` the permissions a new file gets under the umask. Some writers
    (safetensors among them) create 0600 files, which would hide an output from the user's group."""
    mask = current_umask()
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, (0o666 | (os.stat(p).st_mode & 0o111)) & ~mask)


def atomic_directory(out_dir: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = False,
                     what: str = "the output", size_hint: int | None = None) -> Path:
    """Run `write(tmp_dir)`, then move the result to `out_dir`; on any failure leave nothing behind.

    `overwrite` replaces an earlier output of hybridprune, never a directory holding other files.
    """
    out = check_output(out_dir, overwrite=overwrite)
    tmp = temp_sibling(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(out)
        os.mkdir(tmp)  # not mkdtemp: the directory follows the umask like any other output
        write(tmp)
        _write_manifest(tmp, (p.name for p in tmp.iterdir()))
        follow_umask(tmp)
        if out.exists() and any(out.iterdir()):
            old = temp_sibling(out, OLD_TAG)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)  # a rename onto an empty directory replaces it
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            raise OutputError(describe_os_error(exc, what, out, size_hint)) from None
        raise
    return out


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
            except OSError:
                pass
        raise
    finally:
        _ON_FAILURE.clear()


def remove_owned(directory: str | os.PathLike) -> list[str]:
    """Remove what hybridprune wrote in `directory` (per its manifest), and nothing else."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for name in sorted(owned_names(directory)):
        p = directory / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(name)
    (directory / MANIFEST).unlink(missing_ok=True)
    return removed
