"""`hybridprune search`: the best architecture under a parameter and/or memory budget."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import typer

from ..options import EXPERT_IMPORTANCE, GDN_IMPORTANCE, PARAMS_KINDS, SEARCH, TIE_BREAKS
from .checks import check_data_path, check_gdn_options, check_moe_options, check_not_blank, listed
from ..output.cleanup import lock_until_done, remove_if_failed
from ..output.atomic import check_output, claim, owned_names
from ..output.leftovers import remove_dead_temporaries, unfinished
from .devices import check_device
from .common import (
    CliError, check_checkpoint_dir, console, fail_cleanly, forecast_memory, forward_forecast, load_config, load_model,
    load_tokenizer, weight_bytes,
)

#: Short names accepted by --skip and --divisors, besides the Plan field names.
AXIS_ALIASES = {"hidden": "hidden_size", "ffn": "ffn_hidden_size", "mamba_heads": "mamba_num_heads",
                "heads": "mamba_num_heads", "head_dim": "mamba_head_dim", "attention_heads": "num_attention_heads",
                "depth": "num_layers", "layers": "num_layers"}


def register(app: typer.Typer) -> None:
    app.command("search")(search_command)


def _axis(name: str) -> str:
    from ..archsearch import AXES

    name = name.strip().replace("-", "_")
    name = AXIS_ALIASES.get(name, name)
    if name not in AXES:
        raise CliError(f"unknown search axis {name!r}; use one of {', '.join(AXES)} "
                       f"(or {', '.join(AXIS_ALIASES)})")
    return name


def _divisors(text: str | None) -> dict[str, int]:
    out = {}
    if text is None:
        return out
    for part in listed("--divisors", text, "hidden_size=256,ffn_hidden_size=512"):
        if "=" not in part:
            raise CliError(f"--divisors entry {part!r} is not axis=value")
        name, value = part.split("=", 1)
        try:
            out[_axis(name)] = int(value)
        except ValueError:
            raise CliError(f"--divisors: {value!r} is not an integer") from None
    return out


def _kd_settings(steps, tokens, lr, batch, micro_batch, topk=None) -> dict | None:
    if steps is None and tokens is None:
        return None
    kd = {"steps": steps} if steps is not None else {"tokens": float(tokens)}
    kd = {**kd, "lr": lr, "global_batch": batch, "micro_batch": min(micro_batch, batch)}
    return {**kd, "kd_topk": topk} if topk else kd


@fail_cleanly
def search_command(
    model: Path = typer.Option(..., "--model", help="Hugging Face checkpoint directory (also the KD teacher)."),
    data: str = typer.Option(..., "--data", help="Text source: .txt/.jsonl/.json/.parquet, a saved dataset, 'shakespeare', or a token directory (`hybridprune tokenize`)."),
    out: Path = typer.Option(..., "--out", help="Search directory: candidates.jsonl, best.yaml, search.png, scores/."),
    params: str = typer.Option(None, "--params", help="Parameter budget: 4.5e9, 4.5B, 350M, or relative 0.5x / 50%."),
    params_kind: Literal[PARAMS_KINDS] = typer.Option("total", "--params-kind", help="What --params counts: total or non-embedding."),
    memory_mb: float = typer.Option(None, "--memory-mb", help="Memory budget (MiB): weights + KV cache + Mamba state."),
    active_params: str = typer.Option(None, "--active-params", help="Budget of parameters used per token (MoE: routed experts a token skips left out): 3e9, 3B, or relative 0.5x."),
    expert_importance: Literal[EXPERT_IMPORTANCE] = typer.Option("output_norm", "--expert-importance", help="How a MoE model's routed experts are ranked (see `hybridprune prune --help`)."),
    gdn_importance: Literal[GDN_IMPORTANCE] = typer.Option("out_proj", "--gdn-importance", help="Which activation ranks Gated DeltaNet value heads (see `hybridprune prune --help`)."),
    seq_len: int = typer.Option(4096, "--seq-len", **SEARCH.bounds("seq_len"), help="Sequence length of the memory estimate."),
    batch: int = typer.Option(1, "--batch", **SEARCH.bounds("batch"), help="Batch size of the memory estimate."),
    memory_dtype: str = typer.Option("bfloat16", "--memory-dtype", help="Weights and cache dtype of the memory estimate."),
    top_k: int = typer.Option(10, "--top-k", **SEARCH.bounds("top_k"), help="Candidates given the short distillation (paper: 22)."),
    kd_tokens: float = typer.Option(None, "--kd-tokens", help="Short-KD tokens per top-K candidate (paper: 3.8e9)."),
    kd_steps: int = typer.Option(None, "--kd-steps", **SEARCH.bounds("kd_steps"), help="Short-KD optimizer steps per top-K candidate (instead of --kd-tokens)."),
    kd_lr: float = typer.Option(1e-4, "--kd-lr", help="Short-KD peak learning rate."),
    kd_batch: int = typer.Option(8, "--kd-batch", **SEARCH.bounds("kd_batch"), help="Short-KD global batch (samples per step)."),
    kd_micro_batch: int = typer.Option(2, "--kd-micro-batch", **SEARCH.bounds("kd_micro_batch"), help="Short-KD samples per forward pass."),
    kd_topk: int = typer.Option(None, "--kd-topk", **SEARCH.bounds("kd_topk"), help="Short KD from the teacher's top-k logits (+ tail mass), computed once for all top-K candidates instead of a teacher forward per candidate and step. Default: full KD."),
    skip: list[str] = typer.Option([], "--skip", help="Axes to keep at their size (repeatable or comma-separated)."),
    divisors: str = typer.Option(None, "--divisors", help="Per-axis steps, e.g. 'hidden_size=256,ffn_hidden_size=512'."),
    max_width_pruning: float = typer.Option(0.4, "--max-width-pruning", help="Largest fraction a width axis may lose."),
    max_depth_pruning: float = typer.Option(0.2, "--max-depth-pruning", help="Largest fraction of blocks dropped."),
    band: float = typer.Option(0.1, "--band", help="Evaluate candidates within this fraction of the largest that fits."),
    max_candidates: int = typer.Option(None, "--max-candidates", **SEARCH.bounds("max_candidates"), help="Evaluate at most this many (closest to the budget)."),
    eval_samples: int = typer.Option(256, "--eval-samples", **SEARCH.bounds("eval_samples"), help="Validation samples for the losses (paper: 1024)."),
    eval_seq_len: int = typer.Option(512, "--eval-seq-len", **SEARCH.bounds("eval_seq_len"), help="Tokens per validation / KD / calibration sample."),
    batch_size: int = typer.Option(8, "--batch-size", **SEARCH.bounds("batch_size"), help="Samples per forward pass when measuring loss."),
    scores_dir: Path = typer.Option(None, "--scores", help="Saved scores (default OUT/scores, computed there if missing)."),
    calib_samples: int = typer.Option(256, "--calib-samples", **SEARCH.bounds("calib_samples"), help="Calibration samples when scores are computed."),
    depth_samples: int = typer.Option(16, "--depth-samples", **SEARCH.bounds("depth_samples"), help="Samples for KL-divergence depth importance (0 = Block Influence)."),
    tie_tolerance: float = typer.Option(0.005, "--tie-tolerance", help="Losses this close tie; --tie-break decides."),
    tie_break: Literal[TIE_BREAKS] = typer.Option("cost", "--tie-break", help="What breaks a tie: cost (fewer parameters, then less memory; the same every run) or speed (measured throughput; varies with the machine's load)."),
    speed: bool = typer.Option(True, "--speed/--no-speed", help="Measure the top-K's throughput (shown; used by --tie-break speed)."),
    speed_batch: int = typer.Option(1, "--speed-batch", **SEARCH.bounds("speed_batch"), help="Batch of the throughput measurement."),
    show: int = typer.Option(10, "--show", **SEARCH.bounds("show"), help="Rows of the results table."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text in JSON/parquet data."),
    seed: int = typer.Option(0, **SEARCH.bounds("seed"), help="Seed for sampling windows (and the KD data order)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("auto", help="Model dtype: auto (as saved), float32, bfloat16, float16."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard a previous search in --out instead of resuming it."),
    force: bool = typer.Option(False, "--force", help="Start even when the memory forecast exceeds what the device has."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's own Python code."),
    serve_with: str = typer.Option(None, "--serve-with", help="Serving engines every candidate must run on, e.g. 'vllm,llama.cpp' (see `hybridprune prune --help`)."),
    tensor_parallel: int = typer.Option(1, "--tensor-parallel", **SEARCH.bounds("tensor_parallel"), help="GPUs vLLM splits the model over (with --serve-with vllm)."),
) -> None:
    """Search the architecture of lowest loss under a budget; resumes an interrupted run in --out."""
    check_device(device)
    check_not_blank(("--data", data, "shakespeare"), ("--text-field", text_field, "text"))
    check_data_path("--data", data)
    SEARCH.check({"params": params, "active_params": active_params, "memory_mb": memory_mb,
                  "memory_dtype": memory_dtype, "kd_tokens": kd_tokens, "kd_steps": kd_steps, "kd_lr": kd_lr,
                  "kd_batch": kd_batch, "kd_micro_batch": kd_micro_batch, "max_width_pruning": max_width_pruning,
                  "max_depth_pruning": max_depth_pruning, "band": band, "tie_tolerance": tie_tolerance,
                  "tie_break": tie_break, "speed": speed, "dtype": dtype, "serve_with": serve_with,
                  "tensor_parallel": tensor_parallel})
    kd = _kd_settings(kd_steps, kd_tokens, kd_lr, kd_batch, kd_micro_batch, kd_topk)
    check_checkpoint_dir(model)  # a wrong path is named before torch is imported
    from ..architectures import get_adapter
    from ..archsearch import Budget, SearchConfig, SearchSpace, build_grid, filter_candidates, search
    from ..archsearch.report import decision_text, results_table
    from ..archsearch.store import OWNED, SETTINGS_FILE
    from ..data import load_token_samples
    from ..importance.scores import Scores, ScoresError, model_fingerprint

    skipped = sorted({_axis(s) for item in skip for s in listed("--skip", item, "num_layers")})
    space = SearchSpace(max_width_pruning=max_width_pruning, max_depth_pruning=max_depth_pruning,
                        divisors=_divisors(divisors), skip=tuple(skipped))
    budget = Budget(params=params, memory_mb=memory_mb, params_kind=params_kind, batch=batch, seq_len=seq_len,
                    dtype=memory_dtype, active_params=active_params)
    cfg = SearchConfig(space=space, top_k=top_k, kd=kd, band=band, max_candidates=max_candidates,
                       batch_size=batch_size, tie_tolerance=tie_tolerance, tie_break=tie_break, measure_speed=speed,
                       speed_batch=speed_batch, expert_importance=expert_importance, gdn_importance=gdn_importance,
                       serve_with=serve_with or (),
                       tensor_parallel=tensor_parallel)
    cfg.validate()
    # An impossible budget is reported before any weights are loaded, when the grid is known without
    # calibrating: with saved scores, or without depth candidates (which depend on the depth scores).
    existing = (out / SETTINGS_FILE).is_file() and SETTINGS_FILE in owned_names(out)
    # killed in its setup (its names recorded, no settings yet): only its own entries and dead temporaries
    leftover = not existing and unfinished(out, OWNED, done=SETTINGS_FILE)
    check_output(out, overwrite=overwrite, resume=(existing or leftover) and not overwrite)  # resuming is the point
    if leftover and not overwrite:
        remove_dead_temporaries(out)
    remove_if_failed(out, keep=_resumable, note=f"finished evaluations are kept in {out}; run the same command "
                                                 "again to resume")
    lock_until_done(out)  # one search per directory
    scores_path = scores_dir or out / "scores"
    if scores_dir is not None and not (scores_dir / "scores.json").is_file():
        raise CliError(f"no scores in {scores_dir}; run `hybridprune calibrate` or leave out --scores")
    config = load_config(model, trust_remote_code=trust_remote_code)
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    check_moe_options(dims, config.model_type, active_params=active_params, expert_importance=expert_importance)
    check_gdn_options(dims, config.model_type, gdn_importance)
    saved = Scores.load(scores_path) if (scores_path / "scores.json").is_file() else None
    if saved is not None:
        try:
            saved.check_against(dims, owners=adapter.unit_owners(dims))
        except ScoresError:
            if scores_dir is not None or not overwrite:
                raise
            saved = None  # --overwrite: a previous search's scores of another model are computed again
    if saved is not None or "num_layers" in skipped or max_depth_pruning == 0:
        filter_candidates(adapter, dims, build_grid(dims, space, saved, adapter.required_kinds, adapter.fixed_axes)[0], budget, band=None,
                          serve_with=cfg.serve_with, tensor_parallel=tensor_parallel)

    forecast_memory(_forecast(config, dtype, device, batch_size, eval_seq_len, depth_samples > 0, kd, kd_micro_batch),
                    force=force, lower="--batch-size, --eval-seq-len or --kd-micro-batch")
    lm = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)
    if saved is not None and saved.meta.get("fingerprint") not in (None, model_fingerprint(lm)):
        if scores_dir is not None or not overwrite:
            raise CliError(f"the scores in {scores_path} were computed on another model; "
                           + ("calibrate this one" if scores_dir is not None else "pass --overwrite to recompute them"))
        saved = None
    if saved is not None:
        console.print(f"using the scores in {scores_path}")
    scores = saved or _calibrate(lm, tokenizer, scores_path, data, eval_seq_len, calib_samples, depth_samples,
                                 batch_size, seed, text_field, model)

    def samples(split: str, n: int | None):
        return load_token_samples(data, tokenizer, seq_len=eval_seq_len, num_samples=n, split=split, seed=seed,
                                  text_field=text_field, model_vocab_size=lm.config.vocab_size)

    val = samples("validation", eval_samples)
    train = None
    if kd is None:
        console.print("[yellow]note:[/] no --kd-steps/--kd-tokens: ranking by zero-shot loss only. The paper "
                      "finds a short distillation necessary for a reliable ranking.")
    else:
        steps = kd.get("steps") or math.ceil(kd["tokens"] / (kd_batch * eval_seq_len))
        train = samples("train", steps * kd_batch)
    result = search(lm, scores, val, budget, cfg, train_data=train, out_dir=out, overwrite=overwrite,
                    console=console, checkpoint_config=config)
    console.print(results_table(result, show))
    console.print(f"winner [bold]{result.best_key}[/]: {result.best} (chosen by {decision_text(result.decision)})")
    console.print(f"plan: {out / 'best.yaml'}   plot: {out / 'search.png'}   all results: {out / 'candidates.jsonl'}")
    serving = (f" --serve-with {','.join(cfg.serve_with)}" if cfg.serve_with else "") + (
        f" --tensor-parallel {tensor_parallel}" if tensor_parallel > 1 else "")
    console.print(f"apply it: hybridprune prune --model {model} --scores {scores_dir or out / 'scores'} "
                  f"--plan {out / 'best.yaml'}{serving} --out PRUNED_DIR")


def _resumable(out: Path) -> bool:
    """What a failed or interrupted search keeps: complete scores or finished evaluations."""
    from ..archsearch.store import CANDIDATES_FILE

    return (out / "scores" / "scores.json").is_file() or (out / CANDIDATES_FILE).is_file()


def _forecast(config, dtype, device, batch_size, seq_len, depth, kd, kd_micro_batch):
    """The search's peak: calibrating and evaluating beside a pruned candidate, or a candidate's short KD
    (the unpruned size bounds every candidate's)."""
    from ..architectures import get_adapter
    from ..distillation.chunked_loss import auto_chunk_size
    from ..checkpoint.forecast import forecast_distill

    forward = forward_forecast(config, "calibrate", batch=batch_size, seq=seq_len, dtype=dtype, device=device,
                               depth=depth)
    forward.stage = "search"
    forward.parts["pruned candidate"] = forward.parts["weights"]
    if not kd:
        return forward
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    wb = weight_bytes(config, dtype, device)
    train = forecast_distill(adapter, dims, dims, micro_batch=min(kd_micro_batch, kd["global_batch"]), seq=seq_len,
                             weight_bytes=4, teacher_weight_bytes=wb, device=forward.device,
                             chunk_positions=auto_chunk_size(dims.vocab_size, forward.device),
                             chunk=getattr(config, "chunk_size", None) or 128)
    train.stage = "search"
    return max(forward, train, key=lambda f: f.total)


def _calibrate(lm, tokenizer, path: Path, data, seq_len, samples, depth_samples, batch_size, seed, text_field, model):
    """Calibrate once and save the scores, for every later run of the search and for `prune`."""
    from ..data import load_token_samples
    from ..archsearch.store import OWNED
    from ..importance.calibrate import calibrate

    console.print(f"calibrating on {samples} samples of {seq_len} tokens (saved to {path})")
    calib = load_token_samples(data, tokenizer, seq_len=seq_len, num_samples=samples, split="calibration",
                               seed=seed, text_field=text_field, model_vocab_size=lm.config.vocab_size)
    scores = calibrate(lm, calib, batch_size=batch_size, seq_len=seq_len, depth_samples=depth_samples)
    scores.meta.update({"source_model": str(model), "data": str(data), "seed": seed, "depth_samples": depth_samples})
    claim(path.parent, OWNED)  # the search directory's scores are the search's own
    scores.save(path, overwrite=True)  # only ever replaces scores this search computed
    scores.origin = str(path)  # where best.yaml's apply line points
    return scores
