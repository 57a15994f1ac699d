"""Token shards: a tokenized corpus on disk, read by offset through memory maps.

Layout of a token directory (written by `hybridprune tokenize`, `data/tokenize.py`):

    manifest.json            format, tokenizer, sources (+ fingerprints, weights), per split and source
                             the shard files and their token counts (the index); written last
    <split>/s<i>-<n>.tok     the token stream of source i in one split: uint16 where the vocabulary
                             fits, else uint32; documents in source order, each followed by EOS
    <split>/s<i>-<n>.mask    (chat data only) one uint8 per token: 1 where the token counts in the loss

The manifest names each shard, but a reader takes only the name `shard_name` derives from the
split, source and index, and opens it inside the directory without following a link
(`confined.py`): a directory from someone else cannot make it read a file elsewhere.

A window of `seq_len` tokens is a slice of one source's stream at `w * seq_len`, so any window is read
without touching the rest of the corpus; nothing is held in memory but the index.
"""

from __future__ import annotations

import hashlib
import json
import os
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hybridprune.data.assets import SPLITS
from hybridprune.data.confined import open_in
from hybridprune.data.errors import DataError
from hybridprune.output.documents import Any, DocumentError, Finite, Map, NonNegative, OneOf, Optional, read_document

FORMAT = "hybridprune-tokens/1"
MANIFEST_FILE = "manifest.json"
PROGRESS_FILE = "progress.json"
TOKEN_SUFFIX = ".tok"
MASK_SUFFIX = ".mask"
#: what to do about a shard that is missing, short or a link: its directory is not what tokenize wrote
SHARD_FIX = "tokenize the data again with `hybridprune tokenize --overwrite` into that directory"


#: one source's stream in one split, as the manifest and the progress record give it
STREAM_SHAPE = {"shards": [{"file": str, "tokens": NonNegative(int)}], "documents?": NonNegative(int),
                "tokens?": NonNegative(int)}
#: a tokenizer's identity (`identity.tokenizer_identity`), as manifests record it
TOKENIZER_SHAPE = {"name": str, "vocab_size": NonNegative(int), "eos_token_id?": Optional(int), "hash?": str,
                   "definition?": Optional(str), "chat_template?": Optional(str)}
#: what a token directory's manifest must hold for a reader (`read_manifest`); other keys are free
MANIFEST_SHAPE = {
    "format": OneOf(FORMAT), "data?": str, "id?": str, "fingerprint?": str, "text_field?": str, "chat?": bool,
    "sources?": [{"source": str, "weight": Optional(Finite), "fingerprint?": str}],
    "tokenizer": TOKENIZER_SHAPE,
    "dtype": OneOf("uint16", "uint32"), "splits": Map(Map(STREAM_SHAPE)), "max_token_id?": int,
    "weights?": Optional([Finite]), "num_tokens": NonNegative(int), "what?": Any,
}


def shard_name(split: str, src: int, index: int) -> str:
    """The file of shard `index` of source `src` in `split`, relative to the token directory."""
    return f"{split}/s{src}-{index:05d}{TOKEN_SUFFIX}"


def check_streams(streams: dict, num_sources: int | None, where: str, fix: str) -> None:
    """The splits and sources of a manifest's (or progress record's) streams are ones hybridprune
    writes, and every shard is named as `shard_name` derives it."""
    for split, by_src in streams.items():
        if split not in SPLITS:
            raise DocumentError(f"{where}: splits: {split!r} is not a split hybridprune writes ({', '.join(SPLITS)}); "
                                f"{fix}")
        for src, stream in by_src.items():
            if not (src.isdigit() and src == str(int(src))) or (num_sources is not None and int(src) >= num_sources):
                raise DocumentError(f"{where}: splits.{split}: {src!r} is not the index of one of its "
                                    f"{num_sources if num_sources is not None else ''} sources; {fix}")
            for i, shard in enumerate(stream["shards"]):
                want = shard_name(split, int(src), i)
                if shard["file"] != want:
                    raise DocumentError(f"{where}: splits.{split}.{src}.shards[{i}] names {shard['file']!r}, not "
                                        f"{want!r}, the file hybridprune writes there; {fix}")


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
    fix = "tokenize the data again with `hybridprune tokenize`"
    try:
        manifest = read_document(path, MANIFEST_SHAPE, fix=fix)
        sources, weights = manifest.get("sources"), manifest.get("weights")
        count = len(sources) if sources is not None else len(weights) if weights is not None else None
        check_streams(manifest["splits"], count, str(path), fix)
        if weights is not None and (any(w <= 0 for w in weights) or (sources is not None and len(weights) != len(sources))):
            raise DocumentError(f"{path}: weights: expected one positive weight per source, got {weights}; {fix}")
    except DocumentError as exc:
        raise DataError(str(exc)) from None
    return manifest


def check_shards(directory: str | Path, manifest: dict, fix: str = SHARD_FIX) -> None:
    """Every shard `manifest` lists opens as a reader opens it (`Stream`): inside `directory`, through
    no link, and as long as recorded; a DataError names the first that does not. Readers open shards
    lazily; this checks them all at once, for a finished directory about to be reused."""
    directory = Path(directory).expanduser()
    dtype, has_mask = np.dtype(manifest["dtype"]), bool(manifest.get("chat"))
    for parts in manifest["splits"].values():
        for part in parts.values():
            for shard in part["shards"]:
                n, name = int(shard["tokens"]), shard["file"]
                if not n:
                    continue
                for file, dt in ((name, dtype), *([(_mask_name(name), np.dtype(np.uint8))] if has_mask else [])):
                    with _open_shard(directory, file, dt, n, fix):
                        pass


def _mask_name(name: str) -> str:
    return name[: -len(TOKEN_SUFFIX)] + MASK_SUFFIX


def _open_shard(directory: Path, name: str, dtype: np.dtype, n: int, fix: str):
    """The shard file `name` opened from inside `directory` (no link followed), refused when it holds
    fewer than `n` values."""
    f = open_in(directory, name, what=f"token shard '{directory / name}'", fix=fix)
    size = os.fstat(f.fileno()).st_size
    if size < n * dtype.itemsize:
        f.close()
        raise DataError(f"token shard '{directory / name}' holds {size // dtype.itemsize} values, fewer "
                        f"than the {n} its manifest records; {fix}")
    return f


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
            name = shard["file"]  # checked against the name `shard_name` derives (`read_manifest`)
            ids = self._read(name, self.dtype, n)
            mask = self._read(_mask_name(name), np.dtype(np.uint8), n) if self.has_mask else None
            got = self._maps[i] = (ids, mask)
        return got

    def _read(self, name: str, dtype: np.dtype, n: int) -> np.ndarray:
        """`n` values of the shard file `name`, mapped from inside the directory (no link followed)."""
        if not n:
            return np.zeros(0, dtype)
        with _open_shard(self.directory, name, dtype, n, SHARD_FIX) as f:
            return np.memmap(f, dtype=dtype, mode="r", shape=(n,))

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
