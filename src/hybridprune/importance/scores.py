"""`Scores`: per-unit importance of one model on one calibration set, saved once and reused.

Every candidate of a search is pruned from the same `Scores`, so they live on disk as safetensors
(the tensors) plus `scores.json` (what they were computed from). Loaded scores are numpy float32 arrays
(a streaming prune needs no torch); calibration's are torch tensors. Whatever reads them takes either,
through `as_float64`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..architectures import ATTENTION, GDN, MAMBA, MLP, MOE, Dims
from ..output.atomic import atomic_directory
from ..output.documents import DocumentError, Optional, read_document

TENSORS_FILE = "scores.safetensors"
META_FILE = "scores.json"

#: Per `Scores` table: the block kind whose units it scores, a label, and its shape on a model of
#: `Dims` (None: the model has no such entry, e.g. no shared expert). A new kind of prunable unit (or
#: a new axis in `Dims`) is one more row here, and `Scores.check_against` then checks it everywhere
#: scores meet a model.
PER_BLOCK: dict[str, tuple[str, str, Callable[[Dims], tuple | None]]] = {
    "mamba": (MAMBA, "Mamba [heads, head_dim]", lambda d: (d.mamba_num_heads, d.mamba_head_dim)),
    "ffn": (MLP, "FFN [ffn_hidden_size]", lambda d: (d.ffn_hidden_size,)),
    "attention": (ATTENTION, "attention [q_heads, head_dim]",
                  lambda d: (d.num_attention_heads, d.attention_head_dim)),
    "moe_experts": (MOE, "expert output norm [num_moe_experts]", lambda d: (d.num_moe_experts,)),
    "moe_router_weighted": (MOE, "router-weighted expert score [num_moe_experts]", lambda d: (d.num_moe_experts,)),
    "moe_frequency": (MOE, "expert routing frequency [num_moe_experts]", lambda d: (d.num_moe_experts,)),
    "moe_ffn": (MOE, "expert FFN [moe_ffn_hidden_size]", lambda d: (d.moe_ffn_hidden_size,)),
    "moe_shared_ffn": (MOE, "shared expert [moe_shared_expert_intermediate_size]",
                       lambda d: (d.moe_shared_expert_intermediate_size,)
                       if d.moe_shared_expert_intermediate_size else None),
    "gdn": (GDN, "GDN out_proj input [linear_num_value_heads, linear_value_head_dim]",
            lambda d: (d.linear_num_value_heads, d.linear_value_head_dim)),
    "gdn_value": (GDN, "GDN value branch [linear_num_value_heads, linear_value_head_dim]",
                  lambda d: (d.linear_num_value_heads, d.linear_value_head_dim)),
    "gdn_key": (GDN, "GDN query and key branches [linear_num_key_heads, linear_key_head_dim]",
                lambda d: (d.linear_num_key_heads, d.linear_key_head_dim)),
}
GROUPS = tuple(PER_BLOCK)
#: How experts can be ranked (`select(..., expert_importance=)`): the Scores table each reads.
EXPERT_IMPORTANCE = {"output_norm": "moe_experts", "router_weighted": "moe_router_weighted",
                     "frequency": "moe_frequency"}
#: Which activation ranks GDN value heads and value channels (`select(..., gdn_importance=)`): the input of
#: the output projection, after the gated norm ("out_proj"), or the value branch of the input projection.
GDN_IMPORTANCE = {"out_proj": "gdn", "value": "gdn_value"}
GLOBAL_ENTRIES = ("hidden", "depth_kld", "depth_bi")

if TYPE_CHECKING:
    import torch

#: One score table's values: a numpy array, or a torch tensor (calibration's).
Values = Any


def as_float64(values: Values) -> np.ndarray:
    """Score values (a numpy array, or a torch tensor on any device) as a float64 numpy array."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float64, copy=False)
    if hasattr(values, "detach"):  # a torch tensor: converted without importing torch here
        return values.detach().to("cpu").double().numpy()
    return np.asarray(values, dtype=np.float64)


def _is_float(values: Values) -> bool:
    if isinstance(values, np.ndarray):
        return np.issubdtype(values.dtype, np.floating)
    return bool(getattr(values, "is_floating_point", lambda: False)())

#: scores.json: the fields the library reads, with the types they must have when present.
META_SHAPE = {"model_type?": Optional(str), "fingerprint?": Optional(str), "num_samples?": Optional(int),
              "num_tokens?": Optional(int), "seq_len?": Optional(int), "depth_samples?": Optional(int),
              "dims?": Optional(dict)}


class ScoresError(ValueError):
    """Scores are missing, corrupt, or belong to a different model."""


class CalibrationError(ValueError):
    """Calibration could not produce meaningful scores (no data, NaNs)."""


@dataclass
class Scores:
    """Importance per prunable unit. Keys are original block indices.

    - `mamba[i]`: [heads, head_dim], mean |x| over tokens, L2 over samples (x slice of in_proj);
    - `ffn[i]`: [ffn], the same statistic on the input of the down projection;
    - `attention[i]`: [q_heads, head_dim], on the input of o_proj;
    - MoE blocks (one forward hook on the routed experts): `moe_experts[i]` [E], the mean L2 norm of
      each expert's output over the tokens routed to it (Minitron); `moe_router_weighted[i]` [E], the
      same norm weighted by the token's gate value (REAP, Lasby et al. 2025); `moe_frequency[i]` [E],
      the fraction of routed (token, slot) pairs it received; `moe_ffn[i]` [F_moe], the down-projection
      input statistic pooled over every routed (token, expert) pair, so all experts share one ranking;
      `moe_shared_ffn[i]` [F_shared], the shared expert like a dense MLP;
    - Gated DeltaNet mixers: `gdn[i]` [Hv, dv] on the input of the output projection (after the gated
      norm), `gdn_value[i]` [Hv, dv] on the value branch of the input projection, `gdn_key[i]` [Hk, dk]
      on the query and key branches (the L2 of the two statistics);
    - `hidden`: [hidden], per-block statistic of the pre-norm output, summed over blocks;
    - `depth_kld`, `depth_bi`: [blocks], KL divergence of logits with the block skipped, and
      Block Influence (1 - cos between the block's input and output).
    """

    mamba: dict[int, Values] = field(default_factory=dict)
    ffn: dict[int, Values] = field(default_factory=dict)
    attention: dict[int, Values] = field(default_factory=dict)
    moe_experts: dict[int, Values] = field(default_factory=dict)
    moe_router_weighted: dict[int, Values] = field(default_factory=dict)
    moe_frequency: dict[int, Values] = field(default_factory=dict)
    moe_ffn: dict[int, Values] = field(default_factory=dict)
    moe_shared_ffn: dict[int, Values] = field(default_factory=dict)
    gdn: dict[int, Values] = field(default_factory=dict)
    gdn_value: dict[int, Values] = field(default_factory=dict)
    gdn_key: dict[int, Values] = field(default_factory=dict)
    hidden: Values | None = None
    depth_kld: Values | None = None
    depth_bi: Values | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: where these scores were loaded from (for error messages); not saved
    origin: str | None = field(default=None, repr=False, compare=False)

    # ---- belonging to a model --------------------------------------------------------------------
    def check_against(self, dims: Dims, where: str | None = None, owners: dict | None = None) -> None:
        """Raise ScoresError unless every entry fits a model of `dims` and is finite.

        Checked: one entry per block of each scored kind, of that kind's shape (`PER_BLOCK`), and no
        entry for a block that is not of its kind; `hidden` of [hidden_size]; depth scores, when
        present, of [blocks]. Scores of another model would otherwise select the wrong units silently
        or fail deep inside slicing; NaN depth scores would drop arbitrary blocks. `owners`
        (`Adapter.unit_owners`): units shared between layers are scored once, under their owning layer.
        """
        owners = owners or {}
        where = where or (f"the scores in {self.origin}" if self.origin else "the given scores")
        fix = "they were not computed on this model: run `hybridprune calibrate` on it"
        for group, (kind, label, shape_of) in PER_BLOCK.items():
            table = getattr(self, group)
            blocks = sorted({owners.get((kind, i), i) for i in dims.layers_of(kind)})
            expected = shape_of(dims) if blocks else None
            if blocks and expected is None:
                blocks = []  # the units exist, but not this part of them (a MoE without shared expert)
            stray = sorted(set(table) - set(blocks))
            if stray:
                raise ScoresError(
                    f"{where}: entries {[f'{group}.{i}' for i in stray]} name blocks that are not {kind} "
                    f"blocks of this model (its {kind} blocks: {blocks}); {fix}")
            for i in blocks:
                if i not in table:
                    raise ScoresError(f"{where}: no entry '{group}.{i}' for {kind} block {i}; {fix}")
                _check_entry(table[i], f"{group}.{i}", tuple(expected), label, where, fix)
        if self.hidden is None:
            raise ScoresError(f"{where}: no entry 'hidden' (hidden-channel scores); {fix}")
        _check_entry(self.hidden, "hidden", (dims.hidden_size,), "hidden [hidden_size]", where, fix)
        for name in ("depth_kld", "depth_bi"):
            t = getattr(self, name)
            if t is not None:
                _check_entry(t, name, (dims.num_layers,), "depth [blocks]", where, fix)

    # ---- persistence -------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """Every entry by its saved name, as contiguous float32 CPU torch tensors (imports torch)."""
        import torch

        out = {}
        for group in GROUPS:
            for i, t in getattr(self, group).items():
                out[f"{group}.{i}"] = t
        for name in ("hidden", "depth_kld", "depth_bi"):
            t = getattr(self, name)
            if t is not None:
                out[name] = t
        out = {k: torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v for k, v in out.items()}
        return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}

    def write_files(self, directory: str | os.PathLike) -> None:
        """Write the two files into an existing directory (`save` is the atomic whole)."""
        from safetensors.torch import save_file

        save_file(self.tensors(), str(Path(directory) / TENSORS_FILE))
        (Path(directory) / META_FILE).write_text(json.dumps(self.meta, indent=2, sort_keys=True) + "\n")

    def save(self, directory: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """Write atomically: a temporary sibling directory renamed into place. `overwrite` replaces
        earlier scores, never a directory holding files hybridprune did not write."""
        return atomic_directory(directory, self.write_files, overwrite=overwrite, what="the scores")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Scores":
        """The scores saved in `directory`, as numpy float32 arrays."""
        from safetensors.numpy import load_file

        directory = Path(directory)
        tensors_path, meta_path = directory / TENSORS_FILE, directory / META_FILE
        if not tensors_path.is_file() or not meta_path.is_file():
            raise ScoresError(
                f"no scores in {directory}: expected {TENSORS_FILE} and {META_FILE}. "
                "Run `hybridprune calibrate` first."
            )
        redo = "re-run `hybridprune calibrate` to write them again"
        try:
            tensors = load_file(str(tensors_path))
        except Exception as exc:  # safetensors reports corruption as several exception types
            raise ScoresError(f"scores in {directory}: {TENSORS_FILE} is unreadable ({exc}); {redo}") from None
        meta = _read_meta(meta_path, redo)
        scores = cls(meta=meta, origin=str(directory))
        for key, t in tensors.items():
            group, _, index = key.partition(".")
            if group in GROUPS and index.isdigit() and index.isascii():
                getattr(scores, group)[int(index)] = t
            elif key in GLOBAL_ENTRIES:
                setattr(scores, key, t)
            else:
                raise ScoresError(
                    f"scores in {directory}: unknown entry {key!r} in {TENSORS_FILE} (entries are hidden, "
                    f"depth_kld, depth_bi and {', '.join(g + '.<block>' for g in GROUPS)}); {redo}")
        return scores

    def summary(self) -> dict[str, Any]:
        return {
            "samples": self.meta.get("num_samples"),
            "tokens": self.meta.get("num_tokens"),
            "mamba_layers": sorted(self.mamba),
            "ffn_layers": sorted(self.ffn),
            "attention_layers": sorted(self.attention),
            "moe_layers": sorted(self.moe_experts),
            "gdn_layers": sorted(self.gdn),
            "depth": [n for n in ("depth_kld", "depth_bi") if getattr(self, n) is not None],
        }


def _check_entry(t: Any, name: str, expected: tuple | None, label: str, where: str, fix: str) -> None:
    if not hasattr(t, "shape") or not _is_float(t):
        raise ScoresError(f"{where}: entry {name!r} is not a floating-point tensor; {fix}")
    if expected is not None and tuple(t.shape) != tuple(expected):
        raise ScoresError(f"{where}: entry {name!r} has shape {list(t.shape)}, but this model's {label} "
                          f"is {list(expected)}; {fix}")
    finite = np.isfinite(as_float64(t))
    if not finite.all():
        bad = int((~finite).sum())
        raise ScoresError(f"{where}: entry {name!r} holds {bad} non-finite value(s) (NaN or Inf) of "
                          f"{finite.size}; the calibration diverged: calibrate again, e.g. with --dtype float32")


def _read_meta(path: Path, redo: str) -> dict[str, Any]:
    """scores.json as a dict whose known fields have the types the library reads them as."""
    try:
        return read_document(path, META_SHAPE, fix=redo)
    except DocumentError as exc:
        raise ScoresError(str(exc)) from None


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash tying Scores to the model they came from (`hybridprune.checkpoint.fingerprint`): the same value
    as the checkpoint's files give, so a streaming prune can check scores without loading the model."""
    from ..checkpoint.fingerprint import model_fingerprint as fingerprint

    return fingerprint(model)
