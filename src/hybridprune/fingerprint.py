"""A short fingerprint tying Scores to the model they were computed on, cheap at any size.

It hashes the model's dimensions and, for every stored tensor (by its model-side name), its shape and a
few small sampled windows of its values as float32 (`checkpoint_files.sample_index`). The same value comes
from a loaded model (`model_fingerprint`) and from its safetensors files without loading them
(`checkpoint_fingerprint`), so a streaming prune can check scores against a checkpoint it never builds,
reading kilobytes per tensor rather than the whole model a second time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .architectures import get_adapter
from .checkpoint_files import CheckpointFiles, KeyMap, sample_index


def _digest(dims, items) -> str:
    h = hashlib.sha256(json.dumps(dims.as_dict(), sort_keys=True, default=str).encode())
    for name, shape, windows in sorted(items, key=lambda item: item[0]):
        h.update(f"{name}:{tuple(shape)}".encode())
        for w in windows:
            h.update(w.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def model_fingerprint(model: torch.nn.Module) -> str:
    """The fingerprint of a loaded model (tied copies counted once, as a checkpoint stores them).

    A model whose weights are offloaded (accelerate's `device_map` with "disk" or "cpu" offload leaves
    them on the meta device) is fingerprinted from the checkpoint directory it was loaded from."""
    dims = get_adapter(model).dims(model.config)
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    state = model.state_dict()
    if any(t.is_meta for t in state.values()):
        source = Path(str(getattr(model.config, "_name_or_path", "") or ""))
        if not (source / "config.json").is_file():
            raise ValueError("cannot fingerprint an offloaded model that was not loaded from a local directory")
        return checkpoint_fingerprint(CheckpointFiles(source), model.config)
    items = []
    with torch.no_grad():
        for name, t in state.items():
            if name in tied:
                continue
            items.append((name, t.shape, [t[idx] for idx in sample_index(tuple(t.shape))]))
    return _digest(dims, items)


def checkpoint_fingerprint(files: CheckpointFiles, config) -> str:
    """The fingerprint of a checkpoint on disk, equal to `model_fingerprint` of the model it loads into
    at the stored dtype (or a wider one). Parts the model does not load (the adapter's dropped parts,
    e.g. multi-token-prediction layers) are left out; per-expert tensors that transformers stacks on
    load are sampled as the stacked tensor."""
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    dropped = adapter.dropped_parts(config)
    keymap = KeyMap(config.model_type)
    items = []
    stacks: dict[str, dict[tuple[int, int], str]] = {}
    for shard in files.shards:
        for key in files.keys_in(shard):
            model_key = keymap.model_key(key)
            if any(part.holds(model_key) for part in dropped):
                continue
            if (part := keymap.stacked(key)) is not None:
                stacks.setdefault(part.target, {})[(part.part, part.index)] = key
                continue
            info = files.tensors[key]
            items.append((model_key, info.shape, [files.window(key, idx) for idx in sample_index(info.shape)]))
    if stacks:
        shapes = keymap.model_shapes({k: files.tensors[k].shape for parts in stacks.values() for k in parts.values()})
        for target, parts in stacks.items():
            first = keymap.stacked(next(iter(parts.values())))
            shape = shapes[target]
            items.append((target, shape, [_stacked_window(files, parts, first, shape, idx)
                                          for idx in sample_index(shape)]))
    return _digest(dims, items)


def _stacked_window(files: CheckpointFiles, parts: dict[tuple[int, int], str], s, shape: tuple[int, ...],
                    idx: tuple) -> torch.Tensor:
    """Window `idx` of the tensor `shape` that stacks `parts` ((part, slice number) -> checkpoint key)
    along `s.dim` (and concatenates the parts along `s.concat_dim`), read from the slices it covers."""
    idx = tuple(idx) + (slice(None),) * (len(shape) - len(idx))
    rest = list(idx[: s.dim] + idx[s.dim + 1:])
    c = None if s.concat_dim is None else s.concat_dim - (1 if s.concat_dim > s.dim else 0)
    pieces = []
    for j in range(shape[s.dim])[idx[s.dim]]:
        if c is None:
            pieces.append(files.window(parts[(0, j)], tuple(rest)).unsqueeze(s.dim))
            continue
        n = shape[s.concat_dim] // s.parts
        lo, hi, _ = rest[c].indices(shape[s.concat_dim])
        bits = []
        for p in range(s.parts):
            a, b = max(lo, p * n), min(hi, (p + 1) * n)
            if a < b:
                local = list(rest)
                local[c] = slice(a - p * n, b - p * n)
                bits.append(files.window(parts[(p, j)], tuple(local)))
        pieces.append(torch.cat(bits, dim=c).unsqueeze(s.dim))
    return torch.cat(pieces, dim=s.dim)
