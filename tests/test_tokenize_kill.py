"""`hybridprune tokenize` killed (SIGKILL) at any point, its setup included (recording its output names,
writing its first progress record), is finished by the same command run again, to the bytes of an
uninterrupted run; what a kill in setup leaves is not refused as "not empty"."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
import signal

import pytest

from ckpt_helpers import invoke, small_corpus
from hybridprune.data import tokenizer_path
from hybridprune.data.shards import MANIFEST_FILE, PROGRESS_FILE
from hybridprune.output.atomic import MANIFEST, TMP_TAG

DEAD_PID = 2**22 + 12345  # beyond the default pid_max: no live process has it


def _files(d):
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def _args(corpus, out):
    return ["tokenize", "--data", corpus, "--tokenizer", tokenizer_path(), "--out", out]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenize-kill")
    corpus = small_corpus(root / "corpus.jsonl")
    r = invoke(*_args(corpus, root / "whole"))
    assert r.exit_code == 0, r.output
    return corpus, root / "whole"


@pytest.mark.parametrize("leftover", ["claiming", "first-progress", "claimed-only"])
def test_a_kill_in_setup_is_finished_by_the_same_command(whole, tmp_path, leftover):
    """What each kill point in setup leaves (a dead process's temporary of the output manifest or of
    progress.json, or the manifest alone): the rerun exits 0 with the uninterrupted bytes, no temporary."""
    corpus, want = whole
    out = tmp_path / "tokens"
    out.mkdir()
    if leftover == "claiming":
        (out / f"{MANIFEST}.tmp-{DEAD_PID}").write_text("[")
    else:
        (out / MANIFEST).write_text(json.dumps(sorted([MANIFEST_FILE, PROGRESS_FILE, "train", "validation",
                                                         "calibration"])))
        if leftover == "first-progress":
            (out / f".{PROGRESS_FILE}{TMP_TAG}{DEAD_PID}").write_text('{"plan": ')
    r = invoke(*_args(corpus, out))
    assert r.exit_code == 0, r.output
    assert _files(out) == _files(want)


def test_a_live_temporary_or_a_user_file_is_still_refused(whole, tmp_path):
    """Only a dead process's leftovers are taken over: another run's live temporary, or a file of the
    user's, still refuse the directory (exit 2), untouched."""
    corpus, _ = whole
    for name in (f".{PROGRESS_FILE}{TMP_TAG}{os.getppid()}", "notes.txt"):
        out = tmp_path / name.strip(".")
        out.mkdir()
        (out / name).write_text("x")
        r = invoke(*_args(corpus, out))
        assert r.exit_code == 2 and "already exists and is not empty" in r.output, r.output
        assert sorted(p.name for p in out.iterdir()) == [name] and (out / name).read_text() == "x"


def _killed_at(args, at: int, under) -> int:
    """Run the CLI in a forked child (no fresh interpreter: fast) that SIGKILLs itself at its `at`-th file
    write under `under` (`ckpt_helpers.KILLER`'s audit hook); its wait status."""
    import sys

    from ckpt_helpers import KILLER

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            exec(KILLER.format(k=at, under=str(under)), {"sys": sys})
            code = invoke(*args).exit_code
        finally:
            os._exit(locals().get("code", 1))
    return os.waitpid(pid, 0)[1]


@pytest.mark.slow
def test_tokenize_killed_at_every_write_resumes_to_the_same_bytes(whole, tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # the children are forked
    corpus, want = whole
    want = _files(want)
    at = 0
    while True:
        at += 1
        out = tmp_path / f"run{at}"
        status = _killed_at(_args(corpus, out), at, out)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:  # `at` is past its last write: all were tried
            break
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
        rerun = invoke(*_args(corpus, out))
        assert rerun.exit_code == 0, f"killed at write {at}: {rerun.output}"
        assert _files(out) == want, f"killed at write {at}"
    assert at > 5 and _files(out) == want


def _worker_pid(item):
    import time

    time.sleep(0.05)
    return os.getpid()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_workers_die_with_a_killed_command(tmp_path):
    """`kill -9` of `tokenize --num-proc N` must not leave its N workers idle forever (they were orphaned,
    and one ignored SIGTERM: a fork inherits the command's handler)."""
    import signal
    import subprocess
    import textwrap
    import time

    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import itertools, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from hybridprune.data.ordered_pool import ordered_map
        from test_tokenize_kill import _worker_pid
        seen = set()
        for pid in ordered_map(_worker_pid, itertools.count(), 2):
            if pid not in seen:
                seen.add(pid)
                print(pid, flush=True)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(proc.stdout.readline()) for _ in range(2)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [w for w in workers if _running(w)]
    assert not alive, f"workers {alive} outlived their killed parent"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
