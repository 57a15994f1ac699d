"""Normalising what users pass as calibration data into batches of (input_ids, attention_mask)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch


def iter_batches(
    data, *, batch_size: int = 1, device: torch.device | str = "cpu"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield `(input_ids, attention_mask)` pairs on `device` from any supported source.

    Accepts: an object with `.batches(batch_size)` (our TokenSamples); a LongTensor [N, T] (cut into
    batches); or an iterable of LongTensor [B, T] / dicts with `input_ids` and optional
    `attention_mask`.
    """
    if hasattr(data, "batches"):
        source: Iterable = data.batches(batch_size)
    elif isinstance(data, torch.Tensor):
        if data.dim() != 2:
            raise ValueError(f"token tensor must be [samples, seq_len], got shape {tuple(data.shape)}")
        source = data.split(batch_size)
    else:
        source = data
    for item in source:
        if isinstance(item, torch.Tensor):
            ids, mask = item, None
        elif isinstance(item, dict) and "input_ids" in item:
            ids, mask = item["input_ids"], item.get("attention_mask")
        else:
            raise TypeError(
                "each batch must be a LongTensor [B, T] or a dict with 'input_ids' (and optionally "
                f"'attention_mask'); got {type(item).__name__}"
            )
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
            mask = None if mask is None else mask.unsqueeze(0)
        if mask is None:
            mask = torch.ones_like(ids)
        yield ids.to(device), mask.to(device)
