"""`hybridprune calibrate`: score every prunable unit of a checkpoint on calibration text."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..options import CALIBRATE
from .checks import check_data_path, check_not_blank
from ..output.atomic import atomic_directory, check_output
from .devices import check_device, check_device_map
from .common import (
    check_checkpoint_dir, console, fail_cleanly, forecast_memory, forward_forecast, init_distributed,
    is_main_process, load_config, load_model, load_tokenizer, resolve_device,
)


PLOT_FILE = "layer_importance.png"


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)


@fail_cleanly
def calibrate_command(
    model: Path = typer.Option(..., "--model", help="Hugging Face checkpoint directory."),
    data: str = typer.Option(..., "--data", help="Text source: .txt/.jsonl/.json/.parquet, a saved dataset, 'shakespeare', or a token directory (`hybridprune tokenize`: only the windows used are read)."),
    out: Path = typer.Option(..., "--out", help="Directory for the scores (safetensors + JSON)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace earlier scores in --out (never files hybridprune did not write)."),
    samples: int = typer.Option(1024, **CALIBRATE.bounds("samples"), help="Calibration samples (the paper uses 1024)."),
    seq_len: int = typer.Option(2048, "--seq-len", **CALIBRATE.bounds("seq_len"), help="Tokens per sample."),
    batch_size: int = typer.Option(1, "--batch-size", **CALIBRATE.bounds("batch_size"), help="Samples per forward pass."),
    depth_samples: int = typer.Option(64, "--depth-samples", **CALIBRATE.bounds("depth_samples"), help="Samples for KL-divergence depth importance (one forward per block each); 0 = Block Influence only."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text in JSON/parquet data."),
    seed: int = typer.Option(0, **CALIBRATE.bounds("seed"), help="Seed for sampling the calibration windows."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    device_map: str = typer.Option(None, "--device-map", help="Spread a model larger than one device over the GPUs, CPU and disk (accelerate's big-model inference): auto, balanced, sequential."),
    dtype: str = typer.Option("auto", help="auto (as saved; bfloat16 on a GPU), float32, bfloat16, float16."),
    force: bool = typer.Option(False, "--force", help="Start even when the memory forecast exceeds what the device has."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's own Python code (off by default)."),
) -> None:
    """Run calibration data through the model with hooks and save importance scores."""
    check_device(device)
    check_device_map(device_map)
    CALIBRATE.check({"dtype": dtype})
    check_not_blank(("--data", data, "shakespeare"), ("--text-field", text_field, "text"))
    check_data_path("--data", data)
    check_output(out, overwrite=overwrite)  # before the long calibration pass
    check_checkpoint_dir(model)  # a wrong path is named before torch is imported
    from ..data import load_token_samples
    from ..importance.calibrate import calibrate
    from ..report.plots import plot_layer_importance

    rank, world = init_distributed()
    if world > 1 and device == "auto":
        device = f"cuda:{rank}" if resolve_device("auto").type == "cuda" else "cpu"
    config = load_config(model, trust_remote_code=trust_remote_code)
    forecast_memory(forward_forecast(config, "calibrate", batch=batch_size, seq=seq_len, dtype=dtype, device=device,
                                     depth=depth_samples > 0),
                    force=force, lower="--batch-size or --seq-len", spread=device_map is not None)
    lm = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code, device_map=device_map)
    tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)
    calib = load_token_samples(data, tokenizer, seq_len=seq_len, num_samples=samples, split="calibration",
                               seed=seed, text_field=text_field, model_vocab_size=lm.config.vocab_size)
    if world > 1:
        calib = calib.shard(rank, world)
    per_process = max(1, depth_samples // world) if depth_samples else 0
    scores = calibrate(lm, calib, batch_size=batch_size, seq_len=seq_len, depth_samples=per_process)
    scores.meta.update({"source_model": str(model), "data": str(data), "seed": seed,
                        "depth_samples": depth_samples})
    if not is_main_process():
        return
    kinds = list(scores.meta["dims"]["block_kinds"])

    def write(tmp: Path) -> None:  # scores and plot appear together, or not at all
        scores.write_files(tmp)
        plot_layer_importance(scores, kinds, tmp / PLOT_FILE)

    atomic_directory(out, write, overwrite=overwrite, what="the scores")
    _summary(scores, kinds, out, Path(out) / PLOT_FILE)


def _first_table_per_kind(scores) -> dict[str, dict]:
    """The score table shown for each unit kind: the first of that kind in `PER_BLOCK` (the one that
    ranks its units by default: Mamba heads, FFN neurons, attention heads, experts, GDN value heads)."""
    from ..importance.scores import PER_BLOCK

    tables: dict[str, dict] = {}
    for group, (kind, _, _) in PER_BLOCK.items():
        tables.setdefault(kind, getattr(scores, group))
    return tables


def _summary(scores, kinds, out, plot) -> None:
    from ..architectures.base import unit_kinds

    table = Table(title=f"importance per block ({scores.meta['num_samples']} samples, "
                        f"{scores.meta['num_tokens']} tokens)")
    table.add_column("block", justify="right")
    table.add_column("kind")
    table.add_column("KLD skipped", justify="right")
    table.add_column("Block Influence", justify="right")
    table.add_column("mean unit score", justify="right")
    tables = _first_table_per_kind(scores)
    for i, kind in enumerate(kinds):
        units = [(k, tables[k].get(i)) for k in unit_kinds(kind) if k in tables]
        means = ", ".join(f"{k} {t.mean():.4g}" for k, t in units if t is not None)
        table.add_row(
            str(i), kind,
            f"{scores.depth_kld[i]:.4g}" if scores.depth_kld is not None else "-",
            f"{scores.depth_bi[i]:.4g}" if scores.depth_bi is not None else "-",
            means or "-",
        )
    console.print(table)
    console.print(f"scores written to [bold]{out}[/]; plot: {plot}")
