"""A safetensors checkpoint on disk, read lazily: its tensor names, shapes, dtypes and shards.

Key names are the checkpoint's own (e.g. Nemotron-H's Hub layout `backbone.layers.3.mixer.in_proj.weight`).
`model_key` maps them to the names the loaded transformers model uses (`model.layers.3...`) with the
renamings transformers itself applies when loading, so the adapters' slicing rules (written for model
keys) apply to files too, and an output can keep the source's key layout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class CheckpointFormatError(ValueError):
    """The checkpoint's safetensors files or index are missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class TensorInfo:
    key: str  # the name in the checkpoint
    shard: str  # file name inside the checkpoint directory
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * torch.empty((), dtype=self.dtype).element_size()


_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


class CheckpointFiles:
    """The tensors of a checkpoint directory (one `model.safetensors`, or shards with an index)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        index = self.dir / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as exc:
                raise CheckpointFormatError(f"cannot load the model in {self.dir}: {INDEX_FILE} is not a safetensors index ({exc})") from None
            shards = sorted(set(weight_map.values()))
        elif (self.dir / SINGLE_FILE).is_file():
            shards = [SINGLE_FILE]
        else:
            found = sorted(p.name for p in self.dir.glob("*.safetensors"))
            if not found:
                raise CheckpointFormatError(
                    f"cannot load the model in {self.dir}: no safetensors weights ({SINGLE_FILE} or {INDEX_FILE})"
                )
            shards = found
        self.shards = shards
        self.tensors: dict[str, TensorInfo] = {}
        for shard in shards:
            path = self.dir / shard
            if not path.is_file():
                raise CheckpointFormatError(f"cannot load the model in {self.dir}: shard {shard} listed in {INDEX_FILE} is missing")
            try:
                with safe_open(str(path), framework="pt") as f:
                    for key in f.keys():
                        sl = f.get_slice(key)
                        self.tensors[key] = TensorInfo(key, shard, tuple(sl.get_shape()), _DTYPES[sl.get_dtype()])
            except Exception as exc:  # a truncated or corrupt file
                raise CheckpointFormatError(
                    f"cannot load the model in {self.dir}: {shard} is not a readable safetensors file ({exc})"
                ) from None

    def keys_in(self, shard: str) -> list[str]:
        return [k for k, t in self.tensors.items() if t.shard == shard]

    def open(self, shard: str):
        return safe_open(str(self.dir / shard), framework="pt")

    @property
    def largest_shard_bytes(self) -> int:
        return max((self.dir / s).stat().st_size for s in self.shards)


class KeyMap:
    """Checkpoint key -> model key, with the renamings transformers applies on load for this model type."""

    def __init__(self, model_type: str) -> None:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, apply_renamings

        mapping = get_checkpoint_conversion_mapping(model_type) or []
        self._renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
        self._converters = [m for m in mapping if isinstance(m, WeightConverter)]
        self._apply = apply_renamings

    def model_key(self, key: str) -> str:
        return self._apply(key, self._renamings) if self._renamings else key

    def needs_conversion(self, key: str) -> bool:
        """True for keys that transformers merges or splits on load (e.g. per-expert MoE weights)."""
        model_key = self.model_key(key)
        return any(c.rename_source_key(model_key)[1] is not None for c in self._converters)


def sample_index(shape: tuple[int, ...], rows: int = 8, width: int = 256) -> list[tuple[slice, ...]]:
    """A few small, evenly spaced windows of a tensor (row i, first `width` entries of its first column
    block): what a fingerprint reads instead of the whole tensor. Works the same on torch tensors and
    safetensors slices."""
    if not shape or shape[0] == 0:
        return [tuple()]
    n = shape[0]
    picks = sorted({round(j * (n - 1) / max(rows - 1, 1)) for j in range(rows)})
    tail = (slice(0, 1),) * max(len(shape) - 2, 0) + ((slice(0, width),) if len(shape) >= 2 else ())
    return [(slice(i, i + 1),) + tail for i in picks]
