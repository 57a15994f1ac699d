"""`hybridprune search`: the best architecture under a parameter and/or memory budget."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from ..options import EXPERT_IMPORTANCE, GDN_IMPORTANCE, PARAMS_KINDS, SEARCH, TIE_BREAKS
from ..stages.common import LoadSettings
from ..stages.search import SearchSettings, run
from .checks import check_data_path, check_not_blank, listed
from ..output.cleanup import lock_until_done, remove_if_failed
from ..output.atomic import check_output, owned_names
from ..output.leftovers import remove_dead_temporaries, unfinished
from ..checkpoint.devices import check_device
from .common import CliError, check_checkpoint_dir, console, fail_cleanly, voice


def register(app: typer.Typer) -> None:
    app.command("search")(search_command)


#: the flags' defaults: the stage's, defined once (`stages.search.SearchSettings`)
SEARCH_DEFAULTS = SearchSettings()
#: the command's flags that are not the stage's settings: what it reads and writes, and how it loads
IO_FLAGS = ("model", "data", "out", "scores_dir", "text_field", "seed", "device", "dtype", "overwrite", "force",
            "trust_remote_code")


@fail_cleanly
def search_command(
    model: Path = typer.Option(..., "--model", help="Hugging Face checkpoint directory (also the KD teacher)."),
    data: str = typer.Option(..., "--data", help="Text source: .txt/.jsonl/.json/.parquet, a saved dataset, 'shakespeare', or a token directory (`hybridprune tokenize`)."),
    out: Path = typer.Option(..., "--out", help="Search directory: candidates.jsonl, best.yaml, search.png, scores/."),
    params: str = typer.Option(SEARCH_DEFAULTS.params, "--params", help="Parameter budget: 4.5e9, 4.5B, 350M, or relative 0.5x / 50%."),
    params_kind: Literal[PARAMS_KINDS] = typer.Option(SEARCH_DEFAULTS.params_kind, "--params-kind", help="What --params counts: total or non-embedding."),
    memory_mb: float = typer.Option(SEARCH_DEFAULTS.memory_mb, "--memory-mb", help="Memory budget (MiB): weights + KV cache + Mamba state."),
    active_params: str = typer.Option(SEARCH_DEFAULTS.active_params, "--active-params", help="Budget of parameters used per token (MoE: routed experts a token skips left out): 3e9, 3B, or relative 0.5x."),
    expert_importance: Literal[EXPERT_IMPORTANCE] = typer.Option(SEARCH_DEFAULTS.expert_importance, "--expert-importance", help="How a MoE model's routed experts are ranked (see `hybridprune prune --help`)."),
    gdn_importance: Literal[GDN_IMPORTANCE] = typer.Option(SEARCH_DEFAULTS.gdn_importance, "--gdn-importance", help="Which activation ranks Gated DeltaNet value heads (see `hybridprune prune --help`)."),
    seq_len: int = typer.Option(SEARCH_DEFAULTS.seq_len, "--seq-len", **SEARCH.bounds("seq_len"), help="Sequence length of the memory estimate."),
    batch: int = typer.Option(SEARCH_DEFAULTS.batch, "--batch", **SEARCH.bounds("batch"), help="Batch size of the memory estimate."),
    memory_dtype: str = typer.Option(SEARCH_DEFAULTS.memory_dtype, "--memory-dtype", help="Weights and cache dtype of the memory estimate."),
    top_k: int = typer.Option(SEARCH_DEFAULTS.top_k, "--top-k", **SEARCH.bounds("top_k"), help="Candidates given the short distillation (paper: 22)."),
    kd_tokens: float = typer.Option(SEARCH_DEFAULTS.kd_tokens, "--kd-tokens", help="Short-KD tokens per top-K candidate (paper: 3.8e9)."),
    kd_steps: int = typer.Option(SEARCH_DEFAULTS.kd_steps, "--kd-steps", **SEARCH.bounds("kd_steps"), help="Short-KD optimizer steps per top-K candidate (instead of --kd-tokens)."),
    kd_lr: float = typer.Option(SEARCH_DEFAULTS.kd_lr, "--kd-lr", help="Short-KD peak learning rate."),
    kd_min_lr: float = typer.Option(SEARCH_DEFAULTS.kd_min_lr, "--kd-min-lr", help="Short-KD learning rate at the end of its cosine decay (default: the distillation's, 1e-5)."),
    kd_batch: int = typer.Option(SEARCH_DEFAULTS.kd_batch, "--kd-batch", **SEARCH.bounds("kd_batch"), help="Short-KD global batch (samples per step)."),
    kd_micro_batch: int = typer.Option(SEARCH_DEFAULTS.kd_micro_batch, "--kd-micro-batch", **SEARCH.bounds("kd_micro_batch"), help="Short-KD samples per forward pass."),
    kd_topk: int = typer.Option(SEARCH_DEFAULTS.kd_topk, "--kd-topk", **SEARCH.bounds("kd_topk"), help="Short KD from the teacher's top-k logits (+ tail mass), computed once for all top-K candidates instead of a teacher forward per candidate and step. Default: full KD."),
    skip: list[str] = typer.Option(SEARCH_DEFAULTS.skip, "--skip", help="Axes to keep at their size (repeatable or comma-separated)."),
    divisors: str = typer.Option(SEARCH_DEFAULTS.divisors, "--divisors", help="Per-axis steps, e.g. 'hidden_size=256,ffn_hidden_size=512'."),
    max_width_pruning: float = typer.Option(SEARCH_DEFAULTS.max_width_pruning, "--max-width-pruning", help="Largest fraction a width axis may lose."),
    max_depth_pruning: float = typer.Option(SEARCH_DEFAULTS.max_depth_pruning, "--max-depth-pruning", help="Largest fraction of blocks dropped."),
    band: float = typer.Option(SEARCH_DEFAULTS.band, "--band", help="Evaluate candidates within this fraction of the largest that fits."),
    max_candidates: int = typer.Option(SEARCH_DEFAULTS.max_candidates, "--max-candidates", **SEARCH.bounds("max_candidates"), help="Evaluate at most this many (closest to the budget)."),
    eval_samples: int = typer.Option(SEARCH_DEFAULTS.eval_samples, "--eval-samples", **SEARCH.bounds("eval_samples"), help="Validation samples for the losses (paper: 1024)."),
    eval_seq_len: int = typer.Option(SEARCH_DEFAULTS.eval_seq_len, "--eval-seq-len", **SEARCH.bounds("eval_seq_len"), help="Tokens per validation / KD / calibration sample."),
    batch_size: int = typer.Option(SEARCH_DEFAULTS.batch_size, "--batch-size", **SEARCH.bounds("batch_size"), help="Samples per forward pass when measuring loss."),
    scores_dir: Path = typer.Option(None, "--scores", help="Saved scores (default OUT/scores, computed there if missing)."),
    calib_samples: int = typer.Option(SEARCH_DEFAULTS.calib_samples, "--calib-samples", **SEARCH.bounds("calib_samples"), help="Calibration samples when scores are computed."),
    depth_samples: int = typer.Option(SEARCH_DEFAULTS.depth_samples, "--depth-samples", **SEARCH.bounds("depth_samples"), help="Samples for KL-divergence depth importance (0 = Block Influence)."),
    tie_tolerance: float = typer.Option(SEARCH_DEFAULTS.tie_tolerance, "--tie-tolerance", help="Losses this close tie; --tie-break decides."),
    tie_break: Literal[TIE_BREAKS] = typer.Option(SEARCH_DEFAULTS.tie_break, "--tie-break", help="What breaks a tie: cost (fewer parameters, then less memory; the same every run) or speed (measured throughput; varies with the machine's load)."),
    speed: bool = typer.Option(SEARCH_DEFAULTS.speed, "--speed/--no-speed", help="Measure the top-K's throughput (shown; used by --tie-break speed)."),
    speed_batch: int = typer.Option(SEARCH_DEFAULTS.speed_batch, "--speed-batch", **SEARCH.bounds("speed_batch"), help="Batch of the throughput measurement."),
    show: int = typer.Option(SEARCH_DEFAULTS.show, "--show", **SEARCH.bounds("show"), help="Rows of the results table."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text in JSON/parquet data."),
    seed: int = typer.Option(0, **SEARCH.bounds("seed"), help="Seed for sampling windows (and the KD data order)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("auto", help="Model dtype: auto (as saved), float32, bfloat16, float16."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard a previous search in --out instead of resuming it."),
    force: bool = typer.Option(False, "--force", help="Start even when the memory forecast exceeds what the device has."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's own Python code."),
    serve_with: str = typer.Option(SEARCH_DEFAULTS.serve_with, "--serve-with", help="Serving engines every candidate must run on, e.g. 'vllm,llama.cpp' (see `hybridprune prune --help`)."),
    tensor_parallel: int = typer.Option(SEARCH_DEFAULTS.tensor_parallel, "--tensor-parallel", **SEARCH.bounds("tensor_parallel"), help="GPUs vLLM splits the model over (with --serve-with vllm)."),
) -> None:
    """Search the architecture of lowest loss under a budget; resumes an interrupted run in --out."""
    settings = SearchSettings(**{k: v for k, v in locals().items() if k not in IO_FLAGS})
    check_device(device)
    check_not_blank(("--data", data, "shakespeare"), ("--text-field", text_field, "text"))
    check_data_path("--data", data)
    axes = ("skip", "divisors")  # their parsers import the search space (and torch): after the model is found
    SEARCH.check({**{k: v for k, v in settings.values().items() if k not in axes}, "dtype": dtype})
    check_checkpoint_dir(model)  # a wrong path is named before torch is imported
    _check_axes(settings)
    cfg = settings.config(seed)  # a bad search setting is refused before the output directory is touched
    _claim_out(out, overwrite)
    if scores_dir is not None and not (scores_dir / "scores.json").is_file():
        raise CliError(f"no scores in {scores_dir}; run `hybridprune calibrate` or leave out --scores")
    loading = LoadSettings(seed=seed, dtype=dtype, device=device, text_field=text_field, trust_remote_code=trust_remote_code)
    run(settings, model, data, out, loading=loading, scores=scores_dir, overwrite=overwrite, force=force, voice=voice())
    console.print(f"plan: {out / 'best.yaml'}   plot: {out / 'search.png'}   all results: {out / 'candidates.jsonl'}")
    serving = (f" --serve-with {','.join(cfg.serve_with)}" if settings.serve_with else "") + (
        f" --tensor-parallel {tensor_parallel}" if tensor_parallel > 1 else "")
    console.print(f"apply it: hybridprune prune --model {model} --scores {scores_dir or out / 'scores'} "
                  f"--plan {out / 'best.yaml'}{serving} --out PRUNED_DIR")


def _check_axes(settings: SearchSettings) -> None:
    """`--skip` and `--divisors` name axes (Plan names or short ones); an empty list names nothing."""
    from ..archsearch.space import axis_name, parse_divisors

    settings.skip = [s for item in settings.skip for s in listed("--skip", item, "num_layers")]
    for name in settings.skip:
        axis_name(name)
    if settings.divisors is not None:
        listed("--divisors", settings.divisors, "hidden_size=256,ffn_hidden_size=512")
        parse_divisors(settings.divisors)


def _claim_out(out: Path, overwrite: bool) -> None:
    """--out resumes an earlier search there unless --overwrite; a failed search keeps what resumes it."""
    from ..archsearch.store import OWNED, SETTINGS_FILE

    existing = (out / SETTINGS_FILE).is_file() and SETTINGS_FILE in owned_names(out)
    # killed in its setup (its names recorded, no settings yet): only its own entries and dead temporaries
    leftover = not existing and unfinished(out, OWNED, done=SETTINGS_FILE)
    check_output(out, overwrite=overwrite, resume=(existing or leftover) and not overwrite)  # resuming is the point
    if leftover and not overwrite:
        remove_dead_temporaries(out)
    remove_if_failed(out, keep=_resumable, note=f"finished evaluations are kept in {out}; run the same command "
                                                 "again to resume")
    lock_until_done(out)  # one search per directory


def _resumable(out: Path) -> bool:
    """What a failed or interrupted search keeps: complete scores or finished evaluations."""
    from ..archsearch.store import CANDIDATES_FILE

    return (out / "scores" / "scores.json").is_file() or (out / CANDIDATES_FILE).is_file()
