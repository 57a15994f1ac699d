"""`tokenize_corpus`: sources -> token shards (`shards.py`), once, resumably.

Records are read a batch at a time from memory-mapped `datasets` tables (or a Hub stream) and
tokenized with the fast tokenizer's batch API (parallel in Rust), so memory stays flat whatever the
corpus size. Each document goes to its split by `sources.py`'s hash rule and is appended, followed
by EOS, to its source's stream in that split.

Resumable and never half-read: `progress.json` records, at every commit, where each stream ends and
how far the sources are read (after an fsync of the shards). A rerun of the same command truncates
the shards to the last commit and continues from there. `manifest.json`, the only file readers
trust, is written last (atomically), and `progress.json` is then removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from hybridprune.data import chat as chat_mod
from hybridprune.data import ordered_pool, shards, stream
from hybridprune.data.identity import plan, plan_change, tokenizer_change, tokenizer_identity  # noqa: F401
from hybridprune.data.assets import SPLITS
from hybridprune.data.errors import DataError

SHARD_TOKENS = 1 << 28  # 512 MiB of uint16 per shard file
COMMIT_TOKENS = 1 << 24
BATCH_DOCS = 1024
#: the entries a token directory holds (besides the output manifest)
FILES = (shards.MANIFEST_FILE, shards.PROGRESS_FILE, *SPLITS)


class _Writer:
    """Appends one source's tokens in one split to numbered shard files."""

    def __init__(self, root: Path, split: str, src: int, dtype: np.dtype, chat: bool, shard_tokens: int,
                 state: dict | None = None):
        self.root, self.split, self.src, self.dtype, self.chat = root, split, src, dtype, chat
        self.shard_tokens = shard_tokens
        self.shards: list[dict] = [dict(s) for s in (state or {}).get("shards", [])]
        self.documents = int((state or {}).get("documents", 0))
        self._fh = self._mfh = None
        (root / split).mkdir(exist_ok=True)
        if self.shards:  # resume: cut the last shard back to its committed length
            last = self.shards[-1]
            self._open(last["file"], int(last["tokens"]))

    def _open(self, name: str, keep: int) -> None:
        path = self.root / name
        mode = "r+b" if path.exists() else "w+b"
        self._fh = open(path, mode)
        self._fh.truncate(keep * self.dtype.itemsize)
        self._fh.seek(0, os.SEEK_END)
        if self.chat:
            self._mfh = open(path.with_suffix(shards.MASK_SUFFIX), mode if path.with_suffix(shards.MASK_SUFFIX).exists()
                             else "w+b")
            self._mfh.truncate(keep)
            self._mfh.seek(0, os.SEEK_END)

    def _new_shard(self) -> None:
        self.close()
        name = f"{self.split}/s{self.src}-{len(self.shards):05d}{shards.TOKEN_SUFFIX}"
        self.shards.append({"file": name, "tokens": 0})
        self._open(name, 0)

    def append(self, ids: np.ndarray, mask: np.ndarray | None) -> None:
        pos = 0
        while pos < len(ids):
            if not self.shards or self.shards[-1]["tokens"] >= self.shard_tokens:
                self._new_shard()
            room = self.shard_tokens - self.shards[-1]["tokens"]
            part = ids[pos: pos + room]
            self._fh.write(part.astype(self.dtype, copy=False).tobytes())
            if self._mfh is not None:
                self._mfh.write(mask[pos: pos + room].astype(np.uint8).tobytes())
            self.shards[-1]["tokens"] += len(part)
            pos += len(part)

    def sync(self) -> None:
        for fh in (self._fh, self._mfh):
            if fh is not None:
                fh.flush()
                os.fsync(fh.fileno())

    def close(self) -> None:
        for fh in (self._fh, self._mfh):
            if fh is not None:
                fh.close()
        self._fh = self._mfh = None

    def state(self) -> dict:
        return {"shards": [dict(s) for s in self.shards], "documents": self.documents,
                "tokens": sum(int(s["tokens"]) for s in self.shards)}


def atomic_json(path: Path, obj: dict) -> None:
    from hybridprune.output.atomic import TMP_TAG

    tmp = path.with_name(f".{path.name}{TMP_TAG}{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _remove_uncommitted(root: Path, writers: dict) -> None:
    keep = {s["file"] for w in writers.values() for s in w.shards}
    for split in SPLITS:
        d = root / split
        if d.is_dir():
            for f in d.iterdir():
                if f"{split}/{f.with_suffix(shards.TOKEN_SUFFIX).name}" not in keep:
                    f.unlink()


def write_shards(root: Path, the_plan: dict, tokenizer: Any, *, shard_tokens: int = SHARD_TOKENS,
                 commit_tokens: int = COMMIT_TOKENS, batch_docs: int = BATCH_DOCS, num_proc: int = 1, say=None) -> dict:
    """Tokenize the plan's sources into `root` (continuing `root/progress.json` when it is this plan's);
    returns the manifest, written last. `num_proc > 1` tokenizes batches in that many processes and
    writes them in order: the same bytes as one process."""
    chat = the_plan["chat"]
    dtype = shards.token_dtype(the_plan["tokenizer"]["vocab_size"])
    eos = the_plan["tokenizer"]["eos_token_id"]
    progress_path = root / shards.PROGRESS_FILE
    progress = json.loads(progress_path.read_text()) if progress_path.is_file() else {}
    if progress.get("plan") != the_plan["id"]:
        progress = {}
    writers: dict[tuple[str, int], _Writer] = {}
    for split, by_src in progress.get("streams", {}).items():
        for src, st in by_src.items():
            writers[(split, int(src))] = _Writer(root, split, int(src), dtype, chat, shard_tokens, st)
    _remove_uncommitted(root, writers)
    position = progress.get("position", [0, 0, 0])  # source, table, row
    max_id = int(progress.get("max_token_id", -1))
    t0, done_tokens = time.perf_counter(), 0

    def commit(pos) -> None:
        for w in writers.values():
            w.sync()
        streams: dict[str, dict] = {}
        for (split, src), w in writers.items():
            streams.setdefault(split, {})[str(src)] = w.state()
        atomic_json(progress_path, {"plan": the_plan["id"], "position": pos, "streams": streams,
                                     "max_token_id": max_id, "what": the_plan})

    commit(position)
    since = 0
    work = _work(the_plan, position, batch_docs)
    for item in ordered_pool.ordered_map(_encode_item, work, num_proc, tokenizer, the_plan, eos):
        if item[0] == "end":  # a table read to its end
            commit([item[1], item[2] + 1, 0])
            continue
        _, si, ti, end_row, groups = item
        for split, arr, mask, n_docs, top in groups:
            w = writers.get((split, si))
            if w is None:
                w = writers[(split, si)] = _Writer(root, split, si, dtype, chat, shard_tokens)
            max_id = max(max_id, top)
            w.append(arr, mask)
            w.documents += n_docs
            since += arr.size
            done_tokens += arr.size
        if since >= commit_tokens:
            commit([si, ti, end_row])
            since = 0
            if say:
                rate = done_tokens / max(time.perf_counter() - t0, 1e-9)
                say(f"tokenized {sum(w.state()['tokens'] for w in writers.values()):,} tokens "
                    f"({rate:,.0f} tokens/s)")
    for w in writers.values():
        w.sync()
        w.close()
    if max_id >= the_plan["tokenizer"]["vocab_size"] and the_plan["tokenizer"]["vocab_size"]:
        raise DataError(f"the tokenizer produced id {max_id}, outside its vocabulary of "
                        f"{the_plan['tokenizer']['vocab_size']}")
    splits: dict[str, dict] = {}
    for (split, src), w in sorted(writers.items()):
        splits.setdefault(split, {})[str(src)] = w.state()
    weights = [s["weight"] for s in the_plan["sources"]]
    manifest = {**the_plan, "dtype": dtype.name, "splits": splits, "max_token_id": max_id,
                "weights": weights if any(x is not None for x in weights) else None,
                "num_tokens": sum(w.state()["tokens"] for w in writers.values())}
    manifest["fingerprint"] = hashlib.sha256(json.dumps([the_plan["id"], splits], sort_keys=True).encode()
                                             ).hexdigest()[:16]
    atomic_json(root / shards.MANIFEST_FILE, manifest)
    progress_path.unlink(missing_ok=True)
    return manifest


def _work(the_plan: dict, position: list, batch_docs: int):
    """The batches still to tokenize, from `position` on: `("batch", source, table, first row, records,
    given split, has a calibration part, where)`, and `("end", source, table)` after each table."""
    for si, src in enumerate(the_plan["sources"]):
        if si < position[0]:
            continue
        tables, has_calib = stream.open_tables(src["source"], the_plan["text_field"])
        for ti, (given, table) in enumerate(tables):
            if (si, ti) < tuple(position[:2]):
                continue
            start = position[2] if (si, ti) == tuple(position[:2]) else 0
            for row, records in _batches(table, start, batch_docs):
                yield ("batch", si, ti, row, records, given, has_calib, f"'{src['source']}' (records from {row})")
            yield ("end", si, ti)


def _encode_item(item: tuple, tokenizer: Any, the_plan: dict, eos: int | None) -> tuple:
    """One batch of `_work` -> `("batch", source, table, row after it, [(split, ids, mask, documents,
    largest id)])`, one contiguous array per split (in the split's order of first appearance); run in
    the writer's process or in a worker of `--num-proc`, with the same result."""
    if item[0] == "end":
        return item
    _, si, ti, row, records, given, has_calib, where = item
    dtype = shards.token_dtype(the_plan["tokenizer"]["vocab_size"])
    tail = [] if eos is None else [eos]
    grouped: dict[str, list] = {}  # split -> [ids, mask, documents]: one write per split and batch
    for key, ids, mask in _encode(records, tokenizer, the_plan, where):
        g = grouped.setdefault(stream.assign_split(given, has_calib, key), [[], [], 0])
        g[0] += ids
        g[0] += tail
        if mask is not None:
            g[1] += mask
            g[1] += [0] * len(tail)
        g[2] += 1
    groups = []
    for split, (ids, mask, n_docs) in grouped.items():
        arr = np.asarray(ids, dtype=np.int64)
        top = int(arr.max()) if arr.size else -1
        groups.append((split, arr.astype(dtype), np.asarray(mask, dtype=np.uint8) if the_plan["chat"] else None,
                       n_docs, top))
    return ("batch", si, ti, row + len(records), groups)


def _batches(table, start: int, size: int):
    """`(first row, [records])` batches of a table from row `start` (a stream is skipped ahead)."""
    if hasattr(table, "__len__") and hasattr(table, "select"):
        n = len(table)
        for row in range(start, n, size):
            cols = table[row: min(n, row + size)]
            keys = list(cols)
            yield row, [dict(zip(keys, vals)) for vals in zip(*(cols[k] for k in keys))]
        return
    it = table.skip(start) if start else table
    batch, row = [], start
    for rec in it:
        batch.append(rec)
        if len(batch) == size:
            yield row, batch
            row += len(batch)
            batch = []
    if batch:
        yield row, batch


def _encode(records: list[dict], tokenizer: Any, the_plan: dict, where: str):
    """`(split key, ids, mask or None)` per non-empty record."""
    field = the_plan["text_field"]
    if the_plan["chat"]:
        pieces = [chat_mod.record_pieces(r, tokenizer, where) for r in records]
        keys = [json.dumps([t for t, _ in p], ensure_ascii=False) for p in pieces]
        enc = chat_mod.encode_pieces(pieces, tokenizer)
        return [(k, ids, m) for k, (ids, m) in zip(keys, enc) if ids]
    texts = []
    for r in records:
        if field not in r and set(r) != {"text"}:  # a .txt file's one column is "text"
            raise DataError(f"{where} has no text field {field!r}; its fields are {sorted(r)}; pass one of those "
                            "with --text-field (or --chat for conversations)")
        v = r[field if field in r else "text"]
        if v is None:
            continue
        if not isinstance(v, str):
            raise DataError(f"field {field!r} of {where} holds {type(v).__name__} values, not text; pass the name of "
                            "a string field with --text-field")
        if v.strip():
            texts.append(v)
    if not texts:
        return []
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return [(t, i, None) for t, i in zip(texts, ids)]


def tokenize_to(out: str | os.PathLike, data: str, tokenizer: Any, *, text_field: str = "text", chat: bool = False,
                overwrite: bool = False, num_proc: int = 1, say=None, **sizes) -> dict:
    """Tokenize `data` into the token directory `out` and return its manifest (`num_proc` processes
    give the same bytes as one).

    A finished `out` of the same sources, tokenizer and options is reused as it is; an unfinished one
    is continued; anything else there is refused unless `overwrite` (which replaces only what
    hybridprune wrote)."""
    from hybridprune.output.atomic import OutputError, check_output, claim, locked, remove_owned, writing
    from hybridprune.output.leftovers import remove_dead_temporaries, unfinished

    out = Path(out)
    the_plan = plan(data, tokenizer, text_field=text_field, chat=chat)
    if (out / shards.MANIFEST_FILE).is_file():
        manifest = shards.read_manifest(out)
        differ = [] if manifest.get("id") == the_plan["id"] else plan_change(manifest, the_plan)
        if not differ:  # finished; a kill after its manifest may have left the progress record (and lock)
            with locked(out):
                (out / shards.PROGRESS_FILE).unlink(missing_ok=True)
            if say:
                say(f"{out} already holds these tokens ({manifest['num_tokens']:,}); reusing them")
            return manifest
        if not overwrite:
            raise OutputError(f"{out} holds the tokens of {'; '.join(differ)}; pass --overwrite to replace them, or "
                              "choose another output directory")
    progress = out / shards.PROGRESS_FILE
    resuming = False
    if progress.is_file():
        try:
            recorded = json.loads(progress.read_text())
        except (OSError, ValueError):
            recorded = {}
        resuming = recorded.get("plan") == the_plan["id"]
        if not resuming and not overwrite:
            began = recorded.get("what")  # the plan it began with (recorded since the refusals name differences)
            differ = plan_change(began, the_plan) if isinstance(began, dict) else []
            what = "; ".join(differ) or ("other data, options or tokenizer" if not isinstance(began, dict) else
                                         "the same tokens under another chat template")
            raise OutputError(f"{out} holds an unfinished tokenization of {what}; run the command that began it "
                              "again to finish it, pass --overwrite to start afresh, or choose another output directory")
    # killed in its setup (recording its names, or writing its first progress record), a run leaves only
    # its own entries and a dead temporary: the rerun takes them over, without that temporary
    leftover = not resuming and unfinished(out, FILES, done=shards.MANIFEST_FILE)
    check_output(out, overwrite=overwrite, resume=resuming or leftover)
    for src in the_plan["sources"]:  # a source that cannot be read is refused before anything is written
        tables, _ = stream.open_tables(src["source"], text_field)
        for _, records in _batches(tables[0][1], 0, 8):
            _encode(records, tokenizer, the_plan, f"'{src['source']}'")
            break
    with locked(out):  # one writer: another command on `out` is refused, naming its PID
        if resuming or leftover:
            remove_dead_temporaries(out)
        if overwrite and not resuming:
            remove_owned(out)
        claim(out, FILES)
        if resuming and say:
            say(f"continuing the unfinished tokenization in {out}")
        with writing("the token shards", out):
            return write_shards(out, the_plan, tokenizer, say=say, num_proc=num_proc, **sizes)
