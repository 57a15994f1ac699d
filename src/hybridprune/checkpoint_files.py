"""A safetensors checkpoint on disk, read lazily: its tensor names, shapes, dtypes and shards.

Key names are the checkpoint's own (e.g. Nemotron-H's Hub layout `backbone.layers.3.mixer.in_proj.weight`).
`model_key` maps them to the names the loaded transformers model uses (`model.layers.3...`) with the
renamings transformers itself applies when loading, so the adapters' slicing rules (written for model
keys) apply to files too, and an output can keep the source's key layout.

Tensors are read with plain file reads rather than through a memory map, and `ShardWriter` writes a
safetensors file tensor by tensor (its header is known up front from the planned shapes), so streaming
a checkpoint holds one tensor at a time: mapped pages of a whole shard would count towards the
process's resident memory.
"""

from __future__ import annotations

import json
import os
import struct
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
    offset: int = 0  # byte offset of the data in the file

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
_NAMES = {v: k for k, v in _DTYPES.items()}


def _read_header(path: Path) -> tuple[dict, int]:
    """The safetensors JSON header of `path` and the byte offset where the data starts."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("file shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000 or n > path.stat().st_size - 8:
            raise ValueError("header size out of range")
        return json.loads(f.read(n)), 8 + n


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
                header, start = _read_header(path)
                size = path.stat().st_size
                for key, entry in header.items():
                    if key == "__metadata__":
                        continue
                    begin, end = entry["data_offsets"]
                    info = TensorInfo(key, shard, tuple(entry["shape"]), _DTYPES[entry["dtype"]], start + begin)
                    if end - begin != info.nbytes or start + end > size:
                        raise ValueError(f"tensor {key} runs past the end of the file")
                    self.tensors[key] = info
            except Exception as exc:  # a truncated or corrupt file
                raise CheckpointFormatError(
                    f"cannot load the model in {self.dir}: {shard} is not a readable safetensors file ({exc})"
                ) from None

    def keys_in(self, shard: str) -> list[str]:
        return [k for k, t in self.tensors.items() if t.shard == shard]

    def open(self, shard: str):
        """A safetensors handle on `shard` (memory-mapped: for small reads such as fingerprint samples)."""
        return safe_open(str(self.dir / shard), framework="pt")

    def read(self, key: str) -> torch.Tensor:
        """Tensor `key`, read with plain file reads (no memory map)."""
        info = self.tensors[key]
        buf = bytearray(info.nbytes)
        with open(self.dir / info.shard, "rb") as handle:
            handle.seek(info.offset)
            got = handle.readinto(buf)
        if got != info.nbytes:
            raise CheckpointFormatError(f"cannot load the model in {self.dir}: {info.shard} is truncated at {key}")
        if not buf:
            return torch.empty(info.shape, dtype=info.dtype)
        return torch.frombuffer(buf, dtype=info.dtype).reshape(info.shape)

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
        self._reverse = [m.reverse_transform() for m in self._renamings[::-1]]
        self._converters = [m for m in mapping if isinstance(m, WeightConverter)]
        self._apply = apply_renamings

    def model_key(self, key: str) -> str:
        return self._apply(key, self._renamings) if self._renamings else key

    def checkpoint_key(self, model_key: str) -> str:
        """The name `save_pretrained` gives a model key in this model type's checkpoints."""
        return self._apply(model_key, self._reverse) if self._reverse else model_key

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


class ShardWriter:
    """Writes one safetensors file tensor by tensor, in a fixed order, holding none of them.

    The header (names, dtypes, shapes, offsets) is written first from the planned `layout`; each
    `write` then appends one tensor, which must come in layout order with the planned dtype and shape.
    """

    def __init__(self, path: Path, layout: list[tuple[str, torch.dtype, tuple[int, ...]]]) -> None:
        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        self._expected = []
        for key, dtype, shape in layout:
            n = torch.empty((), dtype=dtype).element_size()
            for s in shape:
                n *= s
            header[key] = {"dtype": _NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
            self._expected.append((key, dtype, tuple(shape)))
            offset += n
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned
        self._file = open(path, "wb")
        self._file.write(struct.pack("<Q", len(text)) + text)
        self._next = 0

    def write(self, key: str, tensor: torch.Tensor) -> None:
        name, dtype, shape = self._expected[self._next]
        if (key, tensor.dtype, tuple(tensor.shape)) != (name, dtype, shape):
            raise RuntimeError(f"shard writer expected {name} {dtype} {shape}, got {key} {tensor.dtype} {tuple(tensor.shape)}")
        data = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
        self._file.write(memoryview(data))
        self._next += 1

    def close(self) -> None:
        done = self._next == len(self._expected)
        self._file.close()  # also on a failed run: the caller's temporary directory is removed
        if not done:
            raise RuntimeError(f"shard writer closed after {self._next} of {len(self._expected)} tensors")
