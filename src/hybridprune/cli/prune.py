"""`hybridprune prune`: apply a plan to a checkpoint using saved scores, export a plain HF checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich.table import Table

from ..options import EXPERT_IMPORTANCE, GDN_IMPORTANCE, PRUNE
from ..stages.prune import PruneSettings
from . import shared
from .checks import listed
from .common import console, fail_cleanly, voice

D = PruneSettings()
#: the flags that name the stage's inputs and output rather than its settings
IO_FLAGS = ("model", "scores", "out", "overwrite")


def register(app: typer.Typer) -> None:
    app.command("prune")(prune_command)


@fail_cleanly
def prune_command(
    model: str = typer.Option(..., "--model", help="Hugging Face checkpoint directory, or a Hub id org/name[@revision]."),
    scores: Path = typer.Option(..., "--scores", help="Directory written by `hybridprune calibrate`."),
    plan: str = typer.Option(..., "--plan", help="'hidden_size=3072,mamba_num_heads=112,...' or a YAML/JSON file."),
    out: Path = typer.Option(..., "--out", help="Output directory for the pruned checkpoint."),
    overwrite: bool = shared.overwrite("an earlier output of hybridprune"),
    strict_fingerprint: bool = typer.Option(D.strict_fingerprint, "--strict-fingerprint", help="Refuse scores computed on another model."),
    expert_importance: Literal[EXPERT_IMPORTANCE] = typer.Option(
        D.expert_importance, "--expert-importance",
        help="How a MoE model's routed experts are ranked: output_norm (Minitron: mean L2 norm of the expert's output "
             "over its tokens), router_weighted (REAP: that norm times the gate value) or frequency (share of tokens)."),
    gdn_importance: Literal[GDN_IMPORTANCE] = typer.Option(
        D.gdn_importance, "--gdn-importance",
        help="Which activation ranks a Gated DeltaNet model's value heads and channels: out_proj (the output "
             "projection's input, after the gated norm) or value (the value branch of the input projection)."),
    in_memory: bool = typer.Option(D.in_memory, "--in-memory", help="Load the whole model and prune it in memory (the default streams shard by shard and never builds the model)."),
    smoke_test: bool = typer.Option(D.smoke_test, "--smoke-test", help="After a streaming prune, load the result and run one forward pass (needs the pruned model's memory)."),
    device: str = shared.device(D.device, "Device of an --in-memory prune (cpu is enough: pruning is slicing)."),
    dtype: str = shared.dtype(D.dtype, "auto (as saved), float32, bfloat16, float16."),
    force: bool = shared.force(D.force),
    trust_remote_code: bool = shared.trust_remote_code(D.trust_remote_code),
    serve_with: str = typer.Option(D.serve_with, "--serve-with", help="Serving engines the output must run on, e.g. 'vllm,llama.cpp': a plan one of them cannot serve is refused, naming the rule and the nearest valid values."),
    tensor_parallel: int = typer.Option(D.tensor_parallel, "--tensor-parallel", **PRUNE.bounds("tensor_parallel"), help="GPUs vLLM splits the model over (with --serve-with vllm): the head counts and widths it splits must divide."),
) -> None:
    """Prune a checkpoint group-aware to the plan's sizes and write it as a plain HF checkpoint.

    By default the checkpoint is streamed tensor by tensor into pruned shards, so peak memory is about
    three of its largest tensors whatever the model's size."""
    from ..stages import prune

    settings = PruneSettings(plan=plan, strict_fingerprint=strict_fingerprint, expert_importance=expert_importance,
                             gdn_importance=gdn_importance, in_memory=in_memory, smoke_test=smoke_test, device=device,
                             dtype=dtype, force=force, trust_remote_code=trust_remote_code, serve_with=serve_with,
                             tensor_parallel=tensor_parallel)
    prune.check(settings)
    if not prune.is_plan_file(plan):
        listed("--plan", plan, "hidden_size=3072,drop_layers=3+7")
    path, info = prune.run(settings, model, scores, out, overwrite=overwrite, voice=voice())
    _summary(info, path)


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
