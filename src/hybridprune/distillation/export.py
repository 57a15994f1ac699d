"""The outputs of a run: the student as a plain Hugging Face checkpoint, and the loss curve."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..output.documents import DocumentError, NonNegative, parse, problem
from .checkpoint import CHECKPOINT_DIR, fsync_dir, fsync_file

LOG_FILE = "log.jsonl"
PLOT_FILE = "loss.png"
SUMMARY_FILE = "distill.json"
LEGACY_TMP_PREFIX = ".tmp-export-"  # where earlier versions staged the export, inside the run directory
#: What a run writes into its directory whatever the student's files are (config.json marks it complete).
RUN_NAMES = (CHECKPOINT_DIR, LOG_FILE, PLOT_FILE, SUMMARY_FILE, "config.json")
#: A record of log.jsonl as resuming (which keeps the steps up to its checkpoint) and the loss plot read it.
LOG_RECORD_SHAPE = {"step": NonNegative(int), "loss?": float, "val_loss?": float}


def foreign_run_files(out_dir: Path, resume: str | os.PathLike | None = None) -> list[str]:
    """The names a run writes in `out_dir` that are there already and were not written by hybridprune:
    a run started or resumed there would overwrite or append to them, so it is refused. Only the
    checkpoints being resumed (`resume` is `out_dir` or lies in its `checkpoints/`, copied there without
    the manifest, say) are the run's own."""
    from ..output.atomic import foreign_entries

    out_dir = Path(out_dir)
    taken = set(RUN_NAMES) & set(foreign_entries(out_dir)) if out_dir.is_dir() else set()
    if resume is not None:
        real, ckpts = Path(os.path.realpath(resume)), Path(os.path.realpath(out_dir / CHECKPOINT_DIR))
        if real in (ckpts.parent, ckpts) or ckpts in real.parents:
            taken.discard(CHECKPOINT_DIR)
    return sorted(taken)


def export_student(student, out_dir: Path, *, state_dict=None, tokenizer_dir=None, summary: dict | None = None) -> Path:
    """Write the student into `out_dir` as a checkpoint `from_pretrained` loads.

    The files are staged in a temporary sibling of `out_dir` (`.NAME.hybridprune-tmp-PID`, removed by
    the next run if this one is killed), fsynced, claimed in the run directory's manifest, then moved
    in one by one with `config.json` last: a run directory that has a `config.json` is complete.
    Everything the student's source directory ships besides weights and config (tokenizer, generation
    config, chat template, code files, provenance) is carried over, and the config keeps its style. The
    run's checkpoints and log are left alone, and a file the user put in `out_dir` is never overwritten,
    not even one put there while the export runs. A symlinked `out_dir` is written through.
    """
    from ..output.atomic import (MANIFEST, OutputError, claim, clean_stale, follow_umask, foreign_entries,
                                 move_new, output_target, temp_sibling, writing)
    from ..checkpoint.config_style import write_config
    from ..pruning.export import RUN_FILES, carry_over, check_finite
    from ..pruning.model_card import read_info
    from ..pruning.model_card import write_model_card

    steps = (summary or {}).get("steps")
    check_finite((state_dict if state_dict is not None else student.state_dict()).items(), "the distilled student",
                 f"the training went non-finite{f' by step {steps}' if steps else ''} (the learning rate or the "
                 "loss overflowed): lower --lr, check the data, or train in fp32, then resume from the last good "
                 "checkpoint or start again")
    out_dir = output_target(out_dir)  # a symlinked run directory: staged beside its target, the link kept
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale(out_dir)
    stale = out_dir / "config.json"
    if stale.exists() and "config.json" not in foreign_entries(out_dir):  # retract an earlier export first,
        stale.unlink()  # so that a half-replaced one never looks complete
    tmp = temp_sibling(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    os.mkdir(tmp)
    try:
        with writing("the distilled student", out_dir):
            kwargs = {"state_dict": state_dict} if state_dict is not None else {}
            student.save_pretrained(tmp, **kwargs)
            if tokenizer_dir is not None:
                write_config(student.config, tmp, tokenizer_dir)  # in the style of the student's source
                carry_over(tokenizer_dir, tmp, rebuilt=("config.json", MANIFEST, *RUN_FILES))  # keeps the provenance
            if summary is not None:
                (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
            # the student's record, named where the user has it (else the copy carried over from the Hub)
            source = tokenizer_dir if tokenizer_dir is not None and Path(tokenizer_dir).is_dir() else tmp
            info = read_info(source, role="student") or {}
            write_model_card(tmp, tokenizer_dir, info, distillation=summary or {})  # the student's own card
            follow_umask(tmp)
            names = sorted(p.name for p in tmp.iterdir())
            for name in names:
                if (tmp / name).is_file():
                    fsync_file(tmp / name)
            fsync_dir(tmp)
            clobbered = sorted(set(names) & set(foreign_entries(out_dir)))
            if clobbered:
                raise OutputError(f"{out_dir} holds files hybridprune did not write ({', '.join(clobbered)}) where "
                                  "the student goes; move them away, then resume to export again")
            existing = {p.name for p in out_dir.iterdir()}  # hybridprune's own, as just checked
            claim(out_dir, names)
            ordered = [n for n in names if n != "config.json"] + (["config.json"] if "config.json" in names else [])
            for name in ordered:
                if name not in existing:
                    move_new(tmp / name, out_dir / name)  # never onto a file that appeared meanwhile
                    continue
                if (out_dir / name).is_dir():
                    shutil.rmtree(out_dir / name)
                os.replace(tmp / name, out_dir / name)
            fsync_dir(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def remove_legacy_tmp(out_dir: Path) -> list[Path]:
    """Remove export staging directories that earlier versions left inside a killed run's directory."""
    out_dir = Path(out_dir)
    found = [p for p in out_dir.glob(LEGACY_TMP_PREFIX + "*") if p.is_dir()] if out_dir.is_dir() else []
    for p in found:
        shutil.rmtree(p, ignore_errors=True)
    return found


def read_log(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    fix = "it is not the log hybridprune writes: move it away, or resume from a run directory of your own"
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            record = parse(line, f"{path}, line {n}", fix, non_finite=True)  # tokens_per_s may be infinite
        except DocumentError:
            continue  # a line cut short by a kill
        found = problem(record, LOG_RECORD_SHAPE)
        if found:
            raise DocumentError(f"{path}, line {n}: {found}; {fix}")
        records.append(record)
    return records


def truncate_log(path: Path, step: int) -> None:
    """Keep the records of steps <= `step` (a resumed run rewrites what came after its checkpoint)."""
    path = Path(path)
    if not path.is_file():
        return
    kept = [r for r in read_log(path) if int(r.get("step", 0)) <= step]
    from ..output.atomic import temp_sibling

    tmp = temp_sibling(path)
    from ..output.atomic import writing

    try:
        with writing("the training log", path):
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def plot_loss(log_path: Path, png_path: Path) -> Path | None:
    """Training (and validation) loss against step, from the JSONL log, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if not train and not val:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train (KD objective)", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", ms=4)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("distillation loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png_path = Path(png_path)
    from ..output.atomic import temp_sibling

    tmp = temp_sibling(png_path)
    from ..output.atomic import writing

    try:
        with writing("the loss plot", png_path):
            fig.savefig(tmp, format="png")
            os.replace(tmp, png_path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return png_path
