"""`hybridprune prune`: apply a plan to a checkpoint using saved scores, export a plain HF checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich.markup import escape
from rich.table import Table

from ..options import EXPERT_IMPORTANCE, GDN_IMPORTANCE, PRUNE
from ..output.atomic import check_output
from .checks import check_gdn_options, check_moe_options, listed
from .devices import check_device
from .common import (
    CliError, alerts, console, fail_cleanly, forecast_memory, load_config, load_model, resolve_dtype, weight_bytes,
)


def register(app: typer.Typer) -> None:
    app.command("prune")(prune_command)


@fail_cleanly
def prune_command(
    model: str = typer.Option(..., "--model", help="Hugging Face checkpoint directory, or a Hub id org/name[@revision]."),
    scores: Path = typer.Option(..., "--scores", help="Directory written by `hybridprune calibrate`."),
    plan: str = typer.Option(..., "--plan", help="'hidden_size=3072,mamba_num_heads=112,...' or a YAML/JSON file."),
    out: Path = typer.Option(..., "--out", help="Output directory for the pruned checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier output of hybridprune in --out (never files it did not write)."),
    strict_fingerprint: bool = typer.Option(False, "--strict-fingerprint", help="Refuse scores computed on another model."),
    expert_importance: Literal[EXPERT_IMPORTANCE] = typer.Option(
        "output_norm", "--expert-importance",
        help="How a MoE model's routed experts are ranked: output_norm (Minitron: mean L2 norm of the expert's output "
             "over its tokens), router_weighted (REAP: that norm times the gate value) or frequency (share of tokens)."),
    gdn_importance: Literal[GDN_IMPORTANCE] = typer.Option(
        "out_proj", "--gdn-importance",
        help="Which activation ranks a Gated DeltaNet model's value heads and channels: out_proj (the output "
             "projection's input, after the gated norm) or value (the value branch of the input projection)."),
    in_memory: bool = typer.Option(False, "--in-memory", help="Load the whole model and prune it in memory (the default streams shard by shard and never builds the model)."),
    smoke_test: bool = typer.Option(False, "--smoke-test", help="After a streaming prune, load the result and run one forward pass (needs the pruned model's memory)."),
    device: str = typer.Option("cpu", help="Device of an --in-memory prune (cpu is enough: pruning is slicing)."),
    dtype: str = typer.Option("auto", help="auto (as saved), float32, bfloat16, float16."),
    force: bool = typer.Option(False, "--force", help="Start even when the memory forecast exceeds what the device has."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's own Python code."),
    serve_with: str = typer.Option(None, "--serve-with", help="Serving engines the output must run on, e.g. 'vllm,llama.cpp': a plan one of them cannot serve is refused, naming the rule and the nearest valid values."),
    tensor_parallel: int = typer.Option(1, "--tensor-parallel", **PRUNE.bounds("tensor_parallel"), help="GPUs vLLM splits the model over (with --serve-with vllm): the head counts and widths it splits must divide."),
) -> None:
    """Prune a checkpoint group-aware to the plan's sizes and write it as a plain HF checkpoint.

    By default the checkpoint is streamed tensor by tensor into pruned shards, so peak memory is about
    two of its largest tensors whatever the model's size."""
    from ..checkpoint.load import check_weight_files, resolve
    from ..pruning.plan import Plan, PlanError

    # Everything that can be checked without the weights is checked first: the plan even without the config
    # (and without torch, which the modules below import).
    check_device(device)
    PRUNE.check({"dtype": dtype, "serve_with": serve_with, "tensor_parallel": tensor_parallel})
    if not _is_file(plan):
        listed("--plan", plan, "hidden_size=3072,drop_layers=3+7")
    parsed = Plan.parse(plan)
    check_output(out, overwrite=overwrite)
    model = resolve(model, role="model")  # a local directory; a Hub id is fetched (safetensors only)
    from ..architectures import get_adapter
    from ..checkpoint.files import CheckpointFiles
    from ..checkpoint.forecast import forecast_prune
    from ..importance.scores import Scores
    from ..pruning.apply import prune
    from ..pruning.export import export
    from ..pruning.streaming import stream_prune

    config = load_config(model, trust_remote_code=trust_remote_code)
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    check_moe_options(dims, config.model_type, expert_importance=expert_importance)
    check_gdn_options(dims, config.model_type, gdn_importance)
    try:
        parsed.validate(dims)
    except PlanError as exc:  # a plan file that does not fit this model: say which file
        raise PlanError(f"plan file {plan}: {exc}" if _is_file(plan) else str(exc)) from None
    _check_serving(adapter, dims, parsed, serve_with, tensor_parallel)
    loaded_scores = Scores.load(scores)
    loaded_scores.check_against(dims, owners=adapter.unit_owners(dims))

    if not in_memory:
        if trust_remote_code:
            raise CliError("--trust-remote-code needs --in-memory: a streaming prune never runs the checkpoint's code")
        check_weight_files(model, "checkpoint", allow_pickle=False)  # pickle-only: say how to convert
        largest = max((t.nbytes for t in CheckpointFiles(model).tensors.values()), default=0)
        streamed = forecast_prune(adapter, dims, weight_bytes=weight_bytes(config, dtype), largest_tensor_bytes=largest)
        forecast_memory(streamed, force=force, lower="nothing (streaming holds three tensors at a time)")
        path = stream_prune(model, loaded_scores, parsed, out, dtype=None if dtype == "auto" else resolve_dtype(dtype),
                            smoke_test=smoke_test, overwrite=overwrite, strict_fingerprint=strict_fingerprint,
                            progress=True, expert_importance=expert_importance, gdn_importance=gdn_importance,
                            serve_with=serve_with,
                            tensor_parallel=tensor_parallel)
        _summary(_written_info(path), path)
        return
    forecast_memory(forecast_prune(adapter, dims, weight_bytes=weight_bytes(config, dtype, device), device=str(device)),
                    force=force, lower="the model's memory: drop --in-memory to stream it")
    lm = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code, whole=True)
    pruned = prune(lm, loaded_scores, parsed, strict_fingerprint=strict_fingerprint,
                   expert_importance=expert_importance, gdn_importance=gdn_importance, serve_with=serve_with,
                   tensor_parallel=tensor_parallel)
    path = export(pruned, out, tokenizer_from=model, source=str(model), overwrite=overwrite)
    _summary(pruned.hybridprune_info, path)


def _check_serving(adapter, dims, plan, serve_with: str | None, tensor_parallel: int) -> None:
    """Before the scores are read: refuse a plan an engine of --serve-with cannot serve; without
    --serve-with, one warning line per common engine whose rules the plan breaks."""
    from ..architectures.serving import warnings_for
    from ..pruning.apply import check_plan_dims

    target = plan.target_dims(dims, list(range(dims.num_layers)))
    check_plan_dims(adapter, dims, target, serve_with or (), tensor_parallel)
    if serve_with is None:
        for line in warnings_for(adapter.model_type, target):
            alerts.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True, highlight=False)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # a plan string longer than a file name may be
        return False


def _written_info(path: Path) -> dict:
    """The `hybridprune.json` the streaming prune just wrote, as `_summary` reads it."""
    from ..output.documents import read_document

    return read_document(path / "hybridprune.json", SUMMARY_SHAPE,
                         fix=f"{path} changed after it was written: prune again into a directory of your own")


_COUNTS = {"before": int, "after": int}
#: hybridprune.json as the summary reads it
SUMMARY_SHAPE = {"dims_before": {"block_kinds": list}, "dims_after": {"block_kinds": list}, "dropped_blocks": [int],
                 "parameters?": _COUNTS, "active_parameters?": _COUNTS}


def _summary(info: dict, path: Path) -> None:
    from ..pruning.plan import WIDTH_FIELDS

    before, after = info["dims_before"], info["dims_after"]
    table = Table(title="pruned")
    table.add_column("axis")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for axis in WIDTH_FIELDS:
        if before.get(axis) is not None:
            table.add_row(axis, str(before[axis]), str(after[axis]))
    table.add_row("blocks", str(len(before["block_kinds"])), str(len(after["block_kinds"])))
    for label, key in (("parameters", "parameters"), ("active parameters", "active_parameters")):
        if key in info:
            p = info[key]
            table.add_row(label, f"{p['before']:,}", f"{p['after']:,} ({p['after'] / p['before']:.1%})")
    console.print(table)
    if info["dropped_blocks"]:
        console.print(f"dropped blocks: {info['dropped_blocks']}")
    console.print(f"written to [bold]{path}[/]")
