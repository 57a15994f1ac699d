"""Streaming prune: from safetensors shards to pruned shards, without ever building the model.

Pruning needs only the scores, the plan and the weights, never a forward pass, so a checkpoint that
does not fit in memory twice (or even once) can be pruned: each source shard is read in turn, every tensor
is cut by the adapter's slicing rules (`AxisIndex` / `slice_tensor`, the same index maths as the in-memory
`prune`), and output shards are written with an index. Peak memory is about a few source tensors:
tensors are mapped in blocks of rows, and cut and written piece by piece (`stream_tensors`). Keys keep the
source's layout (e.g. Nemotron-H's `backbone.*`), with the kept layers renumbered; per-expert tensors that
transformers stacks on load are cut one by one as slices of the stacked tensor, and the kept experts
renumbered. The adapter's dropped parts (e.g. multi-token-prediction layers) are left out. The config is
written last, in the source's style (`config_style`); then the result is checked against the tensors that
config's model holds, as the adapter's layouts give them (`Adapter.expected_shapes`, no model is built):
every expected tensor present, none extra, every shape right. The source is checked the same way against
its own config first. The config is read, changed and written without transformers where its view of
config.json is exact (`architectures.config_read`), and key renamings come from pinned data
(`checkpoint.conversions`): a prune imports no modelling or config code. A forward-pass smoke test is opt-in (`smoke_test=True`), since it loads the result.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..architectures import ParamRule, get_adapter
from ..architectures.config_read import read_config
from ..checkpoint.dtypes import DType, dtype_of
from ..checkpoint.load import check_loading_info, check_weight_files, refuse_non_finite
from ..checkpoint.files import (INDEX_FILE, SINGLE_FILE, CheckpointFiles, CheckpointFormatError, KeyMap,
                               ShardWriter)
from ..checkpoint.config_style import write_config
from ..checkpoint.fingerprint import checkpoint_fingerprint
from ..output.atomic import atomic_directory
from ..importance.scores import Scores
from .apply import NotStreamable, PruneError, check_fingerprint, plan_selection, provenance, warn_dropped
from .export import INFO_FILE, carry_over
from .model_card import earlier_rounds, portable_source, write_model_card
from .plan import Plan
from .slicing import AxisIndex, split_layer_key
from .stream_tensors import WORKERS, Block, blocks, write_block

@dataclass
class _Entry:
    """One output tensor: where it comes from, its rule, and its name and shape in the output."""

    key: str
    out_key: str
    rule: object
    #: per dimension of the stored tensor, the indices kept (None: all); [] without a rule
    keep: list
    dtype: DType
    shape: tuple[int, ...]
    nbytes: int


def _kept_keys(files: CheckpointFiles, keymap: KeyMap, dropped) -> list[str]:
    """The checkpoint keys that go to the output: all but the adapter's dropped parts (e.g. MTP layers).
    A conversion the streaming prune cannot follow tensor by tensor is refused."""
    keys = [k for k in files.tensors if not any(p.holds(keymap.model_key(k)) for p in dropped)]
    convert = [k for k in keys if not keymap.sliceable(k)]
    if convert:
        raise NotStreamable(
            f"{len(convert)} tensors of this checkpoint (e.g. {convert[0]}) are converted by transformers on load "
            "in a way streaming prune cannot slice. Prune in memory instead (hybridprune prune --in-memory)."
        )
    return keys


def _refuse_quantized(source: Path) -> None:
    """A checkpoint whose config.json names a quantization (gpt-oss's MXFP4 experts: `*_blocks` / `*_scales`
    tensors) holds packed tensors the streaming prune does not dequantise: refused, with the in-memory prune
    (transformers dequantises on load) as the remedy."""
    try:
        quant = json.loads((source / "config.json").read_text()).get("quantization_config")
    except (OSError, ValueError):
        return  # read_config names an unreadable config
    if not quant:
        return
    method = quant.get("quant_method", "?") if isinstance(quant, dict) else "?"
    what = (" (MXFP4: each expert matrix stored as packed 4-bit `*_blocks` with one power-of-two `*_scales` byte "
            "per 32 values)") if method == "mxfp4" else ""
    raise NotStreamable(
        f"{source} is quantized (quantization_config quant_method {method!r}){what}; the streaming prune cuts "
        "stored tensors as they are and does not dequantise them. Prune in memory instead (hybridprune prune "
        "--in-memory): transformers dequantises the weights on load (MXFP4 to bfloat16, about 4x the experts' "
        "stored size), and the pruned checkpoint is written unquantized in the dtype loaded (bfloat16 for the Hub's "
        "gpt-oss, as its config says; --dtype sets another), hybridprune.json stating the dequantisation and sizes."
    )


def _renumbered(key: str, model_key: str, keymap: KeyMap, prefix: str, layer: int, rest: str, new: int) -> str:
    """Checkpoint key `key` (model key `prefix{layer}.{rest}`) with its layer index set to `new`. The
    index is found from the end when the name inside the layer is the model's, else from the start
    (where transformers renames the name inside the layer, e.g. Granite's `input_linear.weight`)."""
    tail = f"{layer}.{rest}"
    if key.endswith(tail):
        return f"{key[: len(key) - len(tail)]}{new}.{rest}"
    start = keymap.checkpoint_key(f"{prefix}{layer}.")
    if key.startswith(start):
        return f"{keymap.checkpoint_key(f'{prefix}{new}.')}{key[len(start):]}"
    raise PruneError(f"cannot renumber {key}: its layer index is not where {model_key} has it")


def _plan_entries(files: CheckpointFiles, keys: list[str], keymap: KeyMap, adapter, dims, selection,
                  index: AxisIndex, dtype: DType | None) -> list[_Entry]:
    model_keys = {key: keymap.model_key(key) for key in keys}
    stacked = {key: keymap.stacked(key) for key in keys}
    # Rules are written for the model's tensors: a stacked slice takes its merged tensor's rule.
    rules = adapter.param_rules(sorted({s.target if s else model_keys[k] for k, s in stacked.items()}), dims)
    starts = keymap.segment_starts({k: files.tensors[k].shape for k, s in stacked.items() if s is not None})
    renumber = {old: new for new, old in enumerate(selection.kept_blocks)}
    prefix = adapter.layers_prefix
    entries = []
    for key in keys:
        info = files.tensors[key]
        model_key = model_keys[key]
        out_key = key
        if (split := split_layer_key(model_key, prefix)) is not None:
            layer, rest = split
            if layer not in renumber:
                continue
            out_key = _renumbered(key, model_key, keymap, prefix, layer, rest, renumber[layer])
        part = stacked[key]
        rule = rules.get(part.target if part else model_key)
        if part is not None and rule is not None:
            # A part of the merged tensor. Slice `part.index` along the stacking axis: kept iff that index is
            # kept, renumbered to its place among the kept ones. Segment `part.segment` along the concatenation
            # axis: that axis restricted to the segment's window ("axis|start:stop", from the parts' stored
            # widths: transformers' own save splits into equal parts, the Hub's may not). Other dims: the rule's.
            axes = list(rule.axes)
            for dim, r in enumerate(part.region(tuple(info.shape), starts.get(key))):
                if r is not None and dim != part.dim and axes[dim] is not None:
                    axes[dim] = f"{axes[dim]}|{r[0]}:{r[1]}"
            if part.dim is not None:
                kept = index(axes[part.dim], rule.layer) if axes[part.dim] is not None else None
                if kept is not None:
                    where = np.flatnonzero(np.asarray(kept) == part.index)
                    if len(where) == 0:
                        continue
                    cut = len(key) - part.span[0]  # the layer renumbering only changed what comes before
                    out_key = f"{out_key[: len(out_key) - cut]}{int(where[0])}{key[part.span[1]:]}"
                del axes[part.dim]
            rule = ParamRule(rule.layer, tuple(axes))
        entries.append(_entry(key, out_key, rule, index, info, dtype))
    return entries


def _entry(key: str, out_key: str, rule, index: AxisIndex, info, dtype: DType | None) -> _Entry:
    shape = list(info.shape)
    keep = [index(axis, rule.layer) if axis is not None else None for axis in rule.axes] if rule else []
    for dim, idx in enumerate(keep):
        if idx is not None:
            shape[dim] = len(idx)
    out_dtype = dtype if dtype is not None and info.dtype.is_floating_point else info.dtype
    n = 1
    for s in shape:
        n *= s
    return _Entry(key, out_key, rule, keep, out_dtype, tuple(shape), n * out_dtype.itemsize)


def _assign_shards(entries: list[_Entry], max_bytes: int) -> list[list[_Entry]]:
    shards: list[list[_Entry]] = [[]]
    size = 0
    for e in entries:
        if shards[-1] and size + e.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += e.nbytes
    return shards


@contextmanager
def _progress(enabled: bool, total: int):
    """A progress bar over the bytes of source tensors read."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("pruning"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  disable=not enabled, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("pruning", total=total)
        yield lambda n: bar.advance(task, n)


def _shard_name(i: int, n: int) -> str:
    return SINGLE_FILE if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"


def _mismatch(config, adapter, shapes: dict[str, tuple[int, ...]], keymap: KeyMap) -> dict[str, list[str]]:
    """Model keys the config's model expects but the checkpoint tensors `shapes` (by checkpoint key)
    lack, have in excess, or have misshapen. Per-expert tensors are merged as transformers merges them
    on load; one missing is named (CheckpointFormatError)."""
    expected, tied = adapter.expected_shapes(config)
    got = {k: s for k, s in keymap.model_shapes(shapes, expected).items() if k not in tied}
    return {
        "missing_keys": sorted(set(expected) - set(got)),
        "unexpected_keys": sorted(set(got) - set(expected)),
        "mismatched_keys": sorted(k for k in set(expected) & set(got) if expected[k] != got[k]),
    }


def _check_source(source: Path, files: CheckpointFiles, keys: list[str], keymap: KeyMap, config, adapter) -> None:
    """The source checkpoint (less its dropped parts) fills its config's model exactly, as the load path
    requires."""
    try:
        found = _mismatch(config, adapter, {k: files.tensors[k].shape for k in keys}, keymap)
    except CheckpointFormatError as exc:
        raise CheckpointFormatError(f"cannot load the model in {source}: {exc}") from None
    check_loading_info(found, source)


def _check_against_config(config, written: dict[str, tuple[int, ...]], keymap: KeyMap, adapter) -> None:
    """Every tensor the pruned config's model expects is written with its shape, and nothing else."""
    found = _mismatch(config, adapter, written, keymap)
    missing, unexpected, wrong = found["missing_keys"], found["unexpected_keys"], found["mismatched_keys"]
    if missing or unexpected or wrong:
        raise PruneError(
            f"the written shards do not match the pruned config: missing {missing[:3]} ({len(missing)}), "
            f"unexpected {unexpected[:3]} ({len(unexpected)}), wrong shape {wrong[:3]} ({len(wrong)})"
        )


def _smoke_test(tmp: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, trust_remote_code=False)
    with torch.no_grad():
        logits = model(input_ids=torch.zeros(1, 4, dtype=torch.long), use_cache=False).logits
    if not torch.isfinite(logits).all():
        raise PruneError("the pruned checkpoint produces non-finite logits")


def stream_prune(
    source: str | os.PathLike,
    scores: Scores,
    plan: Plan | dict | str,
    out_dir: str | os.PathLike,
    *,
    max_shard_bytes: int | None = None,
    dtype=None,
    smoke_test: bool = False,
    overwrite: bool = False,
    strict_fingerprint: bool = False,
    progress: bool = False,
    expert_importance: str = "output_norm",
    serve_with=None,
    tensor_parallel: int = 1,
    gdn_importance: str = "out_proj",
) -> Path:
    """Prune the checkpoint in directory `source` to `plan` with `scores`, shard by shard, into `out_dir`.

    Gives the same tensors as `prune` on the loaded model followed by `export`, in the source's key
    layout. `max_shard_bytes` defaults to the source's largest shard; `dtype` (a torch dtype or its
    name, "bfloat16") casts floating-point tensors (default: keep the stored dtype; torch is imported
    only for a cast). Raises `PlanError`/`ScoresError`/
    `Unrepresentable` for a plan or scores that do not fit, `PruneError` if the result does not match
    its config, `CheckpointFormatError` for unreadable files, `NotServable` for a plan an engine of
    `serve_with` cannot serve (see `prune`). Returns `out_dir`.
    """
    source = Path(source)
    plan = Plan.parse(plan)
    dtype = None if dtype is None else dtype_of(dtype)
    _refuse_quantized(source)
    config = read_config(source)  # without transformers where its view of config.json is exact
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    check_weight_files(source, "checkpoint", allow_pickle=False)
    files = CheckpointFiles(source)
    keymap = KeyMap(config.model_type, converters_from=adapter.text_config(config).model_type)
    dropped = adapter.dropped_parts(config)
    keys = _kept_keys(files, keymap, dropped)
    _check_source(source, files, keys, keymap, config, adapter)
    check_fingerprint(scores, (config.model_type, adapter.text_config(config).model_type),
                      lambda: checkpoint_fingerprint(files, config),
                      strict=strict_fingerprint)
    selection, new_dims = plan_selection(adapter, dims, scores, plan, expert_importance, serve_with, tensor_parallel,
                                         gdn_importance)
    new_config = adapter.make_config(config, new_dims)
    stored = next((t.dtype for t in files.tensors.values() if t.dtype.is_floating_point), None)
    held = dtype or stored
    new_config.dtype = held.torch_name if held else None  # what the shards hold, as save_pretrained records it
    index = AxisIndex(selection, dims)
    warn_dropped(dropped)
    entries = _plan_entries(files, keys, keymap, adapter, dims, selection, index, dtype)
    shards = _assign_shards(entries, max_shard_bytes or files.largest_shard_bytes)
    shard_of = {e.key: i for i, shard in enumerate(shards) for e in shard}

    def write(tmp: Path) -> None:
        names = [_shard_name(i, len(shards)) for i in range(len(shards))]
        writers = [ShardWriter(tmp / name, [(x.out_key, x.dtype, x.shape) for x in shard])
                   for name, shard in zip(names, shards)]
        weight_map = {e.out_key: names[shard_of[e.key]] for e in entries}
        written = {e.out_key: e.shape for e in entries}
        sources = {shard: files.mapped(shard) for shard in {files.tensors[e.key].shard for e in entries}}

        def one(e: _Entry, keep: list, block: Block) -> int:  # in a worker: numpy, torch and writes release the GIL
            info = files.tensors[e.key]
            bad = write_block(writers[shard_of[e.key]], e.out_key, sources[info.shard], info, block, keep, e.dtype,
                              e.key)  # messages name the tensor as the checkpoint does
            advance(info.nbytes * (block.src[1] - block.src[0]) // max(info.shape[0], 1) if info.shape else info.nbytes)
            return bad

        bad: dict[str, int] = {}
        try:
            with _progress(progress, sum(files.tensors[e.key].nbytes for e in entries)) as advance, \
                    ThreadPoolExecutor(WORKERS) as pool:
                jobs = []
                for e in entries:
                    for block in blocks(files.tensors[e.key], e.keep[0] if e.keep else None):
                        jobs.append((keymap.model_key(e.key), pool.submit(one, e, e.keep, block)))
                try:
                    for name, job in jobs:
                        bad[name] = bad.get(name, 0) + job.result()
                except BaseException:
                    pool.shutdown(cancel_futures=True)
                    raise
        except BaseException:
            for w in writers:
                w.discard()
            raise
        finally:
            for f in sources.values():
                f.close()
        for w in writers:
            w.close()
        refuse_non_finite(sorted((name, n) for name, n in bad.items() if n), str(source))
        if len(shards) > 1:
            total = sum(e.nbytes for e in entries)
            index_doc = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            (tmp / INDEX_FILE).write_text(json.dumps(index_doc, indent=2) + "\n")
        carry_over(source, tmp)  # generation config, tokenizer, chat templates, code files, licence
        info = provenance(plan, selection, dims, new_dims, scores, adapter, expert_importance, dropped=dropped,
                          tensor_parallel=tensor_parallel, gdn_importance=gdn_importance)
        info.update(source=portable_source(source), method="streaming")
        if rounds := earlier_rounds(source):  # a later round: the card compares with the original model
            info["earlier_rounds"] = rounds
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")
        write_model_card(tmp, source, info)
        write_config(new_config, tmp, source)  # the config last: a directory without it is not a checkpoint
        _check_against_config(new_config, written, keymap, adapter)
        if smoke_test:
            _smoke_test(tmp)

    return atomic_directory(out_dir, write, overwrite=overwrite, what="the checkpoint",
                            size_hint=sum(e.nbytes for e in entries))

