"""`ordered_map`: a function over a stream of items in worker processes, the results in input order
(`hybridprune tokenize --num-proc`).

Order is what keeps a parallel tokenization byte-identical to the serial one and resumable the same
way: the writer sees exactly the batches, in exactly the order, that the serial loop would. At most
`window` items are in flight, so memory stays flat whatever the stream's length (a
`multiprocessing.Pool.imap` would read the whole stream ahead).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator

_WORKER: dict[str, Any] = {}


def _init(fn: Callable, args: tuple) -> None:
    _WORKER["fn"], _WORKER["args"] = fn, args


def _call(item):
    return _WORKER["fn"](item, *_WORKER["args"])


def ordered_map(fn: Callable, items: Iterable, num_proc: int, *args, window: int | None = None) -> Iterator:
    """`fn(item, *args)` for every item, in order; in `num_proc` processes when `num_proc > 1`.

    `fn` must be a module-level function; `args` (e.g. a tokenizer) reach each worker once, inherited
    where processes fork, pickled where they spawn."""
    if num_proc <= 1:
        for item in items:
            yield fn(item, *args)
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    # each worker tokenizes serially: the tokenizers library's own thread pool would otherwise be
    # disabled in forked children with a warning (and would oversubscribe the cores)
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    pool = ProcessPoolExecutor(num_proc, mp_context=ctx, initializer=_init, initargs=(fn, args))
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(_call, item))
            if len(pending) >= (window or 2 * num_proc):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if saved is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved
