"""`prune`: Scores + Plan -> a new, smaller model rebuilt from its config.

Slicing rebuilds rather than mutates: slice the state dict, write the new config, build the model
from the config, `load_state_dict(strict=True)`, and check that it runs. In-place surgery would
leave derived attributes (conv groups, norm group sizes, KV-group counts, cache indices) stale.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..architectures import get_adapter
from ..importance.scores import Scores, ScoresError, model_fingerprint
from .plan import Plan
from .selection import Selection, select
from .slicing import iter_sliced

if TYPE_CHECKING:  # torch is imported where a model is pruned: the streaming prune shares this module
    import torch


class PruneError(RuntimeError):
    """The pruned model could not be built or does not run."""


class NotStreamable(PruneError, ValueError):
    """The checkpoint stores tensors that transformers converts on load in a way the streaming prune
    cannot follow tensor by tensor: a refusal of the input (exit 2), with the in-memory prune as remedy."""


def check_fingerprint(scores: Scores, model_type: str | tuple[str, ...], fingerprint, *, strict: bool) -> None:
    """Scores of another model type are refused; of another model (fingerprint), a warning or, with
    `strict`, refused. `fingerprint` is the model's, or a callable computing it (only if needed).
    `model_type`: the model's, or the types it is known as (a vision-language wrapper and its language model)."""
    types = (model_type,) if isinstance(model_type, str) else tuple(model_type)
    if scores.meta.get("model_type") not in (None, *types):
        raise ScoresError(f"these scores are for a {scores.meta['model_type']!r} model, not {types[0]!r}")
    expected = scores.meta.get("fingerprint")
    if expected and expected != (fingerprint() if callable(fingerprint) else fingerprint):
        message = ("the scores were computed on a different model (fingerprint mismatch); "
                   "re-run calibration on this checkpoint for meaningful importance")
        if strict:
            raise ScoresError(message)
        warnings.warn(message, stacklevel=3)


def plan_selection(adapter, dims, scores: Scores, plan: Plan, expert_importance: str = "output_norm",
                   serve_with=(), tensor_parallel: int = 1, gdn_importance: str = "out_proj") -> tuple[Selection, object]:
    """The checked plan's selection and the pruned dimensions, shared by `prune` and the streaming prune:
    the plan fits the model, the scores fit the model, the widths can be written as a config (and served
    by the engines of `serve_with`), then the group-aware selection (`expert_importance`: how routed
    experts are ranked; `gdn_importance`: which activation ranks GDN value heads; see `select`)."""
    plan.validate(dims)
    scores.check_against(dims, owners=adapter.unit_owners(dims))
    # Widths first: a target the config cannot write is refused before any scores are needed.
    check_plan_dims(adapter, dims, plan.target_dims(dims, list(range(dims.num_layers))), serve_with, tensor_parallel)
    selection = select(scores, plan, dims, adapter.required_kinds, adapter.unit_owners(dims),
                       expert_importance=expert_importance, gdn_importance=gdn_importance)
    new_dims = plan.target_dims(dims, selection.kept_blocks)
    check_plan_dims(adapter, dims, new_dims, serve_with, tensor_parallel)
    return selection, new_dims


def check_plan_dims(adapter, dims, new_dims, serve_with=(), tensor_parallel: int = 1) -> None:
    """Raise Unrepresentable when the config cannot write `new_dims`, or NotServable when an engine of
    `serve_with` (names, see `architectures.serving`) cannot serve them at `tensor_parallel`."""
    from ..architectures.serving import check_servable, check_tensor_parallel, parse_engines

    adapter.check_representable(new_dims, original=dims)
    engines = parse_engines(serve_with)
    check_tensor_parallel(tensor_parallel, engines)
    check_servable(adapter, new_dims, engines, tensor_parallel, original=dims)


def prune(model: torch.nn.Module, scores: Scores, plan: Plan | dict | str, *,
          strict_fingerprint: bool = False, fingerprint: str | None = None,
          expert_importance: str = "output_norm", serve_with=None, tensor_parallel: int = 1,
          gdn_importance: str = "out_proj") -> torch.nn.Module:
    """Return a pruned copy of `model` (the original is untouched).

    `plan` is a `Plan`, a dict, a YAML/JSON path or an `a=1,b=2` string; fields left out keep
    their size. The result carries `hybridprune_info` (plan, selection sizes, provenance) that
    `hybridprune.export` writes to `hybridprune.json`. `fingerprint`: the model's fingerprint when
    the caller already has it (a search prunes one model many times; hashing its weights once is enough).
    `expert_importance`: how a MoE model's routed experts are ranked: "output_norm" (Minitron),
    "router_weighted" (REAP) or "frequency".
    `gdn_importance`: which activation ranks a Gated DeltaNet model's value heads and channels: "out_proj"
    (the output projection's input, after the gated norm) or "value" (the input projection's value branch).
    `serve_with`: serving engines ("vllm,llama.cpp" or a list) the result must run on: a plan one of them
    cannot serve (at `tensor_parallel` GPUs for vLLM) raises `NotServable` naming the rule and the
    nearest valid values. Either way `hybridprune_info["serving"]` records which engines are expected
    to serve the result.
    """
    plan = Plan.parse(plan)
    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    check_fingerprint(scores, (model.config.model_type, adapter.text_config(model.config).model_type),
                      fingerprint or (lambda: model_fingerprint(model)),
                      strict=strict_fingerprint)
    selection, new_dims = plan_selection(adapter, dims, scores, plan, expert_importance, serve_with, tensor_parallel,
                                         gdn_importance)
    dropped = adapter.dropped_parts(model.config)
    warn_dropped(dropped)
    pruned = apply_selection(model, selection, new_dims)
    pruned.hybridprune_info = provenance(plan, selection, dims, new_dims, scores, adapter, expert_importance,
                                         dropped=dropped, tensor_parallel=tensor_parallel,
                                         gdn_importance=gdn_importance)
    return pruned


def warn_dropped(dropped) -> None:
    """Say which parts of the source (the adapter's `dropped_parts`) the pruned output leaves out."""
    for part in dropped:
        warnings.warn(f"left out of the pruned checkpoint: {part.description}", stacklevel=3)


def apply_selection(model: torch.nn.Module, selection: Selection, new_dims) -> torch.nn.Module:
    """Build the model that keeps exactly `selection` (sizes `new_dims`): slice, write the config,
    rebuild, load strictly, smoke-test. `prune` derives the selection from scores; experiments and
    tests can pass their own."""
    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    adapter.check_representable(new_dims, original=dims)
    config = adapter.make_config(model.config, new_dims)
    param = next(model.parameters())
    pruned = adapter.build_model(config, dtype=param.dtype, init_weights=False)  # every weight is loaded next
    try:
        load_in_chunks(pruned, iter_sliced(model.state_dict(), adapter, dims, selection))
    except RuntimeError as exc:
        raise PruneError(f"the sliced weights do not fit the rebuilt {config.model_type} model: {exc}") from exc
    pruned.to(param.device).eval()
    _smoke_test(pruned)
    return pruned


CHUNK_BYTES = 64 * 2**20


def load_in_chunks(model: torch.nn.Module, items, chunk_bytes: int | None = None) -> None:
    """Load `(key, tensor)` pairs into `model` as strictly as `load_state_dict(strict=True)` (every key
    of the model's state filled, no other key, every shape equal), about `chunk_bytes` (default
    `CHUNK_BYTES`) at a time.

    Why in chunks: a whole sliced state dict beside the rebuilt model is a second copy of the pruned
    model; loaded as it is sliced, the prune's peak is the source model plus the pruned one.
    Raises RuntimeError naming the missing and unexpected keys, or the shape that does not fit."""
    chunk_bytes = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    expected = set(model.state_dict())
    seen: set[str] = set()
    unexpected: list[str] = []
    chunk: dict = {}
    size = 0

    def flush() -> None:
        if chunk:
            unexpected.extend(model.load_state_dict(chunk, strict=False).unexpected_keys)
            chunk.clear()

    for key, tensor in items:
        chunk[key] = tensor
        seen.add(key)
        size += tensor.numel() * tensor.element_size()
        if size >= chunk_bytes:
            flush()
            size = 0
    flush()
    missing = sorted(expected - seen)
    if missing or unexpected:
        raise RuntimeError(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
                           f"unexpected keys {sorted(unexpected)[:8]}{' ...' if len(unexpected) > 8 else ''}")


def _smoke_test(model: torch.nn.Module) -> None:
    import torch

    ids = torch.zeros(1, 4, dtype=torch.long, device=next(model.parameters()).device)
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits
    if not torch.isfinite(logits.float()).all():
        raise PruneError("the pruned model produces non-finite logits")


def provenance(plan: Plan, selection: Selection, dims, new_dims, scores: Scores, adapter,
               expert_importance: str = "output_norm", *, dropped=(), tensor_parallel: int = 1,
               gdn_importance: str = "out_proj") -> dict[str, Any]:
    """What `hybridprune.json` records; `dropped`: the source's parts left out (`Adapter.dropped_parts`);
    `serving`: which engines are expected to serve the result (`architectures.serving`)."""
    from ..architectures.serving import serving_record

    info = {
        "hybridprune_version": __version__,
        "plan": plan.to_dict(),
        "kept_blocks": selection.kept_blocks,
        "dropped_blocks": [i for i in range(dims.num_layers) if i not in selection.kept_blocks],
        "scores": {k: scores.meta.get(k) for k in ("fingerprint", "num_samples", "num_tokens", "seq_len")},
        "parameters": {"before": adapter.num_parameters(dims), "after": adapter.num_parameters(new_dims)},
        "dims_before": dims.as_dict(),
        "dims_after": new_dims.as_dict(),
        "left_out": [part.description for part in dropped],
        "serving": serving_record(adapter.model_type, new_dims, tensor_parallel),
    }
    if dims.num_moe_experts is not None:
        info["active_parameters"] = {"before": adapter.num_active_parameters(dims),
                                     "after": adapter.num_active_parameters(new_dims)}
        info["expert_importance"] = expert_importance
        info["kept_experts"] = {str(i): t.tolist() for i, t in selection.moe_experts.items()}
    if dims.linear_num_key_heads is not None:
        info["gdn_importance"] = gdn_importance
        info["kept_gdn_value_heads"] = {str(i): t.tolist() for i, t in selection.gdn_value_heads.items()}
    return info
