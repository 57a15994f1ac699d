"""Token shards: a tokenized corpus on disk, read by offset through memory maps.

Layout of a token directory (written by `hybridprune tokenize`, `data/tokenize.py`):

    manifest.json            format, tokenizer, sources (+ fingerprints, weights), per split and source
                             the shard files and their token counts (the index); written last
    <split>/s<i>-<n>.tok     the token stream of source i in one split: uint16 where the vocabulary
                             fits, else uint32; documents in source order, each followed by EOS
    <split>/s<i>-<n>.mask    (chat data only) one uint8 per token: 1 where the token counts in the loss

A window of `seq_len` tokens is a slice of one source's stream at `w * seq_len`, so any window is read
without touching the rest of the corpus; nothing is held in memory but the index.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hybridprune.data.errors import DataError

FORMAT = "hybridprune-tokens/1"
MANIFEST_FILE = "manifest.json"
PROGRESS_FILE = "progress.json"
TOKEN_SUFFIX = ".tok"
MASK_SUFFIX = ".mask"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 where every id fits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def is_token_dir(source) -> bool:
    """True when `source` names a directory written by `hybridprune tokenize` (finished or not)."""
    if not isinstance(source, (str, Path)) or not str(source).strip():
        return False
    p = Path(source).expanduser()
    return p.is_dir() and ((p / MANIFEST_FILE).is_file() or (p / PROGRESS_FILE).is_file())


def read_manifest(directory: str | Path) -> dict:
    """The manifest of a finished token directory; a DataError says what to do otherwise."""
    directory = Path(directory).expanduser()
    path = directory / MANIFEST_FILE
    if not path.is_file():
        if (directory / PROGRESS_FILE).is_file():
            raise DataError(f"'{directory}' holds an unfinished tokenization; run the same `hybridprune tokenize` "
                            "command again to finish it")
        raise DataError(f"'{directory}' is not a token directory (no {MANIFEST_FILE}); write one with "
                        "`hybridprune tokenize`")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"'{path}' is damaged ({exc}); tokenize the data again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"'{path}' is not a {FORMAT} manifest; tokenize the data again with this version")
    return manifest


@dataclass
class Stream:
    """One source's token stream in one split, over its shard files (memory-mapped on first use)."""

    directory: Path
    shards: list[dict]  # {"file": relative name, "tokens": n}
    dtype: np.dtype
    has_mask: bool

    def __post_init__(self):
        self.starts = [0]
        for s in self.shards:
            self.starts.append(self.starts[-1] + int(s["tokens"]))
        self._maps: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

    @property
    def num_tokens(self) -> int:
        return self.starts[-1]

    def _map(self, i: int):
        got = self._maps.get(i)
        if got is None:
            shard = self.shards[i]
            n = int(shard["tokens"])
            path = self.directory / shard["file"]
            try:
                ids = np.memmap(path, dtype=self.dtype, mode="r", shape=(n,)) if n else np.zeros(0, self.dtype)
                mask = None
                if self.has_mask:
                    mpath = path.with_suffix(MASK_SUFFIX)
                    mask = np.memmap(mpath, dtype=np.uint8, mode="r", shape=(n,)) if n else np.zeros(0, np.uint8)
            except (OSError, ValueError) as exc:
                raise DataError(f"token shard '{path}' cannot be read ({exc}); it is missing or shorter than the "
                                "manifest says: tokenize the data again") from None
            got = self._maps[i] = (ids, mask)
        return got

    def read(self, start: int, length: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Tokens `[start, start + length)` of the stream (and their loss mask), across shard ends."""
        ids_parts, mask_parts = [], []
        pos, end = start, start + length
        while pos < end:
            i = bisect_right(self.starts, pos) - 1
            ids, mask = self._map(i)
            lo = pos - self.starts[i]
            hi = min(end, self.starts[i + 1]) - self.starts[i]
            ids_parts.append(ids[lo:hi])
            if mask is not None:
                mask_parts.append(mask[lo:hi])
            pos = self.starts[i] + hi
        ids = np.concatenate(ids_parts) if len(ids_parts) > 1 else np.asarray(ids_parts[0])
        mask = None
        if self.has_mask:
            mask = np.concatenate(mask_parts) if len(mask_parts) > 1 else np.asarray(mask_parts[0])
        return ids, mask


class ShardWindows(torch.utils.data.Dataset):
    """The `seq_len`-token windows of one split of a token directory, drawn from its sources by weight.

    Without weights (one source, or weights equal to the sources' sizes) window `k` is window `k` of
    the concatenated sources. With a mixture, one epoch holds as many windows as all sources
    together, source `i` contributing `weight_i` of them: a smaller source repeats, a larger one is
    subsampled, both in a permutation drawn from `seed`. Items are
    `{"input_ids", "attention_mask"[, "loss_mask"]}`; the loss mask (chat data) marks the positions
    whose next token counts in the loss.
    """

    def __init__(self, directory: str | Path, split: str, seq_len: int, *, seed: int = 0,
                 weights: list[float] | None = None):
        if not isinstance(seq_len, int) or seq_len < 2:
            raise DataError(f"seq_len must be an integer >= 2, got {seq_len!r}")
        self.directory = Path(directory).expanduser()
        self.manifest = read_manifest(self.directory)
        self.split, self.seq_len, self.seed = split, seq_len, int(seed)
        parts = self.manifest.get("splits", {}).get(split)
        if not parts:
            have = sorted(self.manifest.get("splits", {}))
            raise DataError(f"token directory '{self.directory}' has no {split!r} split (it has {have}); "
                            "give more text, or tokenize a source that has one")
        dtype = np.dtype(self.manifest["dtype"])
        has_mask = bool(self.manifest.get("chat"))
        all_w = weights if weights is not None else self.manifest.get("weights")
        self.streams: list[Stream] = []
        sizes, ws = [], []
        for src in sorted(parts, key=int):
            stream = Stream(self.directory, parts[src]["shards"], dtype, has_mask)
            if stream.num_tokens // seq_len:
                self.streams.append(stream)
                sizes.append(stream.num_tokens // seq_len)
                ws.append(float(all_w[int(src)]) if all_w else None)
        if not self.streams:
            total = sum(int(p["tokens"]) for p in parts.values())
            raise DataError(f"the {split!r} split of '{self.directory}' has only {total} tokens, fewer than one sample "
                            f"of seq_len={seq_len} needs; give more text or lower seq_len")
        self.has_mask = has_mask
        self.sizes = sizes
        self.counts = list(sizes) if not all_w or len(sizes) == 1 else _mixture_counts(ws, sizes)
        self.offsets = np.cumsum([0] + self.counts)
        self._perms: dict[int, torch.Tensor] = {}
        self.fingerprint = self._fingerprint()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, k: int) -> tuple[int, int]:
        """(stream, window) of item `k`."""
        if not 0 <= k < len(self):
            raise IndexError(k)
        i = int(np.searchsorted(self.offsets, k, side="right") - 1)
        j = k - int(self.offsets[i])
        if self.counts[i] == self.sizes[i]:
            return i, j
        perm = self._perms.get(i)
        if perm is None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + 7919 * (i + 1))
            perm = self._perms[i] = torch.randperm(self.sizes[i], generator=g)
        return i, int(perm[j % self.sizes[i]])

    def window(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        i, w = self.locate(k)
        return self.streams[i].read(w * self.seq_len, self.seq_len)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        ids, mask = self.window(int(k))
        item = {"input_ids": torch.from_numpy(ids.astype(np.int64)),
                "attention_mask": torch.ones(self.seq_len, dtype=torch.long)}
        if mask is not None:
            item["loss_mask"] = positions_of(torch.from_numpy(mask.astype(np.int64)))
        return item

    def get_batch(self, indices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """`(input_ids, attention_mask, loss_mask or None)` of the given items, `[len(indices), seq_len]`."""
        rows = [self.window(int(k)) for k in indices]
        ids = torch.from_numpy(np.stack([r[0] for r in rows]).astype(np.int64))
        attn = torch.ones_like(ids)
        loss = None
        if self.has_mask:
            loss = positions_of(torch.from_numpy(np.stack([r[1] for r in rows]).astype(np.int64)))
        return ids, attn, loss

    def max_token_id(self) -> int:
        return int(self.manifest.get("max_token_id", -1))

    def _fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps([self.manifest.get("fingerprint"), self.split, self.seq_len, self.counts,
                                       self.seed if self.counts != self.sizes else None]).encode())
        return h.hexdigest()[:16]


def positions_of(token_mask: torch.Tensor) -> torch.Tensor:
    """Loss positions from a per-token mask: position `t` predicts token `t + 1`, so it counts when
    that token does (the last position of a window predicts nothing inside it)."""
    pos = torch.zeros_like(token_mask)
    pos[..., :-1] = token_mask[..., 1:]
    return pos


def _mixture_counts(weights: list[float], sizes: list[int]) -> list[int]:
    total_w = float(sum(weights))
    if total_w <= 0:
        raise DataError(f"mixture weights must be positive, got {weights}")
    n = sum(sizes)
    counts = [int(n * w / total_w) for w in weights]
    counts[int(np.argmax(weights))] += n - sum(counts)
    return [max(c, 0) for c in counts]
