"""`hybridprune run` never touches a file outside the run, and reads its own run directory as hostile
input (it may come from an archive): through the command line, with the exit status, the message, and
the user's files byte-identical after.

- a stage-named link, or the user's folder with a stage's name, is refused, never emptied;
- names in a stage's record (`../../x`, `/abs`) are never followed: a stage's files are found by its kind;
- a link planted in a stage directory or in a stage's output is refused, nothing read through it;
- a malformed record is one message naming the file and the way out, with `--dry-run` too;
- a YAML alias bomb, absurd nesting or a list as a key is refused at once, naming file and line;
- a second run of the same directory is refused while the first holds it, naming its PID.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ckpt_helpers import SRC, invoke, no_traceback
from hybridprune.output.atomic import MANIFEST
from hybridprune.output.lock import LOCK, locked

R1 = """model: shipped:tiny-nemotron-h
dtype: float32
calibrate: {samples: 4, seq_len: 32, batch_size: 4, depth_samples: 0}
prune: {plan: "ffn_hidden_size=512,mamba_num_heads=12"}
"""
R2 = R1 + "eval: {samples: 4, seq_len: 32, batch_size: 4}\n"  # one more stage, 03-eval; 01 and 02 unchanged


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished run of R1 (calibrate, prune), copied by each test before it plants something."""
    root = tmp_path_factory.mktemp("base")
    (root / "r1.yaml").write_text(R1)
    result = invoke("run", root / "r1.yaml", "--out", root / "out")
    assert result.exit_code == 0, result.output
    return root / "out"


@pytest.fixture
def run(base, tmp_path):
    """(a copy of the finished run, the recipe with an eval stage, the user's folder outside the run)."""
    out = tmp_path / "out"
    shutil.copytree(base, out, symlinks=True)
    (tmp_path / "r2.yaml").write_text(R2)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    shutil.copytree(base / "02-prune" / "model", victim / "checkpoint")  # a checkpoint of the user's
    return out, tmp_path / "r2.yaml", victim


def _snapshot(root: Path) -> dict:
    """Every entry under `root` (links not followed): bytes and mtime of files, the target of links."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                found[p] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                found[p] = "dir"
            else:
                found[p] = (Path(p).read_bytes(), os.lstat(p).st_mtime_ns)
    return found


_WATCHED: list = []  # (root, events seen under it) while a test watches


def _audit(event, args):
    if _WATCHED and event in ("open", "os.listdir", "os.scandir", "os.remove", "os.unlink", "os.rename",
                              "os.replace", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.chmod", "os.utime"):
        path = args[0] if args else None
        if isinstance(path, (str, bytes, os.PathLike)):
            for root, seen in _WATCHED:
                if os.path.abspath(os.fsdecode(path)).startswith(root):
                    seen.append((event, os.fsdecode(path)))


sys.addaudithook(_audit)


def _cli(victim: Path, *args):
    """Run the CLI, recording every file-system event (open, list, write, delete) under `victim`; returns
    (result, message on one line, those events). Reads of safetensors by Rust are not seen: the
    snapshot's bytes and mtimes cover those."""
    seen: list = []
    _WATCHED.append((str(victim.resolve()), seen))
    try:
        result = invoke(*args)
    finally:
        _WATCHED.clear()
    return result, " ".join(result.output.split()), seen


def _refused(result, message: str, *words: str) -> None:
    assert result.exit_code == 2 and no_traceback(result), result.output
    for word in words:
        assert word in message, (word, result.output)


# ---- 1. stage directories the run did not write --------------------------------------------------------

@pytest.mark.parametrize("planted", ["link", "folder"])
def test_a_stage_named_link_or_folder_the_run_did_not_write_is_refused_not_emptied(run, planted):
    out, recipe, victim = run
    if planted == "link":
        (out / "03-eval").symlink_to(victim, target_is_directory=True)
    else:
        (out / "03-eval").mkdir()
        (out / "03-eval" / "notes.md").write_text("mine")
    before, inside = _snapshot(victim), _snapshot(out)
    for extra in ([], ["--dry-run"]):
        result, message, seen = _cli(victim, "run", recipe, "--out", out, *extra)
        expected = "is a symbolic link" if planted == "link" else "was not written by this run"
        _refused(result, message, f"{out / '03-eval'}", expected)
        assert _snapshot(victim) == before and _snapshot(out) == inside and seen == []


@pytest.mark.parametrize("planted", ["notes.txt", "link"])
def test_a_stage_directory_to_empty_holding_what_its_stage_does_not_write_is_refused(run, planted):
    out, recipe, victim = run
    if planted == "link":
        (out / "01-calibrate" / "extra").symlink_to(victim, target_is_directory=True)
    else:
        (out / "01-calibrate" / "notes.txt").write_text("mine")
    before, inside = _snapshot(victim), _snapshot(out)
    name = "extra" if planted == "link" else "notes.txt"
    result, message, seen = _cli(victim, "run", recipe, "--out", out, "--from", "calibrate")
    _refused(result, message, f"{out / '01-calibrate'} holds {name}", "not emptied", "delete")
    assert _snapshot(victim) == before and _snapshot(out) == inside and seen == []


def test_a_link_as_a_stage_directory_listed_in_the_manifest_is_refused(run):
    out, recipe, victim = run
    shutil.move(out / "02-prune", victim / "02-prune")  # a finished stage, outside the run
    (out / "02-prune").symlink_to(victim / "02-prune", target_is_directory=True)
    before = _snapshot(victim)
    result, message, seen = _cli(victim, "run", recipe, "--out", out)
    _refused(result, message, "02-prune", "symbolic link", "nothing was removed or written")
    assert _snapshot(victim) == before and seen == []


def test_overwrite_removes_no_stage_directory_holding_what_its_stage_does_not_write(run, base):
    out, recipe, victim = run
    (out / "02-prune" / "notes.txt").write_text("mine")
    inside = _snapshot(out)
    result, message, _ = _cli(victim, "run", base.parent / "r1.yaml", "--out", out, "--overwrite")
    _refused(result, message, f"{out / '02-prune'} holds notes.txt", "--overwrite removes nothing")
    assert _snapshot(out) == inside


@pytest.mark.parametrize("planted", ["report.md", "report_figures", "results.json"])
def test_report_files_the_run_did_not_write_are_refused(run, planted):
    out, recipe, victim = run
    recipe.write_text(R1 + "report: {title: t}\n")
    if planted == "results.json":
        (out / planted).write_text("{}")  # not in the manifest: the user's
    else:
        (out / planted).symlink_to(victim / "thesis.tex" if planted == "report.md" else victim)
    before, inside = _snapshot(victim), _snapshot(out)
    result, message, seen = _cli(victim, "run", recipe, "--out", out)
    _refused(result, message, str(out / planted),
             "was not written by this run" if planted == "results.json" else "is a symbolic link")
    assert _snapshot(victim) == before and _snapshot(out) == inside and seen == []


# ---- 2. names in records are never followed ----------------------------------------------------------------

def _edit_record(out: Path, stage: str, **changes) -> None:
    path = out / stage / "record.json"
    record = json.loads(path.read_text())
    record.update(changes)
    path.write_text(json.dumps(record))


@pytest.mark.slow
def test_names_in_records_are_never_followed_the_stage_files_are_found_by_kind(run):
    out, recipe, victim = run
    _edit_record(out, "01-calibrate", outputs={"scores": str(victim)}, files=[str(victim), "../../victim"])
    _edit_record(out, "02-prune", outputs={"model": "../../victim/checkpoint",
                                           "plan": json.loads((out / "02-prune/record.json").read_text())
                                           ["outputs"]["plan"]}, files=["../../victim/checkpoint"])
    before = _snapshot(victim)
    result, message, seen = _cli(victim, "run", recipe, "--out", out)
    assert result.exit_code == 0 and no_traceback(result), result.output
    assert "01-calibrate: skipped" in message and "02-prune: skipped" in message
    assert _snapshot(victim) == before and seen == []
    # the run's own pruned checkpoint was evaluated, and its card gained the table; the user's did not
    assert "## Evaluation" in (out / "02-prune" / "model" / "README.md").read_text()
    record = json.loads((out / "03-eval" / "record.json").read_text())
    assert record["status"] == "done" and record["files"] == ["results.json"]


@pytest.mark.parametrize("where", ["02-prune/model", "02-prune/model/config.json", "01-calibrate/scores"])
def test_a_link_planted_in_a_stage_output_is_refused_nothing_read_through_it(run, where):
    out, recipe, victim = run
    planted = out / where
    target = victim / "checkpoint" / planted.name if planted.name == "config.json" else victim / "checkpoint"
    shutil.rmtree(planted) if planted.is_dir() else planted.unlink()
    planted.symlink_to(target)
    before = _snapshot(victim)
    result, message, seen = _cli(victim, "run", recipe, "--out", out)
    stage = where.split("/")[0]
    _refused(result, message, str(out / stage))
    assert "symbolic link" in message or "(or a link)" in message, message
    assert _snapshot(victim) == before and seen == []


# ---- 8. malformed records --------------------------------------------------------------------------------

MALFORMED = {
    "not JSON": "{status: done",
    "a list": "[1, 2]",
    "status a number": {"status": 5},
    "outputs a string": {"outputs": "model"},
    "plan a string": {"outputs": {"model": "model", "plan": "everything"}},
    "settings a list": {"describe": {"settings": [1]}},
    "versions a list": {"common": {"versions": ["torch"]}},
    "seconds NaN": "NaN",
    "key twice": "twice",
}


def _malformed(out: Path, how) -> Path:
    path = out / "02-prune" / "record.json"
    record = json.loads(path.read_text())
    if isinstance(how, dict):
        record.update(how)
        path.write_text(json.dumps(record))
    elif how == "NaN":
        path.write_text(json.dumps(record).replace('"seconds": ', '"seconds": NaN, "x": '))
    elif how == "twice":
        path.write_text(json.dumps(record)[:-1] + ', "status": "running"}')
    else:
        path.write_text(how)
    return path


@pytest.mark.parametrize("how", list(MALFORMED), ids=list(MALFORMED))
def test_a_malformed_record_is_one_message_naming_it_with_dry_run_too(run, how):
    out, recipe, victim = run
    path = _malformed(out, MALFORMED[how])
    inside = _snapshot(out)
    for extra in (["--dry-run"], []):
        result, message, _ = _cli(victim, "run", recipe, "--out", out, *extra)
        _refused(result, message, str(path), "--overwrite", f"delete {out / '02-prune'}")
        assert _snapshot(out) == inside
    again = invoke("run", recipe, "--out", out, "--dry-run", "--from", "prune")  # the way out named: rerun it
    assert again.exit_code == 0 and "--from 02-prune" in again.output, again.output


def test_a_record_that_is_a_link_is_not_read(run):
    out, recipe, victim = run
    (victim / "record.json").write_text((out / "02-prune" / "record.json").read_text())
    (out / "02-prune" / "record.json").unlink()
    (out / "02-prune" / "record.json").symlink_to(victim / "record.json")
    before = _snapshot(victim)
    result, message, seen = _cli(victim, "run", recipe, "--out", out, "--dry-run")
    _refused(result, message, str(out / "02-prune" / "record.json"), "symbolic link")
    assert _snapshot(victim) == before and seen == []


# ---- 7. YAML from others -----------------------------------------------------------------------------------

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("text,message", [
    ("model: shipped:tiny-nemotron-h\n" + LAUGHS,
     "recipe.yaml:3: *a repeats a mapping or list; recipes do not use aliases"),
    ("model: shipped:tiny-nemotron-h\nbase: &b {lr: 1}\ndistill:\n  <<: *b\n",
     "recipe.yaml:4: *b repeats a mapping or list"),
    ("model: shipped:tiny-nemotron-h\neval:\n  tasks: " + "[" * 3000 + "]" * 3000 + "\n",
     "recipe.yaml:3: nested more than 32 levels deep"),
    ("model: shipped:tiny-nemotron-h\n[distill, lr]: 1\n", "recipe.yaml:2: a key of the recipe is a list"),
    ("model: shipped:tiny-nemotron-h\ndistill:\n  ? {lr: 1}\n  : 2\n",
     "recipe.yaml:3: a key of distill is a mapping"),
], ids=["billion laughs", "merge of an alias", "deep nesting", "list key", "mapping key"])
def test_yaml_from_others_is_refused_at_once_naming_file_and_line(tmp_path, text, message):
    assert len(text) < 6000 or "[[[" in text
    (tmp_path / "recipe.yaml").write_text(text)
    for extra in (["--dry-run"], []):
        start = time.perf_counter()
        result = invoke("run", tmp_path / "recipe.yaml", "--out", tmp_path / "out", *extra)
        assert time.perf_counter() - start < 10
        _refused(result, " ".join(result.output.split()).replace(str(tmp_path) + "/", ""), message)
        assert not (tmp_path / "out").exists()


def test_a_scalar_alias_is_still_allowed(tmp_path):
    from hybridprune.recipe.loader import load_text

    doc, lines = load_text("seed: &s 3\ncalibrate: {samples: *s}\n", "recipe.yaml")
    assert doc == {"seed": 3, "calibrate": {"samples": 3}} and lines[("calibrate", "samples")] == 2


# ---- 11. one run at a time ------------------------------------------------------------------------------------

HOLD = """import sys, time
from hybridprune.output.lock import locked
with locked(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_run_of_the_same_directory_is_refused_naming_the_first(run):
    out, recipe, victim = run
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(SRC)))
    try:
        assert holder.stdout.readline().strip() == "held"
        inside = _snapshot(out)
        result, message, _ = _cli(victim, "run", recipe, "--out", out)
        _refused(result, message, f"{out} is being written by another hybridprune command (PID {holder.pid})")
        assert _snapshot(out) == inside
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock file is left, and taken over (the kernel released the lock)
    assert (out / LOCK).read_text().strip() == str(holder.pid)
    with locked(out):
        assert (out / LOCK).read_text().strip() == str(os.getpid())
    assert not (out / LOCK).exists()


@pytest.mark.parametrize("planted", ["link", "foreign"])
def test_a_planted_lock_file_is_refused_untouched(run, planted):
    out, recipe, victim = run
    if planted == "link":
        (out / LOCK).symlink_to(victim / "thesis.tex")
    else:
        (out / LOCK).write_text("my notes\n")
    before, inside = _snapshot(victim), _snapshot(out)
    result, message, seen = _cli(victim, "run", recipe, "--out", out)
    _refused(result, message, str(out / LOCK), "is a symbolic link" if planted == "link" else "other than a PID",
             "not hybridprune's lock file")
    assert _snapshot(victim) == before and _snapshot(out) == inside and seen == []
    assert MANIFEST in os.listdir(out)


# ---- report: the run directory's files are found without following links -----------------------------------

def test_the_report_follows_no_link_in_the_run_directory(tmp_path):
    victim = tmp_path / "victim"
    (victim / "deep").mkdir(parents=True)
    (victim / "eval.json").write_text('{"models": []}')
    (victim / "deep" / "results.json").write_text("{}")
    (victim / "report.md").write_text("my notes")
    run_dir = tmp_path / "run"
    (run_dir / "05-eval").mkdir(parents=True)
    (run_dir / "05-eval" / "eval.json").symlink_to(victim / "eval.json")
    (run_dir / "linked").symlink_to(victim / "deep", target_is_directory=True)
    before = _snapshot(victim)
    result, message, seen = _cli(victim, "report", run_dir)
    _refused(result, message, "nothing to report")
    (run_dir / "report.md").symlink_to(victim / "report.md")
    for extra in ([], ["--overwrite"]):
        result, message, more = _cli(victim, "report", run_dir, *extra)
        _refused(result, message, f"{run_dir / 'report.md'} is a symbolic link")
        seen += more
    assert _snapshot(victim) == before and seen == []
