"""A short fingerprint tying Scores to the model they were computed on, cheap at any size.

It hashes the model's dimensions and, for every stored tensor (by its model-side name), its shape and a
few small sampled windows of its values as float32 (`checkpoint.files.sample_index`). The same value comes
from a loaded model (`model_fingerprint`) and from its safetensors files without loading them
(`checkpoint_fingerprint`), so a streaming prune can check scores against a checkpoint it never builds,
reading kilobytes per tensor rather than the whole model a second time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..architectures import get_adapter
from .dtypes import as_float32
from .files import CheckpointFiles, KeyMap, sample_index

if TYPE_CHECKING:
    import torch


def _digest(dims, items) -> str:
    """`items`: (name, shape, windows as float32 arrays)."""
    h = hashlib.sha256(json.dumps(dims.as_dict(), sort_keys=True, default=str).encode())
    for name, shape, windows in sorted(items, key=lambda item: item[0]):
        h.update(f"{name}:{tuple(shape)}".encode())
        for w in windows:
            h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]


def model_fingerprint(model: torch.nn.Module) -> str:
    """The fingerprint of a loaded model (tied copies counted once, as a checkpoint stores them).

    A model whose weights are offloaded (accelerate's `device_map` with "disk" or "cpu" offload leaves
    them on the meta device) is fingerprinted from the checkpoint directory it was loaded from."""
    adapter = get_adapter(model)
    text = adapter.text_config(model.config)
    dims = get_adapter(text).dims(text)
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    state = model.state_dict()
    if adapter.carried_prefixes:  # a vision-language wrapper: the fingerprint of its language model
        keymap = KeyMap(adapter.text_config(model.config).model_type)
        state = {keymap.model_key(k): t for k, t in state.items() if not k.startswith(adapter.carried_prefixes)}
        tied = {keymap.model_key(k) for k in tied}
    if any(t.is_meta for t in state.values()):
        source = Path(str(getattr(model.config, "_name_or_path", "") or ""))
        if not (source / "config.json").is_file():
            raise ValueError("cannot fingerprint an offloaded model that was not loaded from a local directory")
        return checkpoint_fingerprint(CheckpointFiles(source), model.config)
    import torch

    items = []
    with torch.no_grad():
        for name, t in state.items():
            if name in tied:
                continue
            items.append((name, t.shape, [t[idx].detach().to("cpu", torch.float32).numpy()
                                          for idx in sample_index(tuple(t.shape))]))
    return _digest(dims, items)


def checkpoint_fingerprint(files: CheckpointFiles, config) -> str:
    """The fingerprint of a checkpoint on disk, equal to `model_fingerprint` of the model it loads into
    at the stored dtype (or a wider one). Parts the model does not load (the adapter's dropped parts,
    e.g. multi-token-prediction layers) are left out; per-expert tensors that transformers stacks on
    load are sampled as the stacked tensor."""
    adapter = get_adapter(config)
    text = adapter.text_config(config)
    dims = get_adapter(text).dims(text)
    dropped = adapter.dropped_parts(config)
    # a vision-language wrapper loads as its language model: its key names, without the vision tower
    keymap = KeyMap(adapter.text_config(config).model_type)
    items = []
    stacks: dict[str, dict[tuple[int | None, int], str]] = {}
    for shard in files.shards:
        for key in files.keys_in(shard):
            model_key = keymap.model_key(key)
            if any(part.holds(model_key) for part in dropped) or key.startswith(adapter.carried_prefixes):
                continue
            if (part := keymap.stacked(key)) is not None:
                stacks.setdefault(part.target, {})[part.index, part.segment] = key
                continue
            info = files.tensors[key]
            items.append((model_key, info.shape, [as_float32(files.window(key, idx), info.dtype)
                                                  for idx in sample_index(info.shape)]))
    if stacks:
        part_shapes = {k: files.tensors[k].shape for parts in stacks.values() for k in parts.values()}
        shapes, starts = keymap.model_shapes(part_shapes), keymap.segment_starts(part_shapes)
        for target, parts in stacks.items():
            shape = shapes[target]
            items.append((target, shape, [_merged_window(files, keymap, parts, starts, shape, idx)
                                          for idx in sample_index(shape)]))
    return _digest(dims, items)


def _merged_window(files: CheckpointFiles, keymap: KeyMap, parts: dict, starts: dict[str, int], shape: tuple[int, ...],
                   idx: tuple) -> np.ndarray:
    """Window `idx` of the tensor (of `shape`) that transformers merges from `parts` (checkpoint keys)
    by stacking and/or concatenating (a part at `starts[key]` along the concatenation axis), read from
    the parts it covers, as float32."""
    ranges = [s.indices(n)[:2] for s, n in zip(idx, shape)] + [(0, n) for n in shape[len(idx):]]
    out = None
    for key in parts.values():
        part = keymap.stacked(key)
        info = files.tensors[key]
        region = part.region(tuple(info.shape), starts.get(key))
        lo_hi = [(max(a, r[0]), min(b, r[1])) if r else (a, b) for (a, b), r in zip(ranges, region)]
        if any(lo >= hi for lo, hi in lo_hi):
            continue
        local = [slice(lo - (r[0] if r else 0), hi - (r[0] if r else 0)) for (lo, hi), r in zip(lo_hi, region)]
        if part.dim is not None:
            del local[part.dim]
        window = as_float32(files.window(key, tuple(local)), info.dtype)
        if part.dim is not None:
            window = np.expand_dims(window, part.dim)
        if out is None:
            out = np.empty(tuple(b - a for a, b in ranges), dtype=np.float32)
        out[tuple(slice(lo - a, hi - a) for (lo, hi), (a, _) in zip(lo_hi, ranges))] = window
    return out
