"""``load_token_samples``: documents -> tokens -> fixed-length windows.

How windows are made (Nemotron-H's torch path refuses packed sequences, so there is no packing with
position resets):

1. the split's documents are tokenized without special tokens, in source order, and each is followed
   by the tokenizer's EOS token (so a window may span a document boundary, marked by EOS);
2. the token stream is cut into consecutive, non-overlapping windows of ``seq_len`` tokens with an
   all-ones attention mask; the tail shorter than ``seq_len`` is dropped, unless ``pad_last=True``,
   which keeps it as one more sample padded on the right (pad token, mask 0);
3. with ``shuffle=True`` (the default) the windows are put in a random order drawn from ``seed``,
   and the first ``num_samples`` are kept; with ``shuffle=False`` the first ``num_samples`` in
   stream order. The same arguments always give the same samples.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from hybridprune.data.batches import TokenSamples
from hybridprune.data.errors import DataError
from hybridprune.data.shards import ShardWindows, is_token_dir
from hybridprune.data.sources import check_split, read_documents

log = logging.getLogger(__name__)


def load_token_samples(
    source: Any,
    tokenizer: Any,
    *,
    seq_len: int,
    num_samples: int | None = None,
    split: str = "train",
    seed: int = 0,
    text_field: str = "text",
    model_vocab_size: int | None = None,
    shuffle: bool = True,
    pad_last: bool = False,
) -> TokenSamples:
    """Tokenize one split of ``source`` into ``num_samples`` windows of ``seq_len`` tokens.

    Args:
        source: a file (.txt, .jsonl, .json, .parquet; .txt/.jsonl/.json may be .gz), a
            ``save_to_disk`` directory, a directory of split files, ``"shakespeare"`` (the bundled
            corpus), a hub dataset name (online only), a ``datasets.Dataset`` or a list of strings.
        tokenizer: a Hugging Face tokenizer (``PreTrainedTokenizerBase``).
        seq_len: tokens per sample (>= 2).
        num_samples: how many samples to return; ``None`` returns all. Asking for more than the split
            holds returns all of them and logs a warning (``meta["num_available"]`` tells how many).
        split: ``"calibration"``, ``"train"``, ``"validation"``, ``"test"`` (disjoint by document)
            or ``"all"``.
        seed: drives which windows are taken and their order.
        text_field: the record field holding the text (json/jsonl/parquet/datasets).
        model_vocab_size: the model's vocabulary size; a tokenizer that can emit ids outside it is
            rejected.
        shuffle: randomise window order (from ``seed``); otherwise keep stream order.
        pad_last: keep the final partial window, right-padded with mask 0.

    Raises:
        DataError: for any bad input, with a message saying what to do.
    """
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 2:
        raise DataError(f"seq_len must be an integer >= 2 (a sample needs an input and a next token), got {seq_len!r}")
    if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 1):
        raise DataError(f"num_samples must be a positive integer or None (all samples), got {num_samples!r}")
    check_split(split)
    vocab_len = _check_tokenizer(tokenizer, model_vocab_size)
    if is_token_dir(source):
        return _from_shards(source, tokenizer, seq_len, num_samples, split, seed, model_vocab_size, shuffle)

    docs = read_documents(source, split, text_field=text_field)
    stream = _tokenize(docs, tokenizer)
    if model_vocab_size is not None and stream.numel():
        top = int(stream.max())
        if top >= model_vocab_size:
            raise DataError(
                f"the tokenizer produced token id {top}, but the model's vocabulary has only {model_vocab_size} "
                "entries; use the tokenizer that was saved with the model"
            )

    n_tokens = int(stream.numel())
    n_full = n_tokens // seq_len
    has_tail = pad_last and n_tokens % seq_len > 0
    if n_full == 0 and not has_tail:
        raise DataError(
            f"the {split!r} split of {_name(source)} has only {n_tokens} tokens ({len(docs)} document(s)), fewer than "
            f"one sample of seq_len={seq_len} needs; give more text, lower seq_len, or pass pad_last=True"
        )
    ids = stream[: n_full * seq_len].view(n_full, seq_len)
    mask = torch.ones_like(ids)
    if has_tail:
        pad_id = _pad_id(tokenizer)
        tail = stream[n_full * seq_len :]
        tail_ids = torch.full((1, seq_len), pad_id, dtype=torch.long)
        tail_ids[0, : tail.numel()] = tail
        tail_mask = torch.zeros((1, seq_len), dtype=torch.long)
        tail_mask[0, : tail.numel()] = 1
        ids = torch.cat([ids, tail_ids])
        mask = torch.cat([mask, tail_mask])

    available = int(ids.shape[0])
    if shuffle:
        order = torch.randperm(available, generator=torch.Generator().manual_seed(int(seed)))
    else:
        order = torch.arange(available)
    if num_samples is not None:
        if num_samples > available:
            log.warning(
                "asked for %d samples of %d tokens from the %r split of %s, which holds only %d; using all %d",
                num_samples, seq_len, split, _name(source), available, available,
            )
        order = order[:num_samples]

    meta = {
        "source": _name(source),
        "split": split,
        "seq_len": seq_len,
        "seed": int(seed),
        "shuffle": shuffle,
        "num_documents": len(docs),
        "num_split_tokens": n_tokens,
        "num_available": available,
        "tokenizer": getattr(tokenizer, "name_or_path", type(tokenizer).__name__),
        "tokenizer_vocab": vocab_len,
    }
    return TokenSamples(ids[order].clone(), mask[order].clone(), meta)


def _from_shards(source, tokenizer, seq_len, num_samples, split, seed, model_vocab_size, shuffle) -> TokenSamples:
    """The same windows as from text (a token directory holds the same stream), read by offset: only the
    windows asked for are read."""
    if split == "all":
        raise DataError(f"a token directory ('{source}') keeps its splits; ask for one of them, not 'all'")
    windows = ShardWindows(source, split, seq_len, seed=seed)
    check_token_dir(windows.manifest, source, model_vocab_size, tokenizer)
    available = len(windows)
    order = (torch.randperm(available, generator=torch.Generator().manual_seed(int(seed))) if shuffle
             else torch.arange(available))
    if num_samples is not None:
        if num_samples > available:
            log.warning("asked for %d samples of %d tokens from the %r split of %s, which holds only %d; using all %d",
                        num_samples, seq_len, split, source, available, available)
        order = order[:num_samples]
    ids, mask, loss = windows.get_batch(order.tolist())
    meta = {"source": str(source), "split": split, "seq_len": seq_len, "seed": int(seed), "shuffle": shuffle,
            "num_available": available, "tokenizer": windows.manifest["tokenizer"]["name"],
            "tokenizer_vocab": windows.manifest["tokenizer"]["vocab_size"], "token_dir": windows.fingerprint}
    if loss is not None:
        meta["loss_mask"] = loss
    return TokenSamples(ids, mask, meta)


def check_token_dir(manifest: dict, source, model_vocab_size: int | None, tokenizer: Any = None) -> None:
    """A token directory must come from the model's tokenizer: its ids must fit the model's vocabulary,
    and the tokenizer given now (when given) must be the one that wrote it (with the same chat template,
    for chat data)."""
    tok = manifest.get("tokenizer", {})
    if model_vocab_size is not None and int(manifest.get("max_token_id", -1)) >= model_vocab_size:
        raise DataError(f"the token directory '{source}' holds token id {manifest['max_token_id']}, but the model's "
                        f"vocabulary has only {model_vocab_size} entries; tokenize with the model's tokenizer")
    if tokenizer is not None and hasattr(tokenizer, "backend_tokenizer"):
        from hybridprune.data.identity import tokenizer_change, tokenizer_identity

        change = tokenizer_change(tok, tokenizer_identity(tokenizer), chat=bool(manifest.get("chat")))
        if change:
            raise DataError(f"the token directory '{source}' was written with {change}, not the model's tokenizer; "
                            "tokenize the text again with the model's tokenizer")


def _name(source: Any) -> str:
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        return str(source)
    return type(source).__name__


def _check_tokenizer(tokenizer: Any, model_vocab_size: int | None) -> int:
    if not callable(tokenizer) or not hasattr(tokenizer, "__len__"):
        raise DataError(
            f"expected a Hugging Face tokenizer (e.g. from AutoTokenizer.from_pretrained), got {type(tokenizer).__name__}"
        )
    vocab_len = len(tokenizer)
    if model_vocab_size is not None and vocab_len > model_vocab_size:
        raise DataError(
            f"the tokenizer has {vocab_len} tokens but the model's vocabulary has only {model_vocab_size}; "
            "this tokenizer does not belong to the model: use the tokenizer saved with the checkpoint"
        )
    return vocab_len


def _tokenize(docs: list[str], tokenizer: Any) -> torch.Tensor:
    """The documents' ids, each followed by EOS, as one stream (long documents in pieces, as `tokenize`)."""
    from hybridprune.data.tokenize import encode_texts

    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        log.warning("the tokenizer has no EOS token; documents are concatenated without a separator")
    tail = [np.asarray([eos], dtype=np.int64)] if eos is not None else []
    parts = [a for ids in encode_texts(docs, tokenizer) for a in (*ids, *tail)]
    return torch.from_numpy(np.concatenate(parts)) if parts else torch.zeros(0, dtype=torch.long)


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0
