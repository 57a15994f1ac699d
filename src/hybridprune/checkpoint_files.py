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
import re
import struct
from collections.abc import Mapping
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


@dataclass(frozen=True)
class StackedSlice:
    """A checkpoint tensor that transformers stacks with its siblings into one model tensor on load
    (a `MergeModulelist` conversion: Nemotron-H's per-expert `experts.{j}.up_proj.weight` become
    `experts.up_proj [E, F, H]`). It is slice `index` of the model tensor `target` along `dim`;
    `span` is where `index` is written in the checkpoint key, so an output can renumber it."""

    target: str
    index: int
    dim: int
    span: tuple[int, int]


class KeyMap:
    """Checkpoint key -> model key, with the renamings transformers applies on load for this model type.

    Conversions that stack per-expert tensors into one (`MergeModulelist`, read from transformers'
    own conversion mapping) are understood too (`stacked`), so a checkpoint in the Hub's per-expert
    layout can be checked, fingerprinted and sliced tensor by tensor; any other conversion is
    reported by `needs_conversion` and refused by the streaming prune.
    """

    def __init__(self, model_type: str) -> None:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
        from transformers.core_model_loading import (
            MergeModulelist, WeightConverter, WeightRenaming, apply_renamings,
        )

        mapping = get_checkpoint_conversion_mapping(model_type) or []
        self._renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
        self._reverse = [m.reverse_transform() for m in self._renamings[::-1]]
        self._converters = [m for m in mapping if isinstance(m, WeightConverter)]
        self._apply = apply_renamings
        # Stacking converters: one source pattern with one `*` (the slice index), one MergeModulelist.
        self._stacks = []
        for c in self._converters:
            ops = list(c.operations)
            if (len(c.source_patterns) == 1 and c.source_patterns[0].count("*") == 1 and len(ops) == 1
                    and isinstance(ops[0], MergeModulelist)):
                pattern = re.escape(c.source_patterns[0]).replace(r"\*", r"(\d+)") + r"(?!\w)"
                self._stacks.append((c, re.compile(pattern), ops[0].dim))

    def model_key(self, key: str) -> str:
        return self._apply(key, self._renamings) if self._renamings else key

    def checkpoint_key(self, model_key: str) -> str:
        """The name `save_pretrained` gives a model key in this model type's checkpoints."""
        return self._apply(model_key, self._reverse) if self._reverse else model_key

    def needs_conversion(self, key: str) -> bool:
        """True for keys that transformers merges or splits on load (e.g. per-expert MoE weights)."""
        model_key = self.model_key(key)
        return any(c.rename_source_key(model_key)[1] is not None for c in self._converters)

    def stacked(self, key: str) -> StackedSlice | None:
        """Where checkpoint tensor `key` lands in the model if transformers stacks it with its
        siblings on load, else None."""
        model_key = self.model_key(key)
        for converter, regex, dim in self._stacks:
            target, matched = converter.rename_source_key(model_key)
            if matched is None:
                continue
            found = list(regex.finditer(key))
            if not found:  # the renamings moved the slice index: cannot write the key back
                return None
            m = found[-1]
            return StackedSlice(target, int(m.group(1)), dim, m.span(1))
        return None

    def sliceable(self, key: str) -> bool:
        """Whether a tensor-by-tensor reader can place `key` in the model: renamed only, or stacked."""
        return not self.needs_conversion(key) or self.stacked(key) is not None

    def model_shapes(self, shapes: Mapping[str, tuple[int, ...]],
                     expected: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, tuple[int, ...]]:
        """The model keys and shapes that checkpoint tensors (`shapes`, by checkpoint key) load into:
        renamed, and the slices of a stacked tensor merged into one entry. Raises
        CheckpointFormatError naming the checkpoint keys a stacked tensor lacks (gaps in its slice
        numbers, or fewer slices than `expected` has) or whose shapes disagree."""
        out: dict[str, tuple[int, ...]] = {}
        stacks: dict[str, dict[int, tuple[str, tuple[int, ...]]]] = {}
        where: dict[str, StackedSlice] = {}
        for key, shape in shapes.items():
            s = self.stacked(key)
            if s is None:
                out[self.model_key(key)] = tuple(shape)
                continue
            stacks.setdefault(s.target, {})[s.index] = (key, tuple(shape))
            where.setdefault(s.target, s)
        for target, parts in stacks.items():
            s = where[target]
            example = parts[s.index][0]
            count = max(parts) + 1
            if expected is not None and target in expected and len(expected[target]) > s.dim:
                count = max(count, expected[target][s.dim])
            missing = [f"{example[: s.span[0]]}{j}{example[s.span[1]:]}" for j in range(count) if j not in parts]
            if missing:
                more = f" ({len(missing)} in all)" if len(missing) > 3 else ""
                raise CheckpointFormatError(
                    f"the checkpoint lacks {', '.join(missing[:3])}{more}: transformers stacks these per-expert "
                    f"tensors into {target}, which needs all {count} of them. The checkpoint is incomplete; "
                    "download or export it again."
                )
            slice_shapes = {shape for _, shape in parts.values()}
            if len(slice_shapes) > 1:
                raise CheckpointFormatError(
                    f"the per-expert tensors of {target} differ in shape ({sorted(slice_shapes)}): "
                    "the checkpoint is damaged or mixes two models"
                )
            (shape,) = slice_shapes
            out[target] = shape[: s.dim] + (count,) + shape[s.dim:]
        return out


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
