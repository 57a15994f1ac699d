"""A safetensors checkpoint on disk, read lazily: its tensor names, shapes, dtypes and shards.

The checkpoint is checked before anything is read from it, as strictly as transformers and the
safetensors library would and a little more: every shard's header by the safetensors rules
(`safetensors_io.read_header`); the index, if any, as a mapping of tensor names to shard file names
inside the checkpoint directory (a Hub snapshot's shards link into its own `blobs/`, which is
allowed); and the shards against the index, so that every tensor is in the one shard the index names
and nowhere else. A loader that trusted the index alone, or the shards alone, could read a tensor
from a file the index does not name, or a file outside the checkpoint.

Tensors are mapped a block of rows at a time (`mapped`), and fingerprint samples read with small file
reads (`window`), so streaming a checkpoint holds a few blocks at a time: mapped pages of a whole shard
would count towards the process's resident memory. Names as transformers loads them are
`keymap.KeyMap`'s job (re-exported here).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path, PurePosixPath

import numpy as np

from .keymap import KeyMap, StackedSlice  # noqa: F401 - re-exported
from .safetensors_io import (  # noqa: F401 - re-exported
    CheckpointFormatError, MappedFile, ShardWriter, TensorInfo, HeaderError, no_duplicate_keys, read_header,
)

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_SHARD_NAME = re.compile(r"-\d+-of-(\d+)\.safetensors$")


def hub_snapshot(directory: Path) -> tuple[str, Path] | None:
    """(repository id, its `blobs/` folder) when `directory` is a snapshot in the Hugging Face cache."""
    snapshots = directory.parent
    repo = snapshots.parent
    if snapshots.name != "snapshots" or not repo.name.startswith("models--"):
        return None
    return repo.name[len("models--"):].replace("--", "/"), repo / "blobs"


class CheckpointFiles:
    """The tensors of a checkpoint directory (one `model.safetensors`, or shards with an index).

    `what` names the checkpoint in messages (default: its directory)."""

    def __init__(self, directory: str | os.PathLike, what: str | None = None) -> None:
        self.dir = Path(directory)
        self._what = what or str(self.dir)
        self._hub = hub_snapshot(self.dir)
        index = self.dir / INDEX_FILE
        weight_map = None
        if index.is_file():
            weight_map = self._read_index(index)
            shards = sorted(set(weight_map.values()))
        elif index.is_symlink():  # a Hub snapshot whose index blob never arrived
            self._incomplete(f"{INDEX_FILE} links to a file that is missing")
        elif (self.dir / SINGLE_FILE).is_file():
            shards = [SINGLE_FILE]
        else:
            shards = sorted(p.name for p in self.dir.glob("*.safetensors"))
            if not shards:
                if self._hub:
                    self._incomplete(f"no {SINGLE_FILE} and no {INDEX_FILE}")
                raise self._error(f"no safetensors weights ({SINGLE_FILE} or {INDEX_FILE})")
            numbered = [s for s in shards if _SHARD_NAME.search(s)]
            if numbered:
                self._incomplete(f"its shards are numbered ({numbered[0]}) but {INDEX_FILE}, which lists them, "
                                 "is missing")
        self.shards = shards
        self.tensors: dict[str, TensorInfo] = {}
        held: dict[str, list[str]] = {}  # tensor -> the shards that hold it
        for shard in shards:
            path = self._shard_path(shard, index)
            if not path.is_file():
                self._incomplete(f"shard {shard}, listed in {INDEX_FILE}, is missing" if weight_map is not None
                                 else f"shard {shard} is missing")
            try:
                tensors, _ = read_header(path, shard)
            except HeaderError as exc:
                raise self._error(f"{shard} is not a valid safetensors file: {exc}. The file is damaged; "
                                  "download or export the checkpoint again") from None
            except OSError as exc:
                raise self._error(f"cannot read {shard} ({exc.strerror or exc})") from None
            for key, info in tensors.items():
                held.setdefault(key, []).append(shard)
                self.tensors.setdefault(key, info)
        self._agree(held, weight_map)

    def _error(self, message: str) -> CheckpointFormatError:
        return CheckpointFormatError(f"cannot load the model in {self._what}: {message}")

    def _incomplete(self, what: str):
        if self._hub:
            repo, blobs = self._hub
            partial = sorted(p.name for p in blobs.glob("*.incomplete")) if blobs.is_dir() else []
            note = f"; {len(partial)} download(s) never finished ({partial[0]})" if partial else ""
            raise self._error(f"the Hub download of {repo} is incomplete: {what}{note}. Download it again "
                              f"(`hf download {repo}`)")
        raise self._error(f"{what}: the checkpoint is incomplete; copy, download or export it again")

    def _read_index(self, index: Path) -> dict[str, str]:
        try:
            doc = json.loads(index.read_text(encoding="utf-8"), object_pairs_hook=no_duplicate_keys)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._error(f"{index} is not a valid JSON file ({exc}); download or export the checkpoint "
                              "again") from None
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            found = "missing" if weight_map is None else f"a {type(weight_map).__name__}" if weight_map != {} else "empty"
            raise self._error(f"{index} is not a safetensors index: its weight_map is {found}, not a mapping of "
                              "tensor names to shard file names; download or export the checkpoint again")
        bad = [k for k, v in weight_map.items() if not isinstance(v, str) or not v.endswith(".safetensors")]
        if bad:
            raise self._error(f"{index} is not a safetensors index: it maps {bad[0]} to {weight_map[bad[0]]!r}, "
                              "not to a .safetensors file name; download or export the checkpoint again")
        return weight_map

    def _shard_path(self, name: str, index: Path) -> Path:
        """The shard `name`, refused unless it is a file inside the checkpoint (or, for a Hub snapshot,
        a link into the repository's own blobs)."""
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts or "\\" in name or name.startswith("~") or not name.strip():
            raise self._error(f"{index.name} names the shard {name!r}, which is not a file inside the checkpoint "
                              "directory; refusing to read it. The index is damaged or was edited; download or "
                              "export the checkpoint again")
        path = self.dir / name
        real = path.resolve()
        allowed = [self.dir.resolve()] + ([self._hub[1].resolve()] if self._hub else [])
        if path.exists() and not any(real.is_relative_to(a) for a in allowed):
            raise self._error(f"shard {name} is a link to {real}, outside the checkpoint directory; refusing to "
                              "read it. Copy the file into the checkpoint if you trust it")
        return path

    def _agree(self, held: dict[str, list[str]], weight_map: dict[str, str] | None) -> None:
        """Every tensor in exactly one shard, and that shard the one the index names."""
        for key, shards in held.items():
            named = weight_map.get(key) if weight_map is not None else None
            if weight_map is not None and named is None:
                raise self._error(f"{shards[0]} holds {key}, which {INDEX_FILE} does not list: the index and the "
                                  "shards disagree; download or export the checkpoint again")
            others = [s for s in shards if s != named]
            if named is not None and others:
                both = named in shards
                raise self._error(f"{key} is in {others[0]}{' as well as in ' + named if both else ''}, but "
                                  f"{INDEX_FILE} maps it to {named}{'' if both else ', which does not hold it'}: "
                                  "the index and the shards disagree; download or export the checkpoint again")
            if named is None and len(shards) > 1:
                raise self._error(f"{key} is stored in both {shards[0]} and {shards[1]}, and there is no "
                                  f"{INDEX_FILE} to say which is meant; remove the stray file")
        if weight_map is not None:
            lost = [k for k in weight_map if k not in held]
            if lost:
                raise self._error(f"{INDEX_FILE} maps {lost[0]} to {weight_map[lost[0]]}, which does not hold it"
                                  f"{f' ({len(lost)} tensors in all)' if len(lost) > 1 else ''}: the index and the "
                                  "shards disagree; download or export the checkpoint again")

    def keys_in(self, shard: str) -> list[str]:
        return [k for k, t in self.tensors.items() if t.shard == shard]

    def window(self, key: str, idx: tuple[slice, ...] = ()) -> np.ndarray:
        """Window `idx` (one slice per leading dimension) of tensor `key`, as an array of its storage type
        (`DType.storage`), read with one small file read: no memory map, whose faults can map a whole
        2 MiB page of the page cache per sample."""
        info = self.tensors[key]
        shape = info.shape
        ranges = [s.indices(n) for s, n in zip(idx, shape)] + [(0, n, 1) for n in shape[len(idx):]]
        size = tuple(len(range(*r)) for r in ranges)
        storage = info.dtype.storage
        if 0 in size:
            return np.empty(size, dtype=storage)
        strides = [math.prod(shape[d + 1:]) for d in range(len(shape))]
        first = sum(r[0] * st for r, st in zip(ranges, strides))
        last = sum((r[0] + (n - 1) * r[2]) * st for r, n, st in zip(ranges, size, strides))
        buf = bytearray((last - first + 1) * info.dtype.itemsize)
        with open(self.dir / info.shard, "rb") as f:
            f.seek(info.offset + first * info.dtype.itemsize)
            if f.readinto(buf) != len(buf):
                raise self._error(f"{info.shard} is truncated at {key}")
        flat = np.frombuffer(buf, dtype=storage)
        steps = [r[2] * st * storage.itemsize for r, st in zip(ranges, strides)]
        return np.lib.stride_tricks.as_strided(flat, size, steps).copy()

    def mapped(self, shard: str) -> MappedFile:
        """`shard`, open for mapping its tensors one at a time (`MappedFile.tensor`)."""
        return MappedFile(self.dir / shard)

    def read(self, key: str):
        """A copy of tensor `key`, as a torch tensor of its dtype (imports torch)."""
        import torch

        info = self.tensors[key]
        with self.mapped(info.shard) as f:
            return torch.from_numpy(f.tensor(info).copy()).view(info.dtype.torch)

    @property
    def largest_shard_bytes(self) -> int:
        return max((self.dir / s).stat().st_size for s in self.shards)


def sample_index(shape: tuple[int, ...], rows: int = 8, width: int = 256) -> list[tuple[slice, ...]]:
    """A few small, evenly spaced windows of a tensor (row i, first `width` entries of its first column
    block): what a fingerprint reads instead of the whole tensor. Works the same on torch tensors and
    safetensors slices."""
    if not shape or shape[0] == 0:
        return [tuple()]
    n = shape[0]
    picks = sorted({round(j * (n - 1) / max(rows - 1, 1)) for j in range(rows)})
    tail = (slice(0, 1),) * max(len(shape) - 2, 0) + ((slice(0, width),) if len(shape) >= 2 else ())
    return [(slice(i, i + 1),) + tail for i in picks]
