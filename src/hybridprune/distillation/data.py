"""Token data for distillation: a uniform view of the inputs, and a deterministic global-batch order.

The order of samples depends only on the seed, the dataset size and the global batch, never on the
number of processes: global sample `k` of the run is sample `perm_e[k mod N]` of epoch
`e = k div N`, where `perm_e` is a permutation drawn from a generator seeded with `(seed, e)`. Step
`s` uses global samples `s·G .. s·G + G − 1`; process `r` of `W` takes the `r`-th contiguous `G / W`
of them and splits it into micro-batches. So the data position of a run is just its step, a resumed
run reads exactly what an uninterrupted one would, and `W` processes see the global batches of one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from .config import DistillError


class TokenData:
    """`len(data)` samples of `seq_len` tokens; `get(indices)` returns `(input_ids, attention_mask,
    loss_mask)`, the loss mask None unless the data has one (chat data: the positions that count)."""

    def __init__(self, source, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 loss_mask: torch.Tensor | None = None):
        self._source = source
        self._ids = input_ids
        self._mask = attention_mask
        self._loss = loss_mask
        self._batched = input_ids is None and callable(getattr(source, "get_batch", None))
        if input_ids is not None:
            self._n, self.seq_len = int(input_ids.shape[0]), int(input_ids.shape[1])
        else:
            self._n = len(source)
            self.seq_len = int(self._item(0)[0].shape[0]) if self._n else 0

    def __len__(self) -> int:
        return self._n

    def _item(self, i: int):
        item = self._source[i]
        if isinstance(item, torch.Tensor):
            ids, mask = item, None
        elif isinstance(item, dict) and "input_ids" in item:
            ids, mask = item["input_ids"], item.get("attention_mask")
        else:
            raise DistillError(
                "training data items must be dicts with 'input_ids' (and optionally 'attention_mask') "
                f"LongTensors, or LongTensors; got {type(item).__name__}"
            )
        ids = torch.as_tensor(ids)
        mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask)
        loss = item.get("loss_mask") if isinstance(item, dict) else None
        loss = None if loss is None else torch.as_tensor(loss)
        if ids.dim() != 1 or mask.shape != ids.shape or (loss is not None and loss.shape != ids.shape):
            raise DistillError(
                f"sample {i}: input_ids must be 1-D with an attention_mask (and loss_mask) of the same shape, got "
                f"{tuple(ids.shape)} and {tuple(mask.shape)}"
            )
        return ids, mask, loss

    def get(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch(indices)[:2]

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """`(input_ids, attention_mask, loss_mask or None)` of the given samples."""
        if self._ids is not None:
            idx = torch.as_tensor(list(indices), dtype=torch.long)
            return self._ids[idx], self._mask[idx], None if self._loss is None else self._loss[idx]
        if self._batched:
            return self._source.get_batch(list(indices))
        items = [self._item(int(i)) for i in indices]
        lengths = {int(ids.shape[0]) for ids, _, _ in items}
        if lengths != {self.seq_len}:
            raise DistillError(
                f"all samples must have the same length ({self.seq_len}); found lengths {sorted(lengths)}. "
                "Pad or pack them to a fixed seq_len first."
            )
        losses = [c for _, _, c in items]
        loss = None
        if any(c is not None for c in losses):
            loss = torch.stack([c if c is not None else m for (_, m, c) in items])
        return torch.stack([a for a, _, _ in items]), torch.stack([m for _, m, _ in items]), loss

    def max_token_id(self) -> int | None:
        """The largest token id, when the tokens are held as one tensor or the source knows it (else None:
        checked per batch)."""
        if self._ids is None:
            known = getattr(self._source, "max_token_id", None)
            return known() if callable(known) else None
        return int(self._ids.max()) if self._ids.numel() else None

    def fingerprint(self) -> str:
        """A cheap identity of the data: size, length and the tokens of a few samples."""
        h = hashlib.sha256(f"{self._n}x{self.seq_len}".encode())
        picks = sorted({0, 1, 2, self._n // 2, self._n - 1} & set(range(self._n)))
        ids, mask, loss = self.batch(picks)
        h.update(ids.to(torch.int64).numpy().tobytes())
        h.update(mask.to(torch.int64).numpy().tobytes())
        if loss is not None:
            h.update(loss.to(torch.int64).numpy().tobytes())
        return h.hexdigest()[:16]


def as_token_data(data, *, what: str = "training data") -> TokenData:
    """Accept a LongTensor `[N, T]`, a `TokenSamples`, or any indexable dataset of dicts/tensors."""
    if data is None:
        raise DistillError(f"{what} is missing")
    loss = None
    if isinstance(data, torch.Tensor):
        ids, mask = data, None
    elif isinstance(getattr(data, "input_ids", None), torch.Tensor):
        ids, mask = data.input_ids, getattr(data, "attention_mask", None)
        loss = (getattr(data, "meta", None) or {}).get("loss_mask")
    elif isinstance(data, dict) and isinstance(data.get("input_ids"), torch.Tensor):
        ids, mask, loss = data["input_ids"], data.get("attention_mask"), data.get("loss_mask")
    else:
        try:
            n = len(data)
        except TypeError:
            raise DistillError(
                f"{what} must be a LongTensor [N, T], a TokenSamples or a torch Dataset with a length; "
                f"got {type(data).__name__}"
            ) from None
        if n == 0:
            raise DistillError(f"{what} is empty: no samples to train on")
        td = TokenData(data)
        if td.seq_len == 0:
            raise DistillError(f"{what} has samples of length 0")
        return td
    if ids.dim() != 2:
        raise DistillError(f"{what}: input_ids must be [N, T], got shape {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise DistillError(f"{what}: input_ids must be integer token ids, got {ids.dtype}")
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise DistillError(f"{what} is empty: shape {tuple(ids.shape)}")
    ids = ids.long()
    mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask).long()
    if mask.shape != ids.shape:
        raise DistillError(f"{what}: attention_mask {tuple(mask.shape)} does not match input_ids {tuple(ids.shape)}")
    if int(mask.sum()) == 0:
        raise DistillError(f"{what}: every position is masked out")
    if loss is not None:
        loss = torch.as_tensor(loss).long()
        if loss.shape != ids.shape:
            raise DistillError(f"{what}: loss_mask {tuple(loss.shape)} does not match input_ids {tuple(ids.shape)}")
    return TokenData(data, ids, mask, loss)


class GlobalBatches:
    """Which samples each process reads at each step (see the module docstring)."""

    def __init__(self, num_samples: int, global_batch: int, *, seed: int = 0, shuffle: bool = True):
        self.n = int(num_samples)
        self.global_batch = int(global_batch)
        self.seed = int(seed)
        self.shuffle = shuffle
        self._cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        p = self._cache.get(epoch)
        if p is None:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                p = torch.randperm(self.n, generator=g)
            else:
                p = torch.arange(self.n)
            if len(self._cache) >= 2:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = p
        return p

    def step_indices(self, step: int) -> list[int]:
        out = []
        for k in range(step * self.global_batch, (step + 1) * self.global_batch):
            out.append(int(self._perm(k // self.n)[k % self.n]))
        return out

    def micro_batches(self, step: int, rank: int, world_size: int, micro_batch: int) -> list[list[int]]:
        idx = self.step_indices(step)
        per_rank = self.global_batch // world_size
        mine = idx[rank * per_rank : (rank + 1) * per_rank]
        return [mine[i : i + micro_batch] for i in range(0, len(mine), micro_batch)]

    def position(self, step: int) -> dict:
        k = step * self.global_batch
        return {"samples_seen": k, "epoch": k // self.n, "index_in_epoch": k % self.n}
