"""Normalising what users pass as calibration data into batches of (input_ids, attention_mask)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def iter_batches(
    data, *, batch_size: int = 1, device: torch.device | str = "cpu", vocab_size: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield `(input_ids, attention_mask)` pairs on `device` from any supported source.

    Accepts: an object with `.batches(batch_size)` (our TokenSamples); a LongTensor [N, T] (cut into
    batches); or an iterable of LongTensor [B, T] / dicts with `input_ids` and optional
    `attention_mask`. With `vocab_size`, every batch is checked to hold integer token ids in
    `[0, vocab_size)`: the embedding would otherwise fail with a bare IndexError.
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
        if vocab_size is not None:
            check_token_ids(ids, vocab_size)
        yield ids.to(device), mask.to(device)


def vocab_size_of(model) -> int | None:
    """The number of rows of the model's input embedding (the ids it can take), if it has one."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return getattr(embeddings, "num_embeddings", None)


def check_token_ids(ids: torch.Tensor, vocab_size: int) -> None:
    """Token ids must be integers inside the model's vocabulary."""
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"token ids must be an integer tensor (torch.long), got {getattr(ids, 'dtype', type(ids))}")
    if ids.numel() and (int(ids.max()) >= vocab_size or int(ids.min()) < 0):
        bad = ids[(ids >= vocab_size) | (ids < 0)]
        raise ValueError(
            f"token id {int(bad[0])} is outside the model's vocabulary (ids 0..{vocab_size - 1}); "
            f"{bad.numel()} id(s) are out of range. Tokenize with the tokenizer saved with the model")


def count_batches(data, batch_size: int, max_batches: int | None) -> int | None:
    """How many batches `iter_batches` will yield, when that is known (for the progress bar)."""
    n = None
    if hasattr(data, "batches"):
        n = -(-len(data) // batch_size)
    elif isinstance(data, torch.Tensor):
        n = -(-data.shape[0] // batch_size)
    elif hasattr(data, "__len__"):
        n = len(data)
    if max_batches is not None:
        n = max_batches if n is None else min(n, max_batches)
    return n


def progress_bar(enabled: bool) -> Progress:
    """A rich progress bar, shown on rank 0 only."""
    rank0 = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        disable=not (enabled and rank0), transient=False,
        console=Console(stderr=True),  # stdout stays for results: a log file of it gets no bar frames
    )
