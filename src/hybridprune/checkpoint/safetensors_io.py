"""One safetensors file, read and written tensor by tensor, exactly as strict as the safetensors library.

`read_header` checks a file's header by the rules the safetensors library applies when it opens it
(a JSON object of tensors with a known dtype, a shape and `data_offsets` of unsigned integers, string
metadata, byte spans that match their shapes and tile the data exactly, in order, with no gap and no
overlap), and refuses a name given twice, which the library would silently resolve; the library itself
then opens the file (`safe_open`), so nothing it would refuse gets through. Each refusal names the file,
the tensor and the rule, where the library's own message names neither.

A tensor's bytes are mapped from the file one tensor at a time (`mapped`): no copy, and the pages count
towards the process's memory only while that tensor is in use (mapping a whole shard would count all of
it). `ShardWriter` writes a file whose header is planned up front, each tensor at its own offset, so
several threads can write tensors of one file at once.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..output.documents import unique_keys
from .dtypes import DTYPES, DType, dtype_of

#: The safetensors library's limit on a header's size.
MAX_HEADER_BYTES = 100_000_000


class CheckpointFormatError(ValueError):
    """The checkpoint's safetensors files or index are missing, unreadable or inconsistent."""


#: Valid safetensors dtypes that hybridprune does not handle, and why.
UNSUPPORTED = {
    "F4": "packed 4-bit floats", "F6_E2M3": "packed 6-bit floats", "F6_E3M2": "packed 6-bit floats",
    "F8_E8M0": "exponent-only scales of a block-quantized format",
}


@dataclass(frozen=True)
class TensorInfo:
    key: str  # the name in the checkpoint
    shard: str  # file name inside the checkpoint directory (as the index gives it)
    shape: tuple[int, ...]
    dtype: DType
    offset: int = 0  # byte offset of the data in the file

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class HeaderError(ValueError):
    """One rule of the safetensors format broken; the message says which."""


#: `json.loads` hook: a JSON object naming a key twice is refused (json keeps the last silently)
no_duplicate_keys = unique_keys(lambda key: HeaderError(f"the name {key} is given twice"))


def _uint(value) -> bool:
    return type(value) is int and value >= 0


def _check_entry(key: str, entry) -> tuple[str, tuple[int, ...], int, int]:
    if not isinstance(entry, dict):
        raise HeaderError(f"tensor {key} is not described by an object in its header")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        raise HeaderError(f"tensor {key} has no dtype in its header")
    if dtype not in DTYPES:
        if dtype in UNSUPPORTED:
            raise HeaderError(f"tensor {key} has dtype {dtype} ({UNSUPPORTED[dtype]}), which hybridprune does not "
                       "support; dequantize the checkpoint first")
        raise HeaderError(f"tensor {key} has the unknown dtype {dtype!r}, which is not a safetensors dtype")
    if not isinstance(shape, list) or not all(_uint(s) for s in shape):
        raise HeaderError(f"tensor {key} has the shape {shape!r}; a shape is a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_uint(o) for o in offsets)
            or offsets[1] < offsets[0]):
        raise HeaderError(f"tensor {key} has the data_offsets {offsets!r}; they are [begin, end], non-negative "
                   "integers with begin <= end")
    nbytes = math.prod(shape) * DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise HeaderError(f"tensor {key} of shape {shape} and dtype {dtype} needs {nbytes} bytes, but its "
                   f"data_offsets span {offsets[1] - offsets[0]}")
    return dtype, tuple(shape), offsets[0], offsets[1]


def read_header(path: Path, shard: str | None = None) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """The tensors of safetensors file `path` (`shard` is its name in TensorInfo, default the file
    name) and its metadata, checked as the safetensors library checks them. Raises HeaderError."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise HeaderError(f"the file is {size} bytes long, shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or n > size - 8:
            raise HeaderError(f"its header claims {n} bytes, more than the file holds ({size}) or safetensors "
                       "allows: the file is truncated or not a safetensors file")
        text = f.read(n)
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=no_duplicate_keys)
    except HeaderError:
        raise
    except ValueError as exc:
        raise HeaderError(f"its header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise HeaderError("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise HeaderError("its __metadata__ is not a mapping of names to strings")
    spans = sorted((_check_entry(k, v)[2:], k) for k, v in header.items())
    data = size - 8 - n
    end, previous = 0, None
    for (begin, stop), key in spans:
        if begin != end:
            what = f"overlaps {previous}" if begin < end else f"leaves a gap of {begin - end} bytes before it"
            raise HeaderError(f"tensor {key} (bytes {begin}..{stop}) {what}: each tensor's bytes must follow the "
                       "previous one's")
        end, previous = stop, key
    if end != data:
        raise HeaderError(f"its tensors cover {end} bytes of data but the file holds {data}: the file is "
                   + ("truncated" if end > data else "followed by bytes no tensor claims"))
    name = shard or path.name
    tensors = {}
    for key, entry in header.items():
        dtype, shape, begin, _ = _check_entry(key, entry)
        tensors[key] = TensorInfo(key, name, shape, DTYPES[dtype], 8 + n + begin)
    _library_agrees(path, tensors)
    return tensors, metadata


def _library_agrees(path: Path, tensors: dict[str, TensorInfo]) -> None:
    """Open the file with the safetensors library itself: whatever it refuses is refused, and it must
    see the same tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            seen = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise HeaderError(f"the safetensors library refuses it: {str(exc).strip() or type(exc).__name__}") from None
    mine = {k: (t.dtype.name, t.shape) for k, t in tensors.items()}
    if seen != mine:
        raise HeaderError("the safetensors library reads its header differently")


class MappedFile:
    """An open safetensors file whose tensors are mapped one at a time (no copy)."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY)

    def tensor(self, info: TensorInfo, rows: tuple[int, int] | None = None) -> np.ndarray:
        """Tensor `info` (or its rows `lo:hi` along the first dimension) as an array of its storage type
        (`DType.storage`: bfloat16 as uint16), over a private, copy-on-write mapping of its bytes: nothing
        is read until it is used, writes to it never reach the file, and the pages are unmapped when the
        array (and every view of it) is freed."""
        shape, offset, nbytes = info.shape, info.offset, info.nbytes
        if rows is not None and shape:
            row = nbytes // shape[0] if shape[0] else 0
            shape = (rows[1] - rows[0],) + shape[1:]
            offset, nbytes = offset + rows[0] * row, (rows[1] - rows[0]) * row
        storage = info.dtype.storage
        if nbytes == 0:
            return np.empty(shape, dtype=storage)
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        mm = mmap.mmap(self._fd, offset - start + nbytes, access=mmap.ACCESS_COPY, offset=start)
        return np.frombuffer(mm, dtype=storage, count=nbytes // storage.itemsize, offset=offset - start).reshape(shape)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> MappedFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def raw_bytes(a: np.ndarray) -> memoryview:
    """The bytes of an array, without a copy where it is contiguous."""
    flat = np.ascontiguousarray(a).reshape(-1)
    if flat.size == 0:
        return memoryview(b"")
    return memoryview(flat.view(np.uint8))


class ShardWriter:
    """Writes one safetensors file from a planned layout: the header first, then each tensor at its own
    offset, in any order and from any thread. `close` checks every tensor was written in full.
    """

    def __init__(self, path: Path, layout: list[tuple[str, DType, tuple[int, ...]]]) -> None:
        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        self._plan: dict[str, tuple[int, int, DType, tuple[int, ...]]] = {}
        for key, dtype, shape in layout:
            dtype = dtype_of(dtype)
            n = math.prod(shape) * dtype.itemsize
            header[key] = {"dtype": dtype.name, "shape": list(shape), "data_offsets": [offset, offset + n]}
            self._plan[key] = (offset, n, dtype, tuple(shape))
            offset += n
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned
        self._start = 8 + len(text)
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 - closed by close/discard
        self._fd = self._file.fileno()
        self._written: dict[str, int] = {}
        self._lock = threading.Lock()
        os.pwrite(self._fd, struct.pack("<Q", len(text)) + text, 0)
        os.ftruncate(self._fd, self._start + offset)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._plan[key][3]

    def write(self, key: str, data: np.ndarray | Iterable[np.ndarray], at: int = 0) -> None:
        """Write tensor `key`: an array of its dtype's storage type, or consecutive pieces of it along the
        first dimension starting `at` bytes into it (several calls may write parts of one tensor, from
        any thread)."""
        begin, n, planned, shape = self._plan[key]
        if isinstance(data, np.ndarray):
            if tuple(data.shape) != shape:
                raise RuntimeError(f"shard writer expected {key} of shape {shape}, got {tuple(data.shape)}")
            data = [data]
        pieces = data
        first = at
        for piece in pieces:
            if piece.dtype != planned.storage:
                raise RuntimeError(f"shard writer expected {key} as {planned} (stored as {planned.storage}), got "
                                   f"{piece.dtype}")
            view = raw_bytes(piece)
            if at + len(view) > n:
                raise RuntimeError(f"shard writer got more than the {n} bytes of {key} {shape}")
            done = 0
            while done < len(view):
                done += os.pwrite(self._fd, view[done:], self._start + begin + at + done)
            at += len(view)
        with self._lock:
            self._written[key] = self._written.get(key, 0) + at - first

    def discard(self) -> None:
        """Close the file of a failed run (the caller's temporary directory is removed)."""
        self._file.close()

    def close(self) -> None:
        self.discard()
        missing = [k for k, (_, n, _, _) in self._plan.items() if self._written.get(k, 0) != n]
        if missing:
            raise RuntimeError(f"shard writer closed with {len(missing)} tensors not written in full (e.g. {missing[0]})")
