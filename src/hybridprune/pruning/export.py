"""Export a (pruned) model as a plain Hugging Face checkpoint, written atomically.

Everything goes into a temporary sibling directory that is renamed into place only when complete,
so a crash or an error never leaves a half-written output directory.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..fsutil import atomic_directory

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "tokenizer.model", "added_tokens.json", "chat_template.jinja", "chat_template.json",
)
INFO_FILE = "hybridprune.json"


def copy_tokenizer_files(source: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        src = Path(source) / name
        if src.is_file():
            shutil.copy2(src, Path(dest) / name)
            copied.append(name)
    return copied


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

    The tokenizer comes from a tokenizer object or is copied from a checkpoint directory.
    """

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        elif tokenizer_from is not None:
            copy_tokenizer_files(tokenizer_from, tmp)
        info = dict(getattr(model, "hybridprune_info", {}) or {})
        if source is not None:
            info["source"] = str(source)
        info.update(metadata or {})
        if info:
            (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")

    return atomic_directory(out_dir, write, overwrite=overwrite)
