"""Export a (pruned) model as a plain Hugging Face checkpoint, written atomically.

Everything goes into a temporary sibling directory that is renamed into place only when complete,
so a crash or an error never leaves a half-written output directory (`fsutil.atomic_directory`).

The model's weights and config are rebuilt; everything else the source checkpoint ships is carried
over (`carry_over`): the generation config (its stop tokens and sampling defaults exist only
there), tokenizer files and the chat template in whatever file the source keeps it, the `auto_map`
code files (copied as files, never imported), and other small metadata such as the licence. Weights,
optimizer states and other large files are not. The model card is our own (`model_card`); the
source's is kept beside it under another name.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..checkpoint.carry import checkpoint_root, copy_file, copy_tree
from ..checkpoint.config_style import write_config
from ..output.atomic import MANIFEST, atomic_directory
from .model_card import earlier_rounds, portable_source, write_model_card

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "tokenizer.model", "added_tokens.json", "chat_template.jinja", "chat_template.json", "vocab.txt",
    "spiece.model", "sentencepiece.bpe.model",
)
INFO_FILE = "hybridprune.json"
GENERATION_CONFIG = "generation_config.json"
#: A distillation run's own records, which describe that run and not the model.
RUN_FILES = ("log.jsonl", "loss.png", "distill.json")
#: Files rebuilt by the export (or a run's records), never copied from the source.
REBUILT = ("config.json", INFO_FILE, MANIFEST, *RUN_FILES)
#: Weights and training states: never carried over.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx",
                   ".npz", ".npy", ".pkl", ".pickle", ".index.json")
#: Folders that hold metadata (transformers keeps extra chat templates in one); other folders are not carried.
CARRIED_FOLDERS = ("additional_chat_templates",)
#: Anything else this large is data, not metadata, and is not carried over (tokenizer files always are).
MAX_CARRY_BYTES = 16 * 2**20
#: Files that describe the source model itself: its model card, evaluation results, training logs and
#: plots. Carried into a pruned or distilled checkpoint they would state the parent's size and scores
#: as the child's, so they stay behind.
ABOUT_THE_SOURCE = ("readme", "eval", "training_log", "results")
ABOUT_THE_SOURCE_SUFFIXES = (".md", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".jsonl", ".log")


def copy_tokenizer_files(source: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    copied = []
    root = checkpoint_root(source)
    for name in TOKENIZER_FILES:
        src = Path(source) / name
        if (src.exists() or src.is_symlink()) and copy_file(src, Path(dest) / name, root):
            copied.append(name)
    return copied


def carried_files(source: str | os.PathLike, rebuilt: tuple[str, ...] = REBUILT) -> list[Path]:
    """The files of checkpoint `source` an export carries over: all but weights, rebuilt files, large
    files and the files that describe the source model itself (model card, evaluations, logs, plots).
    Links and special files are listed too: `carry.copy_file` decides whether they are safe to copy."""
    source = Path(source)
    out = []
    for p in sorted(source.iterdir()):
        if p.is_dir():
            continue
        name = p.name
        if name in rebuilt or name.startswith(".") or name.lower().endswith(WEIGHT_SUFFIXES):
            continue
        if name.lower().startswith(ABOUT_THE_SOURCE) or name.lower().endswith(ABOUT_THE_SOURCE_SUFFIXES):
            continue
        if name not in TOKENIZER_FILES and p.is_file() and p.stat().st_size > MAX_CARRY_BYTES:
            continue
        out.append(p)
    return out


#: tokenizer classes only transformers 5 resolves, and the class older readers (transformers 4, which
#: llama.cpp's converter and vLLM builds of 2025 use) load the same tokenizer.json with
PORTABLE_TOKENIZER_CLASSES = {"TokenizersBackend": "PreTrainedTokenizerFast"}


def portable_tokenizer_config(directory: str | os.PathLike) -> bool:
    """Give `directory/tokenizer_config.json` a `tokenizer_class` every reader resolves: transformers 5
    writes `TokenizersBackend`, which transformers 4 cannot import; `PreTrainedTokenizerFast` names the
    same fast tokenizer (transformers 5 aliases it). Returns whether the file was changed."""
    path = Path(directory) / "tokenizer_config.json"
    if not path.is_file() or not (Path(directory) / "tokenizer.json").is_file():
        return False
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    portable = PORTABLE_TOKENIZER_CLASSES.get(doc.get("tokenizer_class")) if isinstance(doc, dict) else None
    if portable is None:
        return False
    doc["tokenizer_class"] = portable
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return True


def carry_over(source: str | os.PathLike, dest: str | os.PathLike, *, rebuilt: tuple[str, ...] = REBUILT) -> list[str]:
    """Copy what `source` ships besides weights and config into `dest`.

    Files the export already wrote win (e.g. a tokenizer saved from an object), except the generation
    config: the one `save_pretrained` writes is derived from the rebuilt config and loses whatever
    only the source's file had, such as an extra end-of-turn id. `rebuilt` names files never copied.
    Only regular files inside the source are copied (`hybridprune.checkpoint.carry`); what is not is warned about.
    """
    dest = Path(dest)
    root = checkpoint_root(source)
    copied = []
    for folder in CARRIED_FOLDERS:
        if (Path(source) / folder).is_dir() and not (dest / folder).exists():
            if copy_tree(Path(source) / folder, dest / folder, root):
                copied.append(folder)
    for src in carried_files(source, rebuilt):
        target = dest / src.name
        if target.exists() and src.name != GENERATION_CONFIG:
            continue
        if copy_file(src, target, root):  # contents only: the output's permissions follow the umask
            copied.append(src.name)
    portable_tokenizer_config(dest)
    _warn_if_tokenizer_left_behind(Path(source), dest)
    return copied


def _warn_if_tokenizer_left_behind(source: Path, dest: Path) -> None:
    """Say plainly when a tokenizer file of the source did not reach the output (it was a link out of
    the checkpoint, or unreadable): the weights are right, but the output's tokenizer will not load
    until the user puts the files there."""
    missing = [name for name in TOKENIZER_FILES
               if (source / name).exists() or (source / name).is_symlink()
               if not (dest / name).exists()]
    if missing:
        warnings.warn(
            f"the output lacks the source's tokenizer file(s) {', '.join(missing)} (not carried over, see above), "
            "so its tokenizer may not load, or may differ from the source's: check those files and copy them into "
            "the output yourself",
            stacklevel=2)


def state_bytes(model) -> int:
    """Bytes of the model's tensors: about what its safetensors need on disk."""
    try:
        return sum(t.numel() * t.element_size() for t in model.state_dict().values())
    except Exception:  # noqa: BLE001 - only a hint for an error message
        return 0


def _source_shard_bytes(source: Path | None) -> int | None:
    """The source's largest safetensors shard, when it is sharded: the output is sharded alike."""
    if source is None or not (source / "model.safetensors.index.json").is_file():
        return None
    from ..checkpoint.files import CheckpointFiles

    try:
        return CheckpointFiles(source).largest_shard_bytes
    except (OSError, ValueError):
        return None


def _hub_renames(model) -> dict[str, str]:
    """Keys `save_pretrained` misnames for this family, and the Hub's names for them (see
    `Adapter.checkpoint_renames`)."""
    from ..architectures import UnsupportedArchitecture, get_adapter

    try:
        return get_adapter(model).checkpoint_renames(model.config)
    except UnsupportedArchitecture:
        return {}


def _rename_saved(directory: Path, renames: dict[str, str]) -> None:
    """Rename tensors in the safetensors files (and index) `save_pretrained` wrote into `directory`."""
    if not renames:
        return
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from ..checkpoint.files import INDEX_FILE

    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            keys, metadata = list(f.keys()), f.metadata()
        if any(k in renames for k in keys):
            tensors = load_file(str(path))
            save_file({renames.get(k, k): t for k, t in tensors.items()}, str(path), metadata=metadata)
    index = directory / INDEX_FILE
    if index.is_file():
        doc = json.loads(index.read_text())
        doc["weight_map"] = {renames.get(k, k): v for k, v in doc.get("weight_map", {}).items()}
        index.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


class NonFiniteWeights(ValueError):
    """An export would write NaN or infinite weights: refused, and nothing is written."""


def check_finite(tensors, what: str, cause: str) -> None:
    """Refuse (NonFiniteWeights) the first floating-point tensor of `tensors` ((name, tensor) pairs) that
    holds a NaN or an infinity, naming it and the likely `cause`: such a checkpoint loads and computes
    nothing but NaN. One `isfinite` pass per tensor, as it is about to be written."""
    import torch

    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            count = int((~torch.isfinite(tensor)).sum())
            raise NonFiniteWeights(f"{what} was not written: its tensor {name} holds {count:,} NaN or infinite "
                                   f"value(s); {cause}")


def _safetensors_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.safetensors"))


def dequantization(source: Path | None, model, written: Path) -> dict[str, Any] | None:
    """What was dequantised, where the source's config.json names a quantization (gpt-oss's MXFP4 experts) that
    the loaded model no longer has (transformers dequantised the weights on load and dropped its
    quantization_config): the method, the dtype written, and the weights' size before and after."""
    try:
        raw = json.loads((source / "config.json").read_text()) if source is not None else {}
    except (OSError, ValueError):
        return None
    quant = raw.get("quantization_config") if isinstance(raw, dict) else None
    if not quant or getattr(model.config, "quantization_config", None):
        return None
    method = quant.get("quant_method", "?") if isinstance(quant, dict) else "?"
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    before, after = _safetensors_bytes(source), _safetensors_bytes(written)
    return {"quant_method": method, "written_as": dtype, "source_weight_bytes": before, "output_weight_bytes": after,
            "note": f"the source's {method} weights were dequantised by transformers on load and are written "
                    f"unquantized in {dtype}: {before / 2**20:.1f} MiB of source weights, {after / 2**20:.1f} MiB "
                    "written (after pruning)"}


def export(
    model,
    out_dir: str | os.PathLike,
    *,
    tokenizer=None,
    tokenizer_from: str | os.PathLike | None = None,
    source: str | None = None,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `model` (safetensors + config), its tokenizer and `hybridprune.json` to `out_dir`.

    With a source checkpoint directory (`tokenizer_from`, else `source`) of the same model type, the
    config keeps the source's style (`config_style`) and the weights are sharded like the source's.

    The tokenizer comes from a tokenizer object or is copied from a checkpoint directory. Everything
    else the source ships is carried over from `tokenizer_from`, or else from `source` when that is a
    directory.
    """
    check_finite(model.state_dict().items(), "the pruned checkpoint",
                 "the model went non-finite in memory before the export (a source weight, or a conversion to a "
                 "narrower dtype that overflowed): check the source checkpoint, or prune at --dtype float32")
    carry_from = tokenizer_from if tokenizer_from is not None else source
    carry_from = Path(carry_from) if carry_from is not None and Path(carry_from).is_dir() else None

    shard = _source_shard_bytes(carry_from)

    def write(tmp: Path) -> None:
        # save_pretrained writes transformers' checkpoint key layout (e.g. Nemotron-H's `backbone.*` and
        # per-expert tensors): the Hub's. The config is then rewritten in the source's style.
        model.save_pretrained(tmp, safe_serialization=True, **({"max_shard_size": shard} if shard else {}))
        _rename_saved(tmp, _hub_renames(model))
        write_config(model.config, tmp, carry_from)  # without a source: as engines read it (for_engines)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if carry_from is not None:
            carry_over(carry_from, tmp)
        portable_tokenizer_config(tmp)
        info = dict(getattr(model, "hybridprune_info", {}) or {})
        if source is not None:
            info["source"] = portable_source(source)  # never a local path: the file travels with the checkpoint
        info.update(metadata or {})
        if (dequantized := dequantization(carry_from, model, tmp)) is not None:
            info["dequantized"] = dequantized
            warnings.warn(dequantized["note"], stacklevel=3)
        if rounds := earlier_rounds(source):  # a later round: the card compares with the original model
            info["earlier_rounds"] = rounds
        if info:
            (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")
        write_model_card(tmp, carry_from if carry_from is not None else source, info,
                         distillation=info.get("distillation"))

    return atomic_directory(out_dir, write, overwrite=overwrite, what="the checkpoint", size_hint=state_bytes(model))
