"""The one output path: every directory hybridprune writes appears complete or not at all, and no file
the user put there is ever deleted or overwritten.

- A directory output (scores, a pruned checkpoint, the demo) is written into a temporary sibling
  `.NAME.hybridprune-tmp-PID` and renamed into place when complete (`atomic_directory`).
- A run directory that grows while it runs and resumes (search, distill) is claimed instead
  (`claim`): the names it will write are recorded before they are written. A name already there
  that the manifest does not list is not hybridprune's: refused, never written through or over.
- Either way `.hybridprune-outputs` in the directory lists the top-level names hybridprune wrote.
  `--overwrite` replaces only those; a directory holding anything else is refused, naming it. The
  manifest is not trusted as a list of paths: an entry that is not a plain name inside the directory
  (`../x`, `/abs`, `a/b`) or that is a symbolic link there is refused, naming it - except that
  `--overwrite` removes a link found at a name the command itself writes (`links`): as a link, its
  target untouched, since hybridprune never writes one there.
- The finished output is moved in only if the target still holds nothing but hybridprune's own
  entries, checked once the target is out of reach (moved aside): a file put there while the work
  ran is never deleted. A symlinked output is written through, and the link stays.
- Temporary siblings left by a killed process (its PID is gone) are removed by the next run; a
  previous output moved aside for a replacement that never finished is moved back.
- A directory that a command writes over a long time and resumes (run, search, distill, tokenize,
  teacher-logits) is locked while it writes (`output.lock.locked`: `.hybridprune-lock` inside it, an flock): a
  second command on the same directory is refused at once, naming the first one's PID, instead of
  interleaving with it.
- Directories follow the umask (no `mkdtemp`, whose 0700 would hide outputs from a group).
- A failed write (full disk, no inodes, read-only mount, a name too long), whatever type the writing
  library raises it as, becomes one `OutputError` that says what, where and, when known, how many
  bytes were needed (`output.errors`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

# the messages of failed writes (output.errors) are re-exported: every command imports them from here
from .errors import NAME_MAX, OutputError, as_os_error, describe_os_error, human_bytes, writing  # noqa: F401
from .errors import existing_ancestor as _existing_ancestor

MANIFEST = ".hybridprune-outputs"
from .lock import LOCK  # like the manifest, hybridprune's own entry of a directory
TMP_TAG = ".hybridprune-tmp-"
OLD_TAG = ".hybridprune-old-"


# ------------------------------------------------------------------------------------ manifest


class ManifestError(OutputError):
    """A manifest lists something hybridprune never writes there: it was edited or comes from elsewhere."""


def owned_names(directory: str | os.PathLike, *, links: Iterable[str] = ()) -> set[str]:
    """Top-level names in `directory` that hybridprune wrote (from its manifest).

    The manifest may come with a run directory from someone else, so it is not trusted as a list of
    paths: every entry must be a plain name inside `directory` that is not a symbolic link, or
    `ManifestError` names it (and nothing is removed or written through it). A link at one of
    `links` (names the caller writes, about to be replaced with --overwrite) is accepted: it is
    removed as a link, never followed.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not os.path.lexists(path):
        return set()
    # hybridprune writes its manifest atomically as a JSON list of names, never as a link: anything
    # else was made by someone else, and is neither trusted nor silently replaced
    if path.is_symlink() or not path.is_file():
        _foreign_manifest(directory, "is not a regular file (hybridprune writes one, never a link)")
    try:
        names = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        _foreign_manifest(directory, f"cannot be read as hybridprune's manifest, a JSON list of names ({e})")
    if not isinstance(names, list):
        _foreign_manifest(directory, f"holds a JSON {type(names).__name__}, not hybridprune's list of names")
    for name in names:
        _check_manifest_entry(directory, name, set(links))
    return set(names)


def _check_manifest_entry(directory: Path, name, links: set[str]) -> None:
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        _foreign_manifest(directory, f"lists {name!r}, which is not a plain name inside it")
    elif (directory / name).is_symlink() and name not in links:
        _foreign_manifest(directory, f"lists {name!r}, which is a symbolic link there, and hybridprune never writes one")


def _foreign_manifest(directory: Path, what: str):
    raise ManifestError(
        f"{directory / MANIFEST} {what}: the manifest was edited or comes from elsewhere, "
        f"so nothing was removed or written. Check {directory}, then delete {MANIFEST} there (everything in it "
        f"then counts as yours) or use another output directory")


def foreign_entries(directory: str | os.PathLike, *, links: Iterable[str] = ()) -> list[str]:
    """Top-level entries of `directory` that hybridprune did not write, sorted; a link at one of `links`
    (names the caller writes, listed or not) counts as its own, to be removed as a link."""
    directory = Path(directory)
    owned = owned_names(directory, links=links) | {MANIFEST, LOCK} | _planted_links(directory, links)
    return sorted(p.name for p in directory.iterdir() if p.name not in owned and not is_temp_name(p.name))


def _planted_links(directory: Path, links: Iterable[str]) -> set[str]:
    """The names among `links` that are symbolic links in `directory` (never followed)."""
    return {name for name in links if (directory / name).is_symlink()}


def is_temp_name(name: str) -> bool:
    """A temporary file or directory hybridprune names recognisably (`*.hybridprune-tmp-PID`)."""
    head, tag, pid = name.rpartition(TMP_TAG)
    return bool(tag) and pid.isdigit() or name.startswith(f"{MANIFEST}.tmp-")


def _write_manifest(directory: Path, names: Iterable[str]) -> None:
    tmp = directory / f"{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(sorted(set(names)), indent=0) + "\n")
    os.replace(tmp, directory / MANIFEST)


def claim(directory: str | os.PathLike, names: Iterable[str], *, adopt: Iterable[str] = ()) -> None:
    """Record `names` as written by hybridprune in `directory` (created if missing), before writing them.

    A name already there that the manifest does not list is someone else's (the user's file, a link
    planted in a directory from elsewhere): writing it would write through it or over it, so it is
    refused, naming it. `adopt` names entries the user pointed at as hybridprune's (the checkpoints
    given to --resume, copied without their manifest); a link is never adopted.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    new = set(names)
    owned = owned_names(directory)
    if new <= owned:
        return
    taken = sorted(name for name in new - owned if os.path.lexists(directory / name)
                   and (name not in set(adopt) or (directory / name).is_symlink()))
    if taken:
        it = "it" if len(taken) == 1 else "them"
        raise OutputError(f"{directory} already holds {_listing(taken)}, which hybridprune did not write (its "
                          f"{MANIFEST} does not list {it}); nothing was written through or over {it}. Move {it} "
                          f"away, or choose another output directory")
    _write_manifest(directory, owned | new)


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ------------------------------------------------------------------------------------ checks


def check_output(out: str | os.PathLike, *, overwrite: bool = False, resume: bool = False,
                 option: str = "--out", links: Iterable[str] = ()) -> Path:
    """Refuse an output path that cannot or must not be written, before any work is done.

    Non-empty directories are refused unless `resume` (the caller continues what is there) or
    `overwrite`; `overwrite` too is refused when the directory holds entries hybridprune did not write.
    A symbolic link is written through (`output_target`); one that points nowhere is refused. With
    `overwrite`, a link inside at one of `links` (names the command writes) is accepted, for
    `remove_owned(..., links=...)` to remove as a link.
    """
    out = Path(out)
    for part in out.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise OutputError(f"{option} {str(out)[:60]}...: the name {part[:40]!r}... has "
                              f"{len(os.fsencode(part))} bytes, more than the {NAME_MAX} a file name may have; "
                              f"choose a shorter {option}")
    if out.is_symlink() and not out.exists():
        raise OutputError(f"{option} {out} is a symbolic link to {os.readlink(out)}, which does not exist; create "
                          f"that directory to write through the link, remove the link, or choose another {option}")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{option} {out} is a file, not a directory; choose another {option}")
    if out.is_dir():
        links = tuple(links) if overwrite else ()
        owned_names(out, links=links)  # refuses a manifest that lists paths, whatever the command does next
        try:
            entries = sorted(p.name for p in out.iterdir() if p.name != LOCK)  # a live or dead run's lock
            shown = [e for e in entries if e != MANIFEST] or entries
        except OSError as exc:
            raise OutputError(describe_os_error(exc, "the output", out)) from None
        if entries and not resume:
            if not overwrite:
                raise OutputError(
                    f"{option} {out} already exists and is not empty ({_listing(shown)}); choose another "
                    f"{option}, or pass --overwrite to replace what hybridprune wrote there")
            foreign = foreign_entries(out, links=links)
            if foreign:
                raise OutputError(
                    f"{option} {out} holds files hybridprune did not write ({_listing(foreign)}); --overwrite "
                    f"replaces only hybridprune's own outputs. Move them away or choose another {option}")
    target = output_target(out)
    for place in {_existing_ancestor(target.parent), *([target] if target.is_dir() else [])}:
        if not _writable(place):
            reason = "the file system is read-only" if _read_only(place) else "permission denied"
            raise OutputError(f"cannot write {option} {out}: {place} is not writable ({reason}); "
                              f"choose a directory you can write to")
    return out


def output_target(out: str | os.PathLike) -> Path:
    """Where output `out` is written: `out` itself, or, when it is a symbolic link (say to a bigger
    disk), the directory it points to, which is replaced in place so that the link stays."""
    out = Path(out)
    return Path(os.path.realpath(out)) if out.is_symlink() else out


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
                elif tag == OLD_TAG and not _only_ours(p):
                    continue  # not ours to delete: left for the user
                else:
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
    return removed


def _only_ours(directory: Path) -> bool:
    try:
        return not foreign_entries(directory)
    except (OSError, OutputError):
        return False


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

    `overwrite` replaces an earlier output of hybridprune, never a directory holding other files, not
    even one that gained them while this ran (`_swap_in`). A symlinked `out_dir` keeps its link.
    """
    out = check_output(out_dir, overwrite=overwrite)
    target = output_target(out)
    tmp = temp_sibling(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(target)
        os.mkdir(tmp)  # not mkdtemp: the directory follows the umask like any other output
        write(tmp)
        _write_manifest(tmp, (p.name for p in tmp.iterdir()))
        follow_umask(tmp)
        _swap_in(tmp, target, out, what)
    except BaseException as exc:
        failure = None if isinstance(exc, FileNotFoundError) else as_os_error(exc, out)
        message = failure and describe_os_error(failure, what, out, size_hint)  # while the disk is still full
        shutil.rmtree(tmp, ignore_errors=True)
        if message:
            raise OutputError(message) from None
        raise
    return out


def _swap_in(tmp: Path, target: Path, shown: Path, what: str) -> None:
    """Move the finished `tmp` to `target`. An existing target is first moved aside (out of reach of
    other writers) and checked again: if it gained entries hybridprune did not write while the work
    ran, it is put back untouched and the finished output is kept in a visible sibling."""
    if not target.exists() and not target.is_symlink():
        try:
            os.rename(tmp, target)
            return
        except OSError as exc:  # a directory appeared meanwhile: a rename replaces it only if empty
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    old = temp_sibling(target, OLD_TAG)
    os.replace(target, old)
    try:
        foreign = foreign_entries(old)
    except BaseException:
        os.replace(old, target)
        raise
    if foreign:
        os.replace(old, target)
        kept = _keep_aside(tmp, target)
        raise OutputError(
            f"{shown} gained files hybridprune did not write while it ran ({_listing(foreign)}); nothing there "
            f"was replaced or deleted. The finished {what.removeprefix('the ')} is in {kept}: move it where you "
            f"want it")
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)  # only hybridprune's own entries, as just checked


def _keep_aside(tmp: Path, target: Path) -> Path:
    """Rename `tmp` to the first free `TARGET.hybridprune-finished[-N]` beside `target`."""
    for n in range(1, 1000):
        kept = target.parent / (f"{_stem(target)}.hybridprune-finished" + (f"-{n}" if n > 1 else ""))
        if not kept.exists() and not kept.is_symlink():
            os.rename(tmp, kept)
            return kept
    raise OutputError(f"too many {target.name}.hybridprune-finished-N directories beside {target}; remove them")


def move_new(src: Path, dst: Path) -> None:
    """Move `src` to `dst`, which did not exist a moment ago; if a file appeared there meanwhile it is
    kept and the move refused (a hard link cannot replace; a directory renames only onto an empty one)."""
    try:
        if src.is_dir() or not _link(src, dst):
            os.rename(src, dst)
        else:
            os.unlink(src)
    except OSError as exc:
        if not isinstance(exc, (FileExistsError, NotADirectoryError, IsADirectoryError)) and exc.errno != errno.ENOTEMPTY:
            raise
        raise OutputError(f"{dst} appeared while hybridprune was writing it and was left as it is; move it away "
                          "and run the command again") from None


def _link(src: Path, dst: Path) -> bool:
    """Hard-link `src` to `dst` (FileExistsError if `dst` exists); False where hard links do not work."""
    try:
        os.link(src, dst, follow_symlinks=False)
        return True
    except FileExistsError:
        raise
    except OSError:  # some FUSE or FAT file systems: the narrower check-then-rename
        if dst.exists() or dst.is_symlink():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        return False


def remove_owned(directory: str | os.PathLike, keep: Iterable[str] = (), *, links: Iterable[str] = ()) -> list[str]:
    """Remove what hybridprune wrote in `directory` (per its manifest), and nothing else; the names in
    `keep` stay, still recorded as hybridprune's. A link at one of `links` (names the caller writes,
    listed or not) is removed as a link: its target is never followed or touched."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    kept = set(keep)
    owned = owned_names(directory, links=links)
    for name in sorted((owned | _planted_links(directory, links)) - kept):
        p = directory / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(name)
    (directory / MANIFEST).unlink(missing_ok=True)
    if owned & kept:
        _write_manifest(directory, owned & kept)  # still there, still hybridprune's
    return removed
