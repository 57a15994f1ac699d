"""One tensor of a streaming prune: mapped from its shard, checked, cut, cast and written in pieces.

The work is bound by memory traffic, so it avoids fresh memory: the source is mapped, not copied
(`CheckpointFiles.mapped`); the cut tensor is made and written piece by piece along its first dimension
(a few MiB each, reused by the allocator) rather than as a whole new tensor, since first-touching fresh
pages costs as much as the cut itself. Cuts are byte copies done by numpy's `take` on an integer view of
the same width: the same for every dtype (bf16, fp8, ...), and about three times faster than torch's
gather on CPU. Each shard's header is planned up front, so tensors are written at their own offsets and
several are worked on at once (`WORKERS`): peak memory is about that many source tensors.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from ..checkpoints import count_non_finite, max_abs, overflow_message
from ..safetensors_io import ShardWriter

#: Tensors worked on at once (each holds its mapped source tensor and one piece of its output).
WORKERS = max(1, min(3, os.cpu_count() or 1))
#: Bytes of output made and written at a time.
PIECE_BYTES = 8 * 2**20
_SAME_WIDTH_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class CastOverflow(ValueError):
    """A tensor's values do not fit the requested dtype."""


def _take(x: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """`x` keeping `index` along `dim`: a byte copy through an integer view of the same width."""
    as_int = x.view(_SAME_WIDTH_INT[x.dtype.itemsize]).numpy()
    return torch.from_numpy(np.take(as_int, index.numpy(), axis=dim)).view(x.dtype)


def pieces(src: torch.Tensor, keep: list[torch.Tensor | None], dtype: torch.dtype):
    """`src` cut to the indices `keep` (one per dimension, None = all) and cast to `dtype`, as consecutive
    pieces along its first dimension. A tensor that is neither cut nor cast is given as views of `src`."""
    if src.dim() == 0:
        yield src.to(dtype)
        return
    first = keep[0] if keep else None
    rows = len(first) if first is not None else src.shape[0]
    row_bytes = max(1, math.prod(src.shape[1:]) * src.dtype.itemsize)
    step = max(1, PIECE_BYTES // row_bytes)
    for a in range(0, rows, step):
        x = src[a:a + step] if first is None else _take(src, 0, first[a:a + step])
        for dim, index in enumerate(keep[1:], start=1):
            if index is not None:
                x = _take(x, dim, index)
        yield x if x.dtype == dtype else x.to(dtype)


def _checked(name: str, chunks, largest: float, dtype: torch.dtype):
    """Pass the pieces on, refusing one that overflowed `dtype` in the cast (only possible when the
    source's largest |value| exceeds the dtype's range)."""
    for piece in chunks:
        if piece.is_floating_point() and count_non_finite(piece):
            raise CastOverflow(overflow_message(name, largest, dtype))
        yield piece


def write_tensor(writer: ShardWriter, out_key: str, src: torch.Tensor, keep: list[torch.Tensor | None],
                 dtype: torch.dtype, name: str) -> int:
    """Cut, cast and write one tensor; returns the count of NaN/Inf values in the source (then nothing is
    checked for overflow: the source is refused anyway). `name` is how messages call the tensor."""
    bad = count_non_finite(src)
    chunks = pieces(src, keep, dtype)
    if not bad and dtype != src.dtype and dtype.is_floating_point and src.is_floating_point():
        largest = max_abs(src)
        if largest > torch.finfo(dtype).max:
            chunks = _checked(name, chunks, largest, dtype)
    writer.write(out_key, chunks)
    return bad
