"""Training checkpoints: written atomically, validated on load, the last K kept.

A checkpoint is a directory `step-XXXXXXXX/` under `<out>/checkpoints/` holding

- `model.safetensors`: the student's weights (tied tensors stored once, their aliases in the metadata);
- `optimizer.pt`, `scheduler.pt`: state dicts, read back with `torch.load(weights_only=True)`;
- `rng.pt`: the RNG states of every process (torch, CUDA, Python, NumPy);
- `state.json`, written last: step, data position, the settings that define the run, and the size of
  every other file.

It is written into `.tmp-step-XXXXXXXX-<pid>/`, every file and the directory are fsynced, and only then
renamed to its final name (and the parent fsynced). A process killed at any point leaves either the
complete new checkpoint or a temporary directory that loading ignores (and the next run removes), so
resuming always finds the previous good one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

import torch

from ..output.atomic import follow_umask, writing
from ..output.documents import DocumentError, Map, NonNegative, OneOf, Optional, inside, parse, problem, read_document
from .config import DistillError

FORMAT_VERSION = 1
#: state.json as resuming reads it (`resume.py`): the files and their sizes, the step, what defines the run
STATE_SHAPE = {"format": OneOf(FORMAT_VERSION), "step": NonNegative(int), "files": Map(NonNegative(int)),
               "total_steps?": Optional(int), "world_size?": Optional(int), "parallel?": Optional(str),
               "trajectory": dict, "data?": dict}
PREFIX = "step-"
TMP_PREFIX = ".tmp-"
STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.pt"
SCHED_FILE = "scheduler.pt"
RNG_FILE = "rng.pt"
CHECKPOINT_DIR = "checkpoints"


class CheckpointError(DistillError):
    """A checkpoint directory is missing, incomplete or unreadable."""


# ---------------------------------------------------------------------------------------------- I/O


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def step_dir_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def _dedupe_shared(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """safetensors refuses tensors that share memory (tied embeddings): store each once."""
    seen: dict[tuple, str] = {}
    unique, aliases = {}, {}
    for name, t in state.items():
        key = (t.device.type, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if t.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        unique[name] = t.detach().contiguous().cpu()
    return unique, aliases


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    unique, aliases = _dedupe_shared(state)
    save_file(unique, str(path), metadata={"format": "pt", "aliases": json.dumps(aliases)})


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise CheckpointError(f"cannot read {path}: {e}") from None
    fix = "the checkpoint was not written by hybridprune, or was changed: resume from another one"
    try:
        aliases = parse(meta.get("aliases", "{}"), f"{path}: metadata 'aliases'", fix)
        found = problem(aliases, Map(OneOf(*state)))  # each tied weight names a tensor stored in the file
    except DocumentError as exc:
        raise CheckpointError(str(exc)) from None
    if found:
        raise CheckpointError(f"{path}: metadata 'aliases': {found}; {fix}")
    for alias, target in aliases.items():
        state[alias] = state[target]
    return state


def load_torch(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot read {path}: {e}") from None


# ---------------------------------------------------------------------------------------------- RNG


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        name, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [name, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(cached)]
    except ImportError:
        pass
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype("uint32"), pos, has_gauss, cached))


def _tuplify(x):
    if isinstance(x, (list, tuple)):
        return tuple(_tuplify(v) for v in x)
    return x


# ---------------------------------------------------------------------------------------- save/load


def write_checkpoint(
    root: Path,
    step: int,
    *,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict,
    scheduler_state: dict,
    rng_states: list[dict],
    state: dict,
    keep_last: int,
) -> Path:
    """Write checkpoint `step` under `root` atomically; delete all but the newest `keep_last`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f"{TMP_PREFIX}{step_dir_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    files = {}

    def done(name: str) -> None:
        fsync_file(tmp / name)
        files[name] = (tmp / name).stat().st_size

    try:
        with writing(f"checkpoint {final.name}", root):  # safetensors and torch.save raise their own types
            save_weights(model_state, tmp / MODEL_FILE)
            done(MODEL_FILE)
            torch.save(optimizer_state, tmp / OPTIM_FILE)
            done(OPTIM_FILE)
            torch.save(scheduler_state, tmp / SCHED_FILE)
            done(SCHED_FILE)
            torch.save(rng_states, tmp / RNG_FILE)
            done(RNG_FILE)
            meta = dict(state)
            meta.update({"format": FORMAT_VERSION, "step": int(step), "files": files, "saved_at": time.time()})
            (tmp / STATE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
            fsync_file(tmp / STATE_FILE)
            follow_umask(tmp)  # safetensors writes 0600
            fsync_dir(tmp)
    except BaseException:  # a full disk, say: leave the previous checkpoints and nothing else
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():  # re-saving a step (e.g. a rerun that stopped at the same step)
        old = root / f"{TMP_PREFIX}old-{step_dir_name(step)}-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    fsync_dir(root)
    prune_checkpoints(root, keep_last)
    return final


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Finished checkpoint directories under `root`, oldest first (not validated)."""
    root = Path(root)
    out = []
    if not root.is_dir():
        return out
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(PREFIX):
            try:
                out.append((int(p.name[len(PREFIX) :]), p))
            except ValueError:
                continue
    return sorted(out)


def prune_checkpoints(root: Path, keep_last: int) -> None:
    ckpts = list_checkpoints(root)
    for _, p in ckpts[: max(0, len(ckpts) - keep_last)]:
        shutil.rmtree(p, ignore_errors=True)


def remove_stale_tmp(root: Path) -> list[Path]:
    """Remove temporary directories left by a run killed while saving."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith(TMP_PREFIX):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def validate_checkpoint(path: Path) -> dict:
    """The checkpoint's state, or CheckpointError saying what is wrong with it."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    sf = path / STATE_FILE
    if not os.path.lexists(sf):
        raise CheckpointError(f"{path} is not a complete checkpoint: {STATE_FILE} is missing")
    fix = "this checkpoint was not written by this version of hybridprune, or was changed: resume from another one"
    try:
        state = read_document(sf, STATE_SHAPE, fix=fix, non_finite=True)  # settings may hold an infinity
        files = {inside(path, name, what=f"{sf}: files", fix=fix): size for name, size in state["files"].items()}
    except DocumentError as exc:
        raise CheckpointError(f"{path} is corrupt: {exc}") from None
    for f, size in files.items():
        name = f.name
        if not f.is_file():
            raise CheckpointError(f"{path} is incomplete: {name} is missing")
        if f.stat().st_size != size:
            raise CheckpointError(f"{path} is corrupt: {name} has {f.stat().st_size} bytes, expected {size}")
    for name in (MODEL_FILE, OPTIM_FILE, SCHED_FILE, RNG_FILE):
        if name not in state.get("files", {}):
            raise CheckpointError(f"{path} is incomplete: {name} is not recorded in {STATE_FILE}")
    return state


def find_resume_checkpoint(path: str | os.PathLike, warn=print) -> tuple[Path, dict]:
    """Resolve `--resume PATH`: a run directory (newest valid checkpoint), its `checkpoints/` folder,
    or one checkpoint directory. Invalid newer checkpoints are skipped with a warning."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"--resume: {path} does not exist")
    if (path / STATE_FILE).exists() or path.name.startswith(PREFIX):
        return path, validate_checkpoint(path)
    root = path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path
    ckpts = list_checkpoints(root)
    if not ckpts:
        raise CheckpointError(
            f"--resume: no checkpoint in {path} (expected {root}/{PREFIX}XXXXXXXX/ directories "
            "written by an earlier distill run)"
        )
    problems = []
    for _, p in reversed(ckpts):
        try:
            state = validate_checkpoint(p)
        except CheckpointError as e:
            problems.append(str(e))
            warn(f"skipping checkpoint {p.name}: {e}")
            continue
        return p, state
    raise CheckpointError("--resume: no usable checkpoint in " + str(root) + ":\n  " + "\n  ".join(problems))
