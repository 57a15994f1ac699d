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
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from hybridprune.data import chat as chat_mod
from hybridprune.data import ordered_pool, shards, stream
from hybridprune.data.identity import plan, plan_change, tokenizer_change, tokenizer_identity  # noqa: F401
from hybridprune.data.assets import SPLITS
from hybridprune.data.confined import entries, open_in, remove_in
from hybridprune.data.errors import DataError
from hybridprune.output.documents import Any as AnyShape
from hybridprune.output.documents import DocumentError, Map, NonNegative, read_document

SHARD_TOKENS = 1 << 28  # 512 MiB of uint16 per shard file
COMMIT_TOKENS = 1 << 24
BATCH_DOCS = 1024
#: a document longer than this many characters is tokenized in pieces of at most this many (`pieces`)
PIECE_CHARS = 1 << 18
#: the characters one tokenizer call is given at most (short documents together, or pieces of a long one)
CALL_CHARS = 1 << 22
#: the entries a token directory holds (besides the output manifest)
FILES = (shards.MANIFEST_FILE, shards.PROGRESS_FILE, *SPLITS)
#: `progress.json`: the plan id, how far the sources are read (source, table, row), each stream's
#: committed shards, the largest id so far, and the plan itself (`what`, for refusals)
PROGRESS_SHAPE = {"plan": str, "position": [NonNegative(int)], "streams": Map(Map(shards.STREAM_SHAPE)),
                  "max_token_id": int, "what?": AnyShape}
_RESTART = "pass --overwrite to start the tokenization afresh (it replaces only what hybridprune wrote)"


class _Writer:
    """Appends one source's tokens in one split to numbered shard files (named by `shards.shard_name`)."""

    def __init__(self, root: Path, split: str, src: int, dtype: np.dtype, chat: bool, shard_tokens: int,
                 state: dict | None = None):
        self.root, self.split, self.src, self.dtype, self.chat = root, split, src, dtype, chat
        self.shard_tokens = shard_tokens
        self.shards = [{"file": shards.shard_name(split, src, i), "tokens": int(s["tokens"])}
                       for i, s in enumerate((state or {}).get("shards", []))]
        self.documents = int((state or {}).get("documents", 0))
        self._fh = self._mfh = None
        if self.shards:  # resume: cut the last shard back to its committed length
            last = self.shards[-1]
            self._open(last["file"], int(last["tokens"]), "r+")

    def _open(self, name: str, keep: int, mode: str) -> None:
        """Open shard `name` ("new": a new file; "r+": the committed one) and cut it to `keep` tokens."""
        self._fh = _open_shard(self.root, name, mode)
        self._fh.truncate(keep * self.dtype.itemsize)
        self._fh.seek(0, os.SEEK_END)
        if self.chat:
            self._mfh = _open_shard(self.root, _mask_name(name), mode)
            self._mfh.truncate(keep)
            self._mfh.seek(0, os.SEEK_END)

    def _new_shard(self) -> None:
        self.close()
        name = shards.shard_name(self.split, self.src, len(self.shards))
        self.shards.append({"file": name, "tokens": 0})
        self._open(name, 0, "new")

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


def _mask_name(name: str) -> str:
    return name[: -len(shards.TOKEN_SUFFIX)] + shards.MASK_SUFFIX


def _open_shard(root: Path, name: str, mode: str):
    return open_in(root, name, mode, what=f"token shard '{root / name}'", fix=_RESTART)


def atomic_json(path: Path, obj: dict) -> None:
    """Write `obj` to `path` through a new temporary (never through an entry planted under its name)."""
    from hybridprune.output.atomic import TMP_TAG

    tmp = path.with_name(f".{path.name}{TMP_TAG}{os.getpid()}")
    if tmp.is_symlink() or tmp.is_file():
        tmp.unlink()
    with open(tmp, "x") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _remove_uncommitted(root: Path, writers: dict) -> None:
    """Remove from the split directories what no committed shard is (a link is removed, never followed)."""
    keep = {s["file"] for w in writers.values() for s in w.shards}
    keep |= {_mask_name(f) for f in keep}
    for split in SPLITS:
        for name, kind in entries(root, split, what=f"'{root / split}'", fix=_RESTART):
            if f"{split}/{name}" in keep:
                continue
            if kind == "dir":
                raise DataError(f"'{root / split / name}' is a directory, which hybridprune never writes there; "
                                "remove it, or choose another output directory")
            remove_in(root, split, name, what=f"'{root / split}'", fix=_RESTART)


def read_progress(root: Path) -> dict | None:
    """`root`'s progress record, checked (None when there is none); a DataError says what is wrong."""
    path = root / shards.PROGRESS_FILE
    if not os.path.lexists(path):
        return None
    try:
        progress = read_document(path, PROGRESS_SHAPE, fix=_RESTART)
        if len(progress["position"]) != 3:
            raise DocumentError(f"{path}: position: expected [source, table, row], got {progress['position']}; "
                                f"{_RESTART}")
        shards.check_streams(progress["streams"], None, str(path), _RESTART)
    except DocumentError as exc:
        raise DataError(str(exc)) from None
    return progress


def check_resumable(root: Path, progress: dict, the_plan: dict) -> None:
    """The committed shards `progress` records are there, inside `root`, regular files at least as long
    as recorded (a kill never leaves them shorter: they are synced before each commit), and the last,
    which the run appends to, has no other name."""
    dtype = shards.token_dtype(the_plan["tokenizer"]["vocab_size"])
    for split, by_src in progress["streams"].items():
        for src, stream_state in by_src.items():
            if int(src) >= len(the_plan["sources"]):
                raise DataError(f"'{root / shards.PROGRESS_FILE}' records source {src}, but the data has "
                                f"{len(the_plan['sources'])}; {_RESTART}")
            for i, shard in enumerate(stream_state["shards"]):
                name = shards.shard_name(split, int(src), i)
                files = [(name, dtype.itemsize)] + ([(_mask_name(name), 1)] if the_plan["chat"] else [])
                last = i == len(stream_state["shards"]) - 1  # reopened for writing: no other name either
                for file, width in files:
                    with _open_shard(root, file, "r+" if last else "r") as f:
                        size = os.fstat(f.fileno()).st_size
                    if size < shard["tokens"] * width:
                        raise DataError(f"token shard '{root / file}' holds {size // width} values, fewer than the "
                                        f"{shard['tokens']} its progress record counts; {_RESTART}")


def write_shards(root: Path, the_plan: dict, tokenizer: Any, *, shard_tokens: int = SHARD_TOKENS,
                 commit_tokens: int = COMMIT_TOKENS, batch_docs: int = BATCH_DOCS, num_proc: int = 1, say=None) -> dict:
    """Tokenize the plan's sources into `root` (continuing `root/progress.json` when it is this plan's);
    returns the manifest, written last. `num_proc > 1` tokenizes batches in that many processes and
    writes them in order: the same bytes as one process."""
    chat = the_plan["chat"]
    dtype = shards.token_dtype(the_plan["tokenizer"]["vocab_size"])
    eos = the_plan["tokenizer"]["eos_token_id"]
    progress_path = root / shards.PROGRESS_FILE
    progress = read_progress(root) or {}
    if progress.get("plan") != the_plan["id"]:
        progress = {}
    if progress:
        check_resumable(root, progress, the_plan)
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
    tail = np.asarray([] if eos is None else [eos], dtype=np.int64)
    grouped: dict[str, list] = {}  # split -> [id arrays, mask arrays, documents]: one write per split and batch
    for key, ids, mask in _encode(records, tokenizer, the_plan, where):
        g = grouped.setdefault(stream.assign_split(given, has_calib, key), [[], [], 0])
        g[0] += [*ids, tail]
        if mask is not None:
            g[1] += [np.asarray(mask, dtype=np.uint8), np.zeros(len(tail), np.uint8)]
        g[2] += 1
    groups = []
    for split, (ids, mask, n_docs) in grouped.items():
        arr = np.concatenate(ids)
        top = int(arr.max()) if arr.size else -1
        groups.append((split, arr.astype(dtype), np.concatenate(mask) if the_plan["chat"] else None, n_docs, top))
    return ("batch", si, ti, row + len(records), groups)


def _batches(table, start: int, size: int):
    """`(first row, [records])` batches of a table from row `start` (a stream is skipped ahead)."""
    if hasattr(table, "batches"):  # a local file, streamed
        yield from table.batches(start, size)
        return
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
        turns = [chat_mod.record_pieces(r, tokenizer, where) for r in records]
        keys = [json.dumps([t for t, _ in p], ensure_ascii=False) for p in turns]
        enc = chat_mod.encode_pieces(turns, tokenizer)
        return [(k, [np.asarray(ids, dtype=np.int64)], m) for k, (ids, m) in zip(keys, enc) if ids]
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
    ids = encode_texts(texts, tokenizer)
    return [(t, i, None) for t, i in zip(texts, ids)]


_LAST_SPACE = re.compile(r"(?s).*\S(\s)")  # the last whitespace that follows a non-whitespace character


def pieces(text: str, budget: int | None = None) -> list[str]:
    """`text` cut into pieces of at most `budget` (default `PIECE_CHARS`) characters, at whitespace:
    each cut is made just before the last run of whitespace that begins within the budget (the
    whitespace goes with the next word, as tokenizers attach it), or at the budget where that
    stretch holds no whitespace. A text within the budget is one piece."""
    budget = budget or PIECE_CHARS
    out, start = [], 0
    while len(text) - start > budget:
        m = _LAST_SPACE.match(text, start, start + budget + 1)
        cut = m.start(1) if m else start + budget
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def encode_texts(texts: list[str], tokenizer: Any) -> list[list[np.ndarray]]:
    """The ids of each text (as the arrays of its pieces), from tokenizer calls of at most `CALL_CHARS`
    characters: a text's pieces, or consecutive short texts, per call (the same ids as one call per text)."""
    out: list[list[np.ndarray]] = [[] for _ in texts]
    call: list[tuple[int, str]] = []
    size = 0

    def flush():
        enc = tokenizer([p for _, p in call], add_special_tokens=False, verbose=False)["input_ids"]
        for (d, _), i in zip(call, enc):
            out[d].append(np.asarray(i, dtype=np.int64))
        call.clear()

    for d, text in enumerate(texts):
        for piece in (pieces(text) if len(text) > PIECE_CHARS else (text,)):
            if call and size + len(piece) > CALL_CHARS:
                flush()
                size = 0
            call.append((d, piece))
            size += len(piece)
    if call:
        flush()
    return out


def tokenize_to(out: str | os.PathLike, data: str, tokenizer: Any, *, text_field: str = "text", chat: bool = False,
                overwrite: bool = False, num_proc: int = 1, say=None, **sizes) -> dict:
    """Tokenize `data` into the token directory `out` and return its manifest (`num_proc` processes
    give the same bytes as one).

    A finished `out` of the same sources, tokenizer and options is reused as it is; an unfinished one
    is continued; anything else there is refused unless `overwrite` (which replaces only what
    hybridprune wrote)."""
    from hybridprune.output.atomic import OutputError, check_output, claim, remove_owned, writing
    from hybridprune.output.lock import locked
    from hybridprune.output.leftovers import remove_dead_temporaries, unfinished

    out = Path(out)
    the_plan = plan(data, tokenizer, text_field=text_field, chat=chat)
    manifest = None
    if os.path.lexists(out / shards.MANIFEST_FILE):
        try:
            manifest = shards.read_manifest(out)
        except DataError as exc:
            if not overwrite:
                raise DataError(f"{exc} (or pass --overwrite to replace it)") from None
    if manifest is not None:
        differ = [] if manifest.get("id") == the_plan["id"] else plan_change(manifest, the_plan)
        if not differ and not overwrite:  # finished; a kill after its manifest may have left the progress record
            try:  # reused only if its readers would accept it
                shards.check_shards(out, manifest, fix=_RESTART)
            except DataError as exc:
                raise DataError(f"{out} holds these tokens, but cannot be reused: {exc}") from None
            with locked(out):
                (out / shards.PROGRESS_FILE).unlink(missing_ok=True)
            if say:
                say(f"{out} already holds these tokens ({manifest['num_tokens']:,}); reusing them")
            return manifest
        if not overwrite:
            raise OutputError(f"{out} holds the tokens of {'; '.join(differ)}; pass --overwrite to replace them, or "
                              "choose another output directory")
    resuming = False
    try:
        recorded = read_progress(out) if out.is_dir() else None
        if recorded is not None and recorded["plan"] == the_plan["id"]:
            check_resumable(out, recorded, the_plan)
    except DataError:
        if not overwrite:
            raise
        recorded = {}  # --overwrite: a record that cannot be continued is replaced
    if recorded is not None:
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
    check_output(out, overwrite=overwrite, resume=resuming or leftover, links=FILES)
    for src in the_plan["sources"]:  # a source that cannot be read is refused before anything is written
        tables, _ = stream.open_tables(src["source"], text_field)
        for _, records in _batches(tables[0][1], 0, 8):
            _encode(records, tokenizer, the_plan, f"'{src['source']}'")
            break
    with locked(out):  # one writer: another command on `out` is refused, naming its PID
        if resuming or leftover:
            remove_dead_temporaries(out)
        if overwrite and not resuming:
            remove_owned(out, links=FILES)  # a link planted at one of its names goes, as a link
        claim(out, FILES)
        if resuming and say:
            say(f"continuing the unfinished tokenization in {out}")
        with writing("the token shards", out):
            return write_shards(out, the_plan, tokenizer, say=say, num_proc=num_proc, **sizes)
