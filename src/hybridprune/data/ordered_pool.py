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
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator

_WORKER: dict[str, Any] = {}


def _init(fn: Callable, args: tuple, parent: int) -> None:
    """A worker dies with its parent: SIGTERM back to its default (a fork inherits the command's
    handler, which only sets a flag), Ctrl-C left to the parent, and on Linux the kernel sends SIGTERM
    when the parent dies, so a `kill -9` of the command leaves no idle worker behind."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != parent:  # the parent died before the request above
        os._exit(1)
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
    pool = ProcessPoolExecutor(num_proc, mp_context=ctx, initializer=_init, initargs=(fn, args, os.getpid()))
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
