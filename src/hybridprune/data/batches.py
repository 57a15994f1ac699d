"""``TokenSamples``: fixed-length token windows with attention masks, batching and sharding."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset


@dataclass(eq=False)
class TokenSamples(Dataset):
    """``N`` samples of ``T`` tokens: ``input_ids`` and ``attention_mask``, both ``LongTensor[N, T]``.

    Positions with mask 0 are padding (only ever at the end of the last sample, when the tail of a
    split was kept with ``pad_last=True``). ``meta`` records where the samples came from.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [N, T], got shape {tuple(self.input_ids.shape)}")
        if self.attention_mask.shape != self.input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(self.attention_mask.shape)} != input_ids shape {tuple(self.input_ids.shape)}"
            )
        self.input_ids = self.input_ids.long()
        self.attention_mask = self.attention_mask.long()

    # ---- Dataset protocol ------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[i], "attention_mask": self.attention_mask[i]}

    def __repr__(self) -> str:
        src = self.meta.get("source", "?")
        split = self.meta.get("split", "?")
        return f"TokenSamples(n={len(self)}, seq_len={self.seq_len}, source={src!r}, split={split!r})"

    # ---- shape -----------------------------------------------------------------------------------
    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def num_tokens(self) -> int:
        """Real (unpadded) tokens across all samples."""
        return int(self.attention_mask.sum())

    # ---- views -----------------------------------------------------------------------------------
    def batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of ``batch_size`` samples in order; the last, partial batch is kept."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            yield {
                "input_ids": self.input_ids[start : start + batch_size],
                "attention_mask": self.attention_mask[start : start + batch_size],
            }

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def select(self, indices: Sequence[int] | torch.Tensor | slice) -> TokenSamples:
        """A new ``TokenSamples`` holding the given samples, in the given order."""
        if isinstance(indices, slice):
            idx = torch.arange(len(self))[indices]
        else:
            idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        return TokenSamples(self.input_ids[idx].clone(), self.attention_mask[idx].clone(), dict(self.meta))

    def shard(self, rank: int, world_size: int, *, even: bool = False) -> TokenSamples:
        """The samples of one rank: ``rank, rank + world_size, ...`` (disjoint, deterministic).

        With ``even=True`` the trailing ``len % world_size`` samples are dropped first, so every rank
        gets the same number of samples (what a collective-synchronised loop needs).
        """
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        n = len(self) - (len(self) % world_size if even else 0)
        out = self.select(torch.arange(rank, n, world_size))
        out.meta.update(shard=(rank, world_size))
        return out

    # ---- identity --------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """A short hash of the token content (ids and mask), e.g. to tie scores to their data."""
        h = hashlib.sha256()
        h.update(str(tuple(self.input_ids.shape)).encode())
        h.update(self.input_ids.contiguous().numpy().tobytes())
        h.update(self.attention_mask.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]
