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
    text = adapter.text_config(config)
    dims = get_adapter(text).dims(text)
    dropped = adapter.dropped_parts(config)
    # a vision-language wrapper loads as its language model: its key names, without the vision tower
    keymap = KeyMap(adapter.text_config(config).model_type)
    items = []
    stacks: dict[str, dict[int, str]] = {}
    for shard in files.shards:
        for key in files.keys_in(shard):
            model_key = keymap.model_key(key)
            if any(part.holds(model_key) for part in dropped) or key.startswith(adapter.carried_prefixes):
                continue
            if (part := keymap.stacked(key)) is not None:
                stacks.setdefault(part.target, {}).setdefault(part.part, {})[part.index] = key
                continue
            info = files.tensors[key]
            items.append((model_key, info.shape, [files.window(key, idx) for idx in sample_index(info.shape)]))
    if stacks:
        shapes = keymap.model_shapes({k: files.tensors[k].shape for by_part in stacks.values()
                                      for parts in by_part.values() for k in parts.values()})
        for target, by_part in stacks.items():
            s = keymap.stacked(next(iter(by_part[min(by_part)].values())))
            shape = shapes[target]
            sizes = {q: keymap._stacked_shape(target, s, {j: (k, files.tensors[k].shape) for j, k in parts.items()}, None)
                     for q, parts in by_part.items()}
            items.append((target, shape, [_merged_window(files, by_part, s, sizes, shape, idx)
                                          for idx in sample_index(shape)]))
    return _digest(dims, items)


def _merged_window(files: CheckpointFiles, by_part: dict, s, sizes: dict, shape: tuple, idx: tuple) -> torch.Tensor:
    """Window `idx` of the model tensor that transformers builds from checkpoint pieces (`by_part`: part ->
    slice number -> key), stacked along `s.dim` and concatenated along `s.concat_dim`."""
    if s.concat_dim is None:
        return _piece_window(files, by_part[0], s.dim, idx)
    c = s.concat_dim
    full = tuple(idx) + (slice(None),) * (len(shape) - len(idx))
    wanted = range(shape[c])[full[c]]
    pieces, offset = [], 0
    for q in sorted(by_part):
        n = sizes[q][c]
        lo, hi = max(wanted.start, offset), min(wanted.stop, offset + n)
        if lo < hi:
            sub = full[:c] + (slice(lo - offset, hi - offset),) + full[c + 1:]
            pieces.append(_piece_window(files, by_part[q], s.dim, sub))
        offset += n
    return torch.cat(pieces, dim=c)


def _piece_window(files: CheckpointFiles, parts: dict, dim: int | None, idx: tuple) -> torch.Tensor:
    if dim is None:  # concatenated only: one checkpoint tensor
        return files.window(parts[None], idx)
    return _stacked_window(files, parts, dim, idx)


def _stacked_window(files: CheckpointFiles, parts: dict[int, str], dim: int, idx: tuple) -> torch.Tensor:
    """Window `idx` of the tensor that stacks `parts` (slice number -> checkpoint key) along `dim`,
    read from the slices it covers."""
    along = idx[dim] if dim < len(idx) else slice(None)
    rest = idx[:dim] + idx[dim + 1:]
    pieces = []
    for j in range(len(parts))[along]:
        pieces.append(files.window(parts[j], rest).unsqueeze(dim))
    return torch.cat(pieces, dim=dim)
