"""The prune stage: apply a plan to a checkpoint with saved scores and write a plain HF checkpoint.

`hybridprune prune`, a recipe's `prune:` section and the Python API run `run` with `PruneSettings`.
By default the checkpoint is streamed tensor by tensor into pruned shards (peak memory about three of
its largest tensors); `in_memory` loads the whole model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .common import SILENT, Loader, Voice, say_forecast


@dataclass
class PruneSettings:
    """The prune stage's options (flags `--expert-importance`, ...; recipe keys `prune.expert_importance`, ...).

    `plan`: 'hidden_size=3072,...', a YAML/JSON file, or a mapping of plan fields (required: a
    recipe's search stage gives it when the section does not)."""

    plan: str | dict | None = None
    strict_fingerprint: bool = False
    expert_importance: str = "output_norm"
    gdn_importance: str = "out_proj"
    in_memory: bool = False
    smoke_test: bool = False
    device: str = "cpu"
    dtype: str = "auto"
    force: bool = False
    trust_remote_code: bool = False
    serve_with: str | None = None
    tensor_parallel: int = 1


def check(s: PruneSettings) -> None:
    """The settings' own rules, and the device, before anything is read (SettingError/OptionError)."""
    from ..checkpoint.devices import check_device
    from ..options import PRUNE, SettingError

    check_device(s.device)
    PRUNE.check({k: v for k, v in dataclasses.asdict(s).items() if k in PRUNE})
    if s.trust_remote_code and not s.in_memory:
        raise SettingError("--trust-remote-code needs --in-memory: a streaming prune never runs the checkpoint's code")


def run(s: PruneSettings, model: str | Path, scores: str | Path, out: str | Path, *, overwrite: bool = False,
        plan=None, voice: Voice = SILENT, loader: Loader | None = None) -> tuple[Path, dict]:
    """Prune the checkpoint `model` (a directory or a Hub id) to `s.plan` with the scores in directory
    `scores`, into `out`; returns the output directory and its `hybridprune.json` (what was pruned).
    `plan`: the plan already parsed (a recipe parses its plan once, when it plans its stages, or takes
    it from its search), in place of `s.plan`."""
    from ..checkpoint.load import resolve
    from ..options import SettingError
    from ..output.atomic import check_output
    from ..pruning.plan import Plan

    # Everything that can be checked without the weights is checked first: the plan even without the
    # config (and without torch, which the modules below import).
    check(s)
    if plan is None and s.plan is None:
        raise SettingError("give a plan: --plan 'hidden_size=3072,...' or a YAML/JSON file (in a recipe: "
                           "prune.plan, or a search section)")
    parsed = Plan.parse(s.plan) if plan is None else plan
    check_output(out, overwrite=overwrite)
    model = resolve(model, role="model")  # a local directory; a Hub id is fetched (safetensors only)
    adapter, dims, config = _model_checked(s, model, parsed, voice)
    from ..importance.scores import Scores

    loaded = Scores.load(scores)
    loaded.check_against(dims, owners=adapter.unit_owners(dims))
    keywords = {"strict_fingerprint": s.strict_fingerprint, "expert_importance": s.expert_importance,
                "gdn_importance": s.gdn_importance, "serve_with": s.serve_with, "tensor_parallel": s.tensor_parallel}
    if not s.in_memory:
        return _stream(s, model, loaded, parsed, out, (adapter, dims, config), {**keywords, "overwrite": overwrite},
                       voice=voice)
    from ..checkpoint.devices import weight_bytes
    from ..checkpoint.forecast import forecast_prune
    from ..pruning.apply import prune
    from ..pruning.export import export

    say_forecast(voice, forecast_prune(adapter, dims, weight_bytes=weight_bytes(config, s.dtype, s.device),
                                       device=str(s.device)),
                 force=s.force, lower="the model's memory: drop --in-memory to stream it")
    lm = (loader or Loader()).model(model, s, whole=True)
    pruned = prune(lm, loaded, parsed, **keywords)
    return export(pruned, out, tokenizer_from=model, source=str(model), overwrite=overwrite), pruned.hybridprune_info


def check_model(s: PruneSettings, model: str | Path, plan, voice: Voice = SILENT):
    """Refuse settings or a parsed `plan` that do not fit checkpoint `model` (PlanError, SettingError,
    PruneError), from its config alone: a recipe checks its fixed plan so before its first stage."""
    _model_checked(s, Path(model), plan, voice)


def _model_checked(s: PruneSettings, model: Path, plan, voice: Voice):
    """(adapter, dims, config) of `model`, once the options and the plan are known to fit it."""
    from ..architectures import get_adapter
    from ..checkpoint.load import load_config
    from ..pruning.plan import PlanError
    from .checks import check_gdn_options, check_moe_options

    # a streaming prune reads config.json without transformers where the adapter's view of it is exact
    config = load_config(model, trust_remote_code=s.trust_remote_code, view=not s.in_memory)
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    check_moe_options(dims, config.model_type, expert_importance=s.expert_importance)
    check_gdn_options(dims, config.model_type, s.gdn_importance)
    try:
        plan.validate(dims)
    except PlanError as exc:  # a plan file that does not fit this model: say which file
        raise PlanError(f"plan file {s.plan}: {exc}" if is_plan_file(s.plan) else str(exc)) from None
    _check_serving(adapter, dims, plan, s.serve_with, s.tensor_parallel, voice)
    return adapter, dims, config


def _stream(s: PruneSettings, model: Path, scores, plan, out, described, keywords: dict, *,
            voice: Voice) -> tuple[Path, dict]:
    from ..checkpoint.dtypes import stored_bytes
    from ..checkpoint.files import CheckpointFiles
    from ..checkpoint.forecast import forecast_prune
    from ..checkpoint.load import check_weight_files
    from ..pruning.streaming import stream_prune

    adapter, dims, config = described
    check_weight_files(model, "checkpoint", allow_pickle=False)  # pickle-only: say how to convert
    largest = max((t.nbytes for t in CheckpointFiles(model).tensors.values()), default=0)
    streamed = forecast_prune(adapter, dims, weight_bytes=stored_bytes(config, s.dtype), largest_tensor_bytes=largest)
    say_forecast(voice, streamed, force=s.force, lower="nothing (streaming holds three tensors at a time)")
    path = stream_prune(model, scores, plan, out, dtype=None if s.dtype == "auto" else s.dtype,
                        smoke_test=s.smoke_test, progress=True, **keywords)
    return path, written_info(path)


def _check_serving(adapter, dims, plan, serve_with: str | None, tensor_parallel: int, voice: Voice) -> None:
    """Before the scores are read: refuse a plan an engine of `serve_with` cannot serve; without
    `serve_with`, one warning per common engine whose rules the plan breaks."""
    from ..architectures.serving import warnings_for
    from ..pruning.apply import check_plan_dims

    target = plan.target_dims(dims, list(range(dims.num_layers)))
    check_plan_dims(adapter, dims, target, serve_with or (), tensor_parallel)
    if serve_with is None:
        for line in warnings_for(adapter.model_type, target):
            voice.warn(line)


def is_plan_file(plan) -> bool:
    if not isinstance(plan, str):
        return False
    try:
        return Path(plan).is_file()
    except (OSError, ValueError):  # a plan string longer than a file name may be
        return False


_COUNTS = {"before": int, "after": int}
#: hybridprune.json as the summary reads it
SUMMARY_SHAPE = {"dims_before": {"block_kinds": list}, "dims_after": {"block_kinds": list}, "dropped_blocks": [int],
                 "parameters?": _COUNTS, "active_parameters?": _COUNTS}


def written_info(path: Path) -> dict:
    """The `hybridprune.json` a streaming prune just wrote, as the summary reads it."""
    from ..output.documents import read_document

    return read_document(path / "hybridprune.json", SUMMARY_SHAPE,
                         fix=f"{path} changed after it was written: prune again into a directory of your own")
