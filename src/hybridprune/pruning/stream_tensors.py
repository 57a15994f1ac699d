"""The tensors of a streaming prune: mapped from their shard, checked, cut, cast and written in blocks.

The work is bound by memory traffic, so it avoids fresh memory: the source is mapped, not copied
(`MappedFile.tensor`); the cut tensor is made and written piece by piece along its first dimension
(a few MiB each, reused by the allocator) rather than as a whole new tensor, since first-touching fresh
pages costs as much as the cut itself. Tensors are numpy arrays of their storage type (`DType.storage`:
bf16 as uint16, fp8 as uint8), so a cut is a byte copy by numpy's `take`, the same for every dtype and
about three times faster than torch's gather on CPU; NaN/Inf are found from the bits. Torch is imported
only for a cast to another dtype (its rounding, as the in-memory path's). Each shard's header is planned up front, so every tensor has its place in its file: a
large tensor is split into blocks of rows (`BLOCK_BYTES` of source), and `WORKERS` threads work on
blocks of any tensors at once. Peak memory is about `WORKERS` blocks, whatever the tensors' sizes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..checkpoint.dtypes import DType, count_non_finite
from ..checkpoint.safetensors_io import MappedFile, ShardWriter, TensorInfo

#: Blocks worked on at once (each holds its mapped source rows and one piece of its output).
WORKERS = max(1, min(4, os.cpu_count() or 1))
#: Bytes of source rows in one block (a tensor smaller than this, or with one huge row, is one block).
BLOCK_BYTES = 64 * 2**20
#: Bytes of output made and written at a time.
PIECE_BYTES = 8 * 2**20


class CastOverflow(ValueError):
    """A tensor's values do not fit the requested dtype."""


@dataclass(frozen=True)
class Block:
    """Output rows `out` of a tensor, made from its source rows `src` (the blocks of a tensor cover all
    its source rows, so every value is checked, kept or not)."""

    out: tuple[int, int]
    src: tuple[int, int]


def blocks(info: TensorInfo, first: np.ndarray | None) -> list[Block]:
    """The blocks of tensor `info` cut to rows `first` (None = all) along its first dimension."""
    if not info.shape:
        return [Block((0, 0), (0, 0))]
    n = info.shape[0]
    kept = n if first is None else len(first)
    per = max(1, BLOCK_BYTES // max(1, info.nbytes // max(n, 1)))
    if first is None:
        return [Block((a, min(a + per, n)), (a, min(a + per, n))) for a in range(0, n, per)] or [Block((0, 0), (0, 0))]
    if kept < 2 or not bool((first[1:] > first[:-1]).all()):  # not increasing: one block
        return [Block((0, kept), (0, n))]
    out, lo = [], 0
    for a in range(0, kept, per):
        b = min(a + per, kept)
        hi = int(first[b]) if b < kept else n  # up to the next block's first row: no source row is skipped
        out.append(Block((a, b), (lo, hi)))
        lo = hi
    return out


def _cast(x: np.ndarray, source: DType, target: DType) -> np.ndarray:
    """Stored values `x` of `source` cast to `target` by torch (imported only for a cast), as `target`'s
    storage type."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x)).view(source.torch).to(target.torch)
    return t.view(getattr(torch, str(target.storage))).numpy()


def pieces(src: np.ndarray, keep: list[np.ndarray | None], source: DType, target: DType):
    """Stored values `src` of `source` cut to the indices `keep` (one per dimension, None = all) and cast
    to `target`, as consecutive pieces along the first dimension. Cuts are `take`s on the storage type
    (byte copies); a tensor that is neither cut nor cast is given as views of `src`."""
    if src.ndim == 0:
        yield src if source == target else _cast(src, source, target)
        return
    first = keep[0] if keep else None
    rows = len(first) if first is not None else src.shape[0]
    row_bytes = max(1, math.prod(src.shape[1:]) * src.dtype.itemsize)
    step = max(1, PIECE_BYTES // row_bytes)
    for a in range(0, rows, step):
        x = src[a:a + step] if first is None else np.take(src, first[a:a + step], axis=0)
        for dim, index in enumerate(keep[1:], start=1):
            if index is not None:
                x = np.take(x, index, axis=dim)
        yield x if source == target else _cast(x, source, target)


def _checked(name: str, chunks, largest: float, dtype: DType):
    """Pass the pieces on, refusing one that overflowed `dtype` in the cast (only possible when the
    source's largest |value| exceeds the dtype's range)."""
    from ..checkpoint.load import overflow_message

    for piece in chunks:
        if count_non_finite(piece, dtype):
            raise CastOverflow(overflow_message(name, largest, dtype.torch))
        yield piece


def _largest(src: np.ndarray, source: DType) -> float:
    """The largest |value| of finite stored values (by torch: only asked before a cast)."""
    import torch

    from ..checkpoint.load import max_abs

    return max_abs(torch.from_numpy(np.ascontiguousarray(src)).view(source.torch))


def write_block(writer: ShardWriter, out_key: str, source: MappedFile, info: TensorInfo, block: Block,
                keep: list[np.ndarray | None], dtype: DType, name: str) -> int:
    """Cut, cast and write one block of a tensor; returns the count of NaN/Inf values in its source rows
    (then nothing is checked for overflow: the source is refused anyway). `name` is how messages call
    the tensor."""
    src = source.tensor(info, block.src if info.shape else None)
    bad = count_non_finite(src, info.dtype)
    if keep and keep[0] is not None:
        keep = [keep[0][block.out[0]:block.out[1]] - block.src[0], *keep[1:]]
    chunks = pieces(src, keep, info.dtype, dtype)
    if not bad and dtype != info.dtype and dtype.is_floating_point and info.dtype.is_floating_point:
        import torch

        largest = _largest(src, info.dtype)
        if largest > torch.finfo(dtype.torch).max:
            chunks = _checked(name, chunks, largest, dtype)
    out_row = math.prod(writer.shape(out_key)[1:]) * dtype.itemsize if info.shape else 0
    writer.write(out_key, chunks, at=block.out[0] * out_row)
    return bad
