"""The one output path, through the command line: a non-empty --out is refused and never emptied,
--overwrite replaces only what hybridprune wrote, failed writes say why and leave nothing behind,
temporaries of killed runs are cleaned up, and outputs follow the umask."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from ckpt_helpers import PLAN, invoke, no_traceback, siblings, small_corpus
from hybridprune.output import atomic as fsutil


def _data(root):
    return small_corpus(root / "corpus.jsonl")


@pytest.fixture
def ckpt(calibrated_checkpoint):
    """The session's calibrated checkpoint (conftest.py): read only."""
    return calibrated_checkpoint


def _user_dir(path):
    """The issue's example: `mkdir -p d/sub && echo x > d/a.tex`."""
    (path / "sub").mkdir(parents=True)
    (path / "a.tex").write_text("x")
    return path


def _untouched(path):
    return (path / "a.tex").read_text() == "x" and (path / "sub").is_dir() and not siblings(path)


def _commands(ckpt, out):
    return {
        "calibrate": ["calibrate", "--model", ckpt / "model", "--data", _data(ckpt), "--samples", "4",
                      "--seq-len", "32", "--depth-samples", "0", "--out", out],
        "prune": ["prune", "--model", ckpt / "model", "--scores", ckpt / "scores", "--plan", PLAN, "--out", out],
        "search": ["search", "--model", ckpt / "model", "--data", _data(ckpt), "--params", "0.7x",
                   "--scores", ckpt / "scores", "--eval-samples", "2", "--eval-seq-len", "32", "--no-speed",
                   "--max-candidates", "2", "--top-k", "1", "--out", out],
        "distill": ["distill", "--teacher", ckpt / "model", "--student", ckpt / "model", "--data",
                    _data(ckpt),
                    "--steps", "1", "--seq-len", "32", "--global-batch", "2", "--micro-batch", "2",
                    "--val-samples", "0", "--no-progress", "--out", out],
        "demo": ["demo", "--out", out],
    }


@pytest.mark.parametrize("command", ["calibrate", "prune", "search", "distill", "demo"])
def test_a_non_empty_out_is_refused_and_left_untouched(ckpt, tmp_path, command):
    d = _user_dir(tmp_path / "d")
    result = invoke(*_commands(ckpt, d)[command])
    assert result.exit_code == 2, result.output
    assert no_traceback(result)
    assert "already exists and is not empty (a.tex, sub)" in result.output and "--overwrite" in result.output
    assert _untouched(d) and sorted(p.name for p in d.iterdir()) == ["a.tex", "sub"]


@pytest.mark.parametrize("command", ["calibrate", "prune", "search", "distill", "demo"])
def test_overwrite_never_clobbers_files_hybridprune_did_not_write(ckpt, tmp_path, command):
    d = _user_dir(tmp_path / "d")
    result = invoke(*_commands(ckpt, d)[command], "--overwrite")
    assert result.exit_code == 2 and no_traceback(result), result.output
    assert "holds files hybridprune did not write (a.tex, sub)" in result.output
    assert _untouched(d)


def test_overwrite_replaces_an_earlier_output_of_hybridprune(ckpt, tmp_path):
    out = tmp_path / "pruned"
    args = _commands(ckpt, out)["prune"]
    assert invoke(*args).exit_code == 0
    first = (out / "model.safetensors").stat().st_ino
    again = invoke(*args)
    assert again.exit_code == 2 and "not empty" in again.output
    result = invoke(*args, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").stat().st_ino != first and not siblings(out)
    assert "model.safetensors" in fsutil.owned_names(out)


def test_calibrate_overwrite_replaces_its_own_scores(ckpt, tmp_path):
    out = tmp_path / "scores"
    args = _commands(ckpt, out)["calibrate"]
    assert invoke(*args).exit_code == 0
    assert {"scores.json", "scores.safetensors", "layer_importance.png"} <= fsutil.owned_names(out)
    assert invoke(*args, "--overwrite").exit_code == 0
    assert not siblings(out)


@pytest.mark.parametrize("command", ["calibrate", "prune"])
def test_outputs_follow_the_umask(ckpt, tmp_path, command):
    old = os.umask(0o022)
    try:
        out = tmp_path / "o"
        assert invoke(*_commands(ckpt, out)[command]).exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in out.iterdir() if p.is_file()}
    assert set(modes.values()) == {"0o644"}, modes


@pytest.mark.parametrize("code, message", [
    (errno.ENOSPC, "no space left on the device (about"),
    (errno.EROFS, "the file system is read-only"),
    (errno.EACCES, "permission denied"),
])
@pytest.mark.parametrize("in_memory", [False, True])
def test_a_failed_write_is_one_message_and_leaves_nothing(ckpt, tmp_path, monkeypatch, code, message, in_memory):
    from transformers import PreTrainedModel

    from hybridprune.checkpoint.files import ShardWriter

    def fail(self, *args, **kwargs):
        raise OSError(code, os.strerror(code))

    # the streaming prune writes its shards itself; the in-memory one through save_pretrained
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", fail)
    monkeypatch.setattr(ShardWriter, "write", fail)
    out = tmp_path / "pruned"
    result = invoke(*_commands(ckpt, out)["prune"], *(["--in-memory"] if in_memory else []))
    assert result.exit_code == 2 and no_traceback(result), result.output
    assert f"cannot write the checkpoint to {out}: {message}" in " ".join(result.output.split())
    assert "Nothing was left behind" in result.output
    assert not out.exists() and not siblings(out)


def test_a_full_disk_during_calibrate_leaves_nothing(ckpt, tmp_path, monkeypatch):
    import safetensors.torch as safetensors_torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors_torch, "save_file", full)  # the scores import it when they write
    out = tmp_path / "scores"
    result = invoke(*_commands(ckpt, out)["calibrate"])
    assert result.exit_code == 2 and no_traceback(result)
    assert "cannot write the scores" in result.output and "no space left" in result.output
    assert not out.exists() and not siblings(out)


def test_a_full_disk_during_distill_leaves_no_empty_out(ckpt, tmp_path, monkeypatch):
    import hybridprune.distillation.checkpoint as ckpt_mod

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run"))

    monkeypatch.setattr(ckpt_mod, "save_weights", full)
    out = tmp_path / "run"
    result = invoke(*_commands(ckpt, out)["distill"])
    assert result.exit_code == 2 and no_traceback(result), result.output
    assert "no space left on the device" in result.output
    assert not out.exists()


def test_an_unwritable_parent_is_refused_before_any_work(ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(fsutil, "_writable", lambda path: False)
    result = invoke(*_commands(ckpt, tmp_path / "o")["prune"])
    assert result.exit_code == 2 and no_traceback(result)
    assert "is not writable" in result.output and not (tmp_path / "o").exists()


def test_a_name_over_255_bytes_is_refused(ckpt, tmp_path):
    out = tmp_path / ("n" * 300)
    result = invoke(*_commands(ckpt, out)["prune"])
    assert result.exit_code == 2 and no_traceback(result)
    assert "300 bytes, more than the 255 a file name may have" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_long_name_still_gets_a_valid_temporary(tmp_path):
    out = tmp_path / ("n" * 250)
    fsutil.atomic_directory(out, lambda tmp: (tmp / "f").write_text("1"))
    assert (out / "f").read_text() == "1" and len(list(tmp_path.iterdir())) == 1


def test_stale_temporaries_of_dead_processes_are_removed(ckpt, tmp_path):
    out = tmp_path / "pruned"
    dead = 2**22 + 12345  # above the default pid_max of 4194304: no such process
    stale = tmp_path / f".pruned{fsutil.TMP_TAG}{dead}"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    alive = tmp_path / f".pruned{fsutil.TMP_TAG}1"  # pid 1 exists: maybe another run in progress
    alive.mkdir()
    result = invoke(*_commands(ckpt, out)["prune"])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and alive.exists() and (out / "config.json").is_file()


def test_an_output_moved_aside_by_a_killed_run_is_restored(tmp_path):
    out = tmp_path / "o"
    aside = tmp_path / f".o{fsutil.OLD_TAG}{2**22 + 1}"
    aside.mkdir()
    (aside / "f").write_text("kept")
    assert fsutil.clean_stale(out) == [] and (out / "f").read_text() == "kept" and not aside.exists()


def test_an_error_while_writing_removes_the_temporary(tmp_path):
    def boom(tmp):
        (tmp / "half").write_text("1")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fsutil.atomic_directory(tmp_path / "o", boom)
    assert list(tmp_path.iterdir()) == []


def test_distill_api_never_deletes_a_log_it_did_not_write(tmp_path):
    from conftest import build, tiny_nemotron_config
    from hybridprune import distill
    from hybridprune.distillation.config import DistillError

    (tmp_path / "log.jsonl").write_text("mine\n")
    model = build(tiny_nemotron_config())
    with pytest.raises(DistillError, match="holds log.jsonl, not written by hybridprune"):
        distill(model, model, torch_tokens(), steps=1, global_batch=2, micro_batch=2, out_dir=str(tmp_path),
                progress=False)
    assert (tmp_path / "log.jsonl").read_text() == "mine\n"


def torch_tokens():
    import torch

    return torch.randint(3, 96, (4, 16), generator=torch.Generator().manual_seed(0))


def test_an_interrupted_search_keeps_its_results_and_says_how_to_resume(ckpt, tmp_path, monkeypatch):
    import signal

    from hybridprune.archsearch import store as store_mod

    original = store_mod.SearchStore.add

    def add_then_interrupt(self, record):
        original(self, record)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(store_mod.SearchStore, "add", add_then_interrupt)
    out = tmp_path / "search"
    result = invoke(*_commands(ckpt, out)["search"])
    assert result.exit_code == 130 and no_traceback(result), result.output
    assert "run the same command again to resume" in result.output
    assert len((out / "candidates.jsonl").read_text().splitlines()) == 1
    monkeypatch.setattr(store_mod.SearchStore, "add", original)
    again = invoke(*_commands(ckpt, out)["search"])
    assert again.exit_code == 0 and "resuming: 1 evaluations" in again.output, again.output


def test_a_full_disk_during_search_leaves_nothing(ckpt, tmp_path, monkeypatch):
    from hybridprune.archsearch import store as store_mod

    def full(self, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "search" / "candidates.jsonl"))

    monkeypatch.setattr(store_mod.SearchStore, "add", full)
    out = tmp_path / "search"
    result = invoke(*_commands(ckpt, out)["search"])
    assert result.exit_code == 2 and no_traceback(result), result.output
    assert "no space left on the device" in result.output and "candidates.jsonl" in result.output
    assert not out.exists() and not siblings(out)


@pytest.mark.parametrize("command", ["calibrate", "prune", "search", "distill", "demo"])
def test_an_out_that_is_a_file_is_refused(ckpt, tmp_path, command):
    out = tmp_path / "f"
    out.write_text("mine")
    result = invoke(*_commands(ckpt, out)[command])
    assert result.exit_code == 2 and no_traceback(result), result.output
    assert "is a file, not a directory" in result.output and out.read_text() == "mine"


def test_distill_overwrite_starts_afresh_and_keeps_user_files_out(ckpt, tmp_path):
    out = tmp_path / "run"
    args = _commands(ckpt, out)["distill"]
    assert invoke(*args).exit_code == 0
    again = invoke(*args)
    assert again.exit_code == 2 and f"--resume {out}" in again.output
    fresh = invoke(*args, "--overwrite")
    assert fresh.exit_code == 0, fresh.output
    assert (out / "config.json").is_file() and not siblings(out)
    assert {"checkpoints", "log.jsonl", "config.json", "model.safetensors"} <= fsutil.owned_names(out)
