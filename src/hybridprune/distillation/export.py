"""The outputs of a run: the student as a plain Hugging Face checkpoint, and the loss curve."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .checkpoint import fsync_dir, fsync_file

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
# Provenance written by the pruning stage: carried over so the student stays traceable.
CARRY_FILES = ("hybridprune.json",)
LOG_FILE = "log.jsonl"
PLOT_FILE = "loss.png"
SUMMARY_FILE = "distill.json"


def export_student(student, out_dir: Path, *, state_dict=None, tokenizer_dir=None, summary: dict | None = None) -> Path:
    """Write the student into `out_dir` as a checkpoint `from_pretrained` loads.

    The files are written into a temporary directory inside `out_dir`, fsynced, then renamed into
    place one by one with `config.json` last: a directory that has a `config.json` is complete.
    `out_dir` may already hold the run's checkpoints and log; they are left alone.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = out_dir / "config.json"
    if stale.exists():  # an earlier export: retract it first so a half-replaced one never looks complete
        stale.unlink()
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=out_dir))
    try:
        kwargs = {"state_dict": state_dict} if state_dict is not None else {}
        student.save_pretrained(tmp, **kwargs)
        if tokenizer_dir is not None:
            for name in TOKENIZER_FILES + CARRY_FILES:
                src = Path(tokenizer_dir) / name
                if src.is_file():
                    shutil.copy2(src, tmp / name)
        if summary is not None:
            (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
        names = sorted(p.name for p in tmp.iterdir() if p.is_file())
        for name in names:
            fsync_file(tmp / name)
        fsync_dir(tmp)
        ordered = [n for n in names if n != "config.json"] + (["config.json"] if "config.json" in names else [])
        for name in ordered:
            os.replace(tmp / name, out_dir / name)
        fsync_dir(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def read_log(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a kill
    return records


def truncate_log(path: Path, step: int) -> None:
    """Keep the records of steps <= `step` (a resumed run rewrites what came after its checkpoint)."""
    path = Path(path)
    if not path.is_file():
        return
    kept = [r for r in read_log(path) if int(r.get("step", 0)) <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)


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
    tmp = png_path.with_name(png_path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path
