"""Never touch a file outside the output, and never one the user put in it (issue 21, items 1-3 and 13),
through the command line: a manifest that lists paths is refused by every command that reads it;
carried-over files never follow a link out of the source; a resumed run, a file put into --out while a
prune runs, and a symlinked or dangling --out lose nothing; a full disk (or no inodes), whatever type
the writer raises it as, is one message naming what and where."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess

import pytest

from ckpt_helpers import PLAN, invoke, no_traceback, siblings, small_corpus
from hybridprune.output import atomic as fsutil


def _data(root):
    return small_corpus(root / "corpus.jsonl")


@pytest.fixture
def ckpt(calibrated_checkpoint):
    """The session's calibrated checkpoint (conftest.py): read only."""
    return calibrated_checkpoint


def _commands(ckpt, out, model=None):
    model = model or ckpt / "model"
    distill = ["distill", "--teacher", ckpt / "model", "--student", model, "--data", _data(ckpt), "--steps", "1",
               "--seq-len", "32", "--global-batch", "2", "--micro-batch", "2", "--val-samples", "0",
               "--no-progress", "--out", out]
    return {
        "calibrate": ["calibrate", "--model", model, "--data", _data(ckpt), "--samples", "4", "--seq-len", "32",
                      "--depth-samples", "0", "--out", out],
        "prune": ["prune", "--model", model, "--scores", ckpt / "scores", "--plan", PLAN, "--out", out],
        "prune --in-memory": ["prune", "--in-memory", "--model", model, "--scores", ckpt / "scores", "--plan", PLAN,
                              "--out", out],
        "search": ["search", "--model", model, "--data", _data(ckpt), "--params", "0.7x", "--scores",
                   ckpt / "scores", "--eval-samples", "2", "--eval-seq-len", "32", "--no-speed",
                   "--max-candidates", "2", "--top-k", "1", "--out", out],
        "distill": distill,
        "demo": ["demo", "--out", out],
        "eval": ["eval", model, "--data", _data(ckpt), "--samples", "2", "--seq-len", "32", "--out", out],
    }


def _victim(tmp_path):
    """A folder outside every output, holding the user's precious file."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    return victim


def _snapshot(root):
    """Content and mtime of every file under `root`, and the folders: what 'untouched' compares."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.join(dirpath, name)] = "dir"
        for name in filenames:
            p = os.path.join(dirpath, name)
            found[p] = (open(p, "rb").read(), os.lstat(p).st_mtime_ns)
    return found


def _refused(result, *words):
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and no_traceback(result), result.output
    for word in words:
        assert word in text, (word, result.output)


# ------------------------------------------------------------------------- 1. the manifest is not a list of paths


def _hostile_run(tmp_path, entry, victim):
    run = tmp_path / "run"
    run.mkdir()
    if entry == "link":
        (run / "link").symlink_to(victim)
    (run / fsutil.MANIFEST).write_text(json.dumps([entry]))
    return run


@pytest.mark.parametrize("entry", ["../victim", "ABSOLUTE", "sub/../../victim", "link"])
def test_distill_overwrite_never_deletes_what_a_manifest_points_to(ckpt, tmp_path, entry):
    victim = _victim(tmp_path)
    entry = str(victim) if entry == "ABSOLUTE" else entry
    run = _hostile_run(tmp_path, entry, victim)
    before, run_before = _snapshot(victim), _snapshot(run)
    result = invoke(*_commands(ckpt, run)["distill"], "--overwrite")
    # expected: exit 2, "…/.hybridprune-outputs lists '../victim', which is not a plain name inside it …"
    _refused(result, f"{fsutil.MANIFEST} lists {entry!r}", "nothing was removed or written")
    assert _snapshot(victim) == before and _snapshot(run) == run_before


@pytest.mark.parametrize("command", ["calibrate", "prune", "search", "distill", "demo", "eval",
                                     "distill --resume", "search (resume)", "report"])
def test_every_command_that_reads_a_manifest_refuses_one_that_lists_paths(ckpt, tmp_path, command):
    victim = _victim(tmp_path)
    run = _hostile_run(tmp_path, "../victim", victim)
    if command == "report":  # report replaces its own report_figures/, by its manifest
        shutil.copytree(ckpt / "scores", tmp_path / "rep")
        figures = tmp_path / "rep" / "report_figures"
        figures.mkdir()
        (figures / ".hybridprune-figures").write_text("ours\n")
        (figures / fsutil.MANIFEST).write_text(json.dumps(["../../victim"]))
        args, entry, run = ["report", tmp_path / "rep"], "../../victim", tmp_path / "rep"
    elif command == "distill --resume":
        args, entry = [*_commands(ckpt, run)["distill"], "--resume", run], "../victim"
    elif command == "search (resume)":
        (run / "search.json").write_text("{}")
        args, entry = _commands(ckpt, run)["search"], "../victim"
    else:
        args, entry = [*_commands(ckpt, run)[command], "--overwrite"], "../victim"
    before, run_before = _snapshot(victim), _snapshot(run)
    result = invoke(*args)
    _refused(result, f"{fsutil.MANIFEST} lists {entry!r}")
    assert _snapshot(victim) == before and _snapshot(run) == run_before


@pytest.mark.parametrize("manifest, words", [
    ("../victim\n", ["cannot be read as hybridprune's manifest"]),  # one name per line: not hybridprune's
    ("../victim\nlog.jsonl\n", ["cannot be read as hybridprune's manifest"]),
    ('{"files": ["../victim"]}', ["holds a JSON dict, not hybridprune's list of names"]),
    (b"\xff\xfe[]", ["cannot be read as hybridprune's manifest"]),
    ("LINK", ["is not a regular file"]),
])
def test_a_manifest_that_is_not_hybridprunes_is_refused_not_ignored(ckpt, tmp_path, manifest, words):
    """Found by a user: a manifest that is not JSON was silently ignored (and then replaced), and with a
    file it named in --out the refusal blamed that file instead of the manifest."""
    victim = _victim(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text("theirs\n")
    if manifest == "LINK":
        (victim / "list.json").write_text(json.dumps(["log.jsonl"]))
        (run / fsutil.MANIFEST).symlink_to(victim / "list.json")
    elif isinstance(manifest, bytes):
        (run / fsutil.MANIFEST).write_bytes(manifest)
    else:
        (run / fsutil.MANIFEST).write_text(manifest)
    before, run_before = _snapshot(victim), _snapshot(run)
    for command in ("distill", "prune"):
        result = invoke(*_commands(ckpt, run)[command], "--overwrite")
        _refused(result, fsutil.MANIFEST, *words, "nothing was removed or written")
    assert _snapshot(victim) == before and _snapshot(run) == run_before


# ------------------------------------------------------------------------- 2. carried files stay inside the source


@pytest.fixture()
def linked_source(ckpt, tmp_path):
    """A copy of the checkpoint whose small files link out of it: to a token, a dangling target, a FIFO."""
    secret = tmp_path / "home" / ".cache" / "huggingface" / "token"
    secret.parent.mkdir(parents=True)
    secret.write_text("hf_SECRETTOKEN")
    src = tmp_path / "src"
    shutil.copytree(ckpt / "model", src)
    (src / "merges.txt").symlink_to(secret)  # a tokenizer file
    (src / "LICENSE").symlink_to(secret)  # metadata
    (src / "NOTICE").symlink_to(tmp_path / "nowhere")
    os.mkfifo(src / "vocab.txt")  # a copy would hang on it
    (src / "additional_chat_templates").symlink_to(secret.parent, target_is_directory=True)
    (src / "USAGE").write_text("kept")  # a plain file inside: carried
    return src, secret


@pytest.mark.parametrize("command", ["prune", "prune --in-memory", "distill"])
def test_carried_files_never_follow_a_link_out_of_the_source(ckpt, tmp_path, linked_source, command):
    src, secret = linked_source
    out = tmp_path / "out"
    before = _snapshot(secret.parent)
    result = invoke(*_commands(ckpt, out, model=src)[command])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"warning: not carried over from the source checkpoint: {src / 'merges.txt'}: it links to {secret}, " \
           "outside the source checkpoint" in text
    assert f"{src / 'LICENSE'}: it links to {secret}" in text
    assert f"{src / 'NOTICE'}: it is a link to {tmp_path / 'nowhere'}, which does not exist" in text
    assert f"{src / 'vocab.txt'}: it is not a regular file" in text
    assert f"{src / 'additional_chat_templates'}: it links to {secret.parent}" in text
    # the output lacks tokenizer files the source has: said once, plainly (a user found it silent)
    assert "warning: the output lacks the source's tokenizer file(s) merges.txt, vocab.txt (not carried over, " \
           "see above), so its tokenizer may not load" in text
    for name in ("merges.txt", "LICENSE", "NOTICE", "vocab.txt", "additional_chat_templates"):
        assert not (out / name).exists(), name
    assert (out / "USAGE").read_text() == "kept"
    for dirpath, _, filenames in os.walk(out):
        for name in filenames:
            assert b"SECRETTOKEN" not in open(os.path.join(dirpath, name), "rb").read(), name
    assert _snapshot(secret.parent) == before


def test_a_hub_cache_snapshot_carries_its_own_blobs(ckpt, tmp_path):
    """Hub snapshots link every file into `../../blobs/`: inside the repository folder, so carried."""
    repo = tmp_path / "hub" / "models--org--tiny"
    snap, blobs = repo / "snapshots" / "0123abcd", repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    files = {p.name: p for p in (ckpt / "model").iterdir()} | {"LICENSE": None}
    for i, (name, path) in enumerate(sorted(files.items())):
        blob = blobs / f"{i:040x}"
        blob.write_bytes(path.read_bytes() if path else b"Apache-2.0\n")
        (snap / name).symlink_to(os.path.join("..", "..", "blobs", blob.name))
    out = tmp_path / "out"
    result = invoke(*_commands(ckpt, out, model=snap)["prune"])
    assert result.exit_code == 0, result.output
    assert "not carried over" not in result.output
    assert (out / "LICENSE").read_text() == "Apache-2.0\n" and not (out / "LICENSE").is_symlink()


# ------------------------------------------------------------------------- 3. the user's files in --out


def test_distill_resume_into_another_out_never_touches_the_users_files(ckpt, tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    args = [a if a != "1" else "2" for a in _commands(ckpt, run)["distill"]]  # --steps 2
    first = invoke(*args, "--stop-at-step", "1")
    assert first.exit_code == 0, first.output
    other.mkdir()
    (other / "loss.png").write_bytes(b"my plot")
    (other / "log.jsonl").write_text('{"mine": 1}\n')
    before = _snapshot(other)
    result = invoke(*args[:-1], other, "--resume", run)
    # expected: exit 2, "--out OTHER holds log.jsonl, loss.png, not written by hybridprune; …"
    _refused(result, f"--out {other} holds log.jsonl, loss.png, not written by hybridprune", "choose another --out")
    assert _snapshot(other) == before


@pytest.mark.parametrize("existed", [True, False])
def test_a_file_put_into_out_while_prune_runs_is_kept(ckpt, tmp_path, monkeypatch, existed):
    out = tmp_path / "pruned"
    args = _commands(ckpt, out)["prune"]
    if existed:
        assert invoke(*args).exit_code == 0
    earlier = _snapshot(out) if existed else {}
    original = fsutil.follow_umask

    def user_writes_meanwhile(root):  # runs on the finished temporary, just before the swap
        original(root)
        out.mkdir(exist_ok=True)
        (out / "notes.txt").write_text("written during the run")

    monkeypatch.setattr(fsutil, "follow_umask", user_writes_meanwhile)
    result = invoke(*args, *(["--overwrite"] if existed else []))
    # expected: exit 2, "OUT gained files hybridprune did not write while it ran (notes.txt); nothing there was
    # replaced or deleted. The finished checkpoint is in OUT.hybridprune-finished"
    kept = tmp_path / "pruned.hybridprune-finished"
    _refused(result, f"{out} gained files hybridprune did not write while it ran (notes.txt)",
             "nothing there was replaced or deleted", f"The finished checkpoint is in {kept}")
    assert (out / "notes.txt").read_text() == "written during the run"
    assert {k: v for k, v in _snapshot(out).items() if not k.endswith("notes.txt")} == earlier
    assert (kept / "config.json").is_file() and (kept / "model.safetensors").is_file()
    assert not siblings(out)


@pytest.mark.parametrize("command", ["prune", "calibrate", "distill"])
def test_a_symlinked_out_is_written_through_and_keeps_its_link(ckpt, tmp_path, command):
    disk = tmp_path / "big-disk"
    (disk / "out").mkdir(parents=True)
    link = tmp_path / "out"
    link.symlink_to(disk / "out", target_is_directory=True)
    args = _commands(ckpt, link)[command]
    assert invoke(*args).exit_code == 0
    again = invoke(*args, "--overwrite")
    assert again.exit_code == 0, again.output
    assert link.is_symlink() and os.readlink(link) == str(disk / "out")
    assert fsutil.MANIFEST in os.listdir(disk / "out")
    assert sorted(os.listdir(tmp_path)) == ["big-disk", "out"] and os.listdir(disk) == ["out"]


@pytest.mark.parametrize("command", ["calibrate", "prune", "search", "distill", "demo", "eval"])
def test_a_dangling_out_link_says_so(ckpt, tmp_path, command):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "scratch" / "run")
    result = invoke(*_commands(ckpt, link)[command])
    # expected: exit 2, "--out OUT is a symbolic link to …/scratch/run, which does not exist; create that directory …"
    _refused(result, f"--out {link} is a symbolic link to {tmp_path / 'scratch' / 'run'}, which does not exist",
             "create that directory")
    assert "Not a directory" not in result.output
    assert link.is_symlink() and not (tmp_path / "scratch").exists() and os.listdir(tmp_path) == ["out"]


# ------------------------------------------------------------------------- 13. a full disk, however it is raised


def test_calibrate_full_disk_raised_by_safetensors_is_one_message(ckpt, tmp_path, monkeypatch):
    from safetensors import SafetensorError

    import safetensors.torch as safetensors_torch

    def full(*args, **kwargs):  # what safetensors raises on a full disk (seen on a 64 KiB tmpfs)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors_torch, "save_file", full)  # the scores import it when they write
    out = tmp_path / "scores"
    result = invoke(*_commands(ckpt, out)["calibrate"])
    _refused(result, f"cannot write the scores to {out}: no space left on the device", "Nothing was left behind")
    assert not out.exists() and not siblings(out)


def test_distill_checkpoint_failing_in_torch_save_is_one_message(ckpt, tmp_path, monkeypatch):
    import torch

    import hybridprune.distillation.checkpoint as ckpt_mod
    from hybridprune.output import errors as fserrors

    def full(*args, **kwargs):  # what torch.save raises on a full disk (seen on a 64 KiB tmpfs): no errno
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(ckpt_mod.torch, "save", full)
    monkeypatch.setattr(fserrors, "_NEARLY_FULL", 2**62)  # the file system looks full, as it would be
    out = tmp_path / "run"
    result = invoke(*_commands(ckpt, out)["distill"])
    _refused(result, f"cannot write checkpoint step-00000001 to {out / 'checkpoints'}: no space left on the device")
    assert not out.exists() and not siblings(out)


def test_search_full_disk_names_the_file(ckpt, tmp_path, monkeypatch):
    import types

    from hybridprune.archsearch import store as store_mod

    def fsync(fd):  # a write error as the kernel reports it: no file name attached
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_mod, "os", types.SimpleNamespace(**{**vars(os), "fsync": fsync}))
    out = tmp_path / "search"
    result = invoke(*_commands(ckpt, out)["search"])
    _refused(result, f"cannot write the search results to {out / 'candidates.jsonl'}: no space left on the device")
    assert not siblings(out)  # what was written is kept for a resume, as after an interrupt


def test_out_of_inodes_is_called_so(tmp_path, monkeypatch):
    real = os.statvfs(tmp_path)
    fake = os.statvfs_result((real.f_bsize, real.f_frsize, real.f_blocks, real.f_bfree, real.f_bavail, 1000, 0, 0,
                              real.f_flag, real.f_namemax))
    monkeypatch.setattr(os, "statvfs", lambda path: fake)
    message = fsutil.describe_os_error(OSError(errno.ENOSPC, "No space left on device"), "the scores", tmp_path)
    assert "no free inodes left on the device" in message and "of space is free" in message


# ---- the same on a real full file system, where this machine lets us mount one


@pytest.fixture()
def tmpfs(tmp_path):
    mounted = []

    def mount(options):
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
        except FileNotFoundError:
            pytest.skip("no mount command here")
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(where):
    try:
        with open(where / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_calibrate_on_a_really_full_disk(ckpt, tmpfs):
    disk = tmpfs("size=64k")
    _fill(disk)
    out = disk / "scores"
    result = invoke(*_commands(ckpt, out)["calibrate"])
    _refused(result, f"cannot write the scores to {out}: no space left on the device")
    assert sorted(os.listdir(disk)) == ["filler"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_calibrate_out_of_inodes_on_a_real_file_system(ckpt, tmpfs):
    disk = tmpfs("size=1m,nr_inodes=3")
    out = disk / "scores"
    result = invoke(*_commands(ckpt, out)["calibrate"])
    _refused(result, f"cannot write the scores to {out}: no free inodes left on the device")
    assert os.listdir(disk) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_distill_checkpoint_on_a_really_full_disk(ckpt, tmpfs):
    disk = tmpfs("size=3m")  # the student's weights (1.8 MiB) fit, the optimizer state does not: torch.save fails
    out = disk / "run"
    result = invoke(*_commands(ckpt, out)["distill"])
    _refused(result, f"cannot write checkpoint step-00000001 to {out / 'checkpoints'}: no space left on the device")
    assert os.listdir(disk) == []
