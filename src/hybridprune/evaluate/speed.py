"""`measure_throughput`: forward (prefill) tokens per second of a model on random tokens."""

from __future__ import annotations

import statistics
import time

import torch


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_throughput(model: torch.nn.Module, batch_size: int, seq_len: int, warmup: int = 1,
                       repeats: int = 3, *, seed: int = 0) -> float:
    """Median tokens/s of `repeats` timed forward passes over a `[batch_size, seq_len]` batch.

    `warmup` untimed passes come first (kernel selection, caches). The tokens are random ids drawn
    from the model's vocabulary, so no data is needed; the model runs in eval mode without a cache.
    """
    if batch_size < 1 or seq_len < 1 or repeats < 1 or warmup < 0:
        raise ValueError("batch_size, seq_len and repeats must be >= 1 and warmup >= 0")
    param = next(model.parameters())
    device = param.device
    vocab = int(getattr(model.config, "vocab_size", 2))
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch_size, seq_len), generator=g).to(device)
    was_training = model.training
    model.eval()
    times = []
    try:
        for i in range(warmup + repeats):
            _synchronize(device)
            start = time.perf_counter()
            model(input_ids=ids, use_cache=False)
            _synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return batch_size * seq_len / max(statistics.median(times), 1e-9)
