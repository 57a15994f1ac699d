"""`hybridprune calibrate`: score every prunable unit of a checkpoint on calibration text."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..options import CALIBRATE
from ..stages.calibrate import PLOT_FILE, CalibrateSettings
from . import shared
from .checks import check_data_path, check_not_blank
from .common import console, fail_cleanly, init_distributed, voice

D = CalibrateSettings()
#: the flags that name the stage's inputs and output rather than its settings
IO_FLAGS = ("model", "data", "out", "overwrite")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)


@fail_cleanly
def calibrate_command(
    model: Path = typer.Option(..., "--model", help="Hugging Face checkpoint directory."),
    data: str = typer.Option(..., "--data", help="Text source: .txt/.jsonl/.json/.parquet, a saved dataset, 'shakespeare', or a token directory (`hybridprune tokenize`: only the windows used are read)."),
    out: Path = typer.Option(..., "--out", help="Directory for the scores (safetensors + JSON)."),
    overwrite: bool = shared.overwrite("earlier scores"),
    samples: int = typer.Option(D.samples, **CALIBRATE.bounds("samples"), help="Calibration samples (the paper uses 1024)."),
    seq_len: int = typer.Option(D.seq_len, "--seq-len", **CALIBRATE.bounds("seq_len"), help="Tokens per sample."),
    batch_size: int = typer.Option(D.batch_size, "--batch-size", **CALIBRATE.bounds("batch_size"), help="Samples per forward pass."),
    depth_samples: int = typer.Option(D.depth_samples, "--depth-samples", **CALIBRATE.bounds("depth_samples"), help="Samples for KL-divergence depth importance (one forward per block each); 0 = Block Influence only."),
    text_field: str = shared.text_field(D.text_field),
    seed: int = shared.seed(D.seed, "Seed for sampling the calibration windows."),
    device: str = shared.device(D.device),
    device_map: str = shared.device_map(),
    dtype: str = shared.dtype(D.dtype),
    force: bool = shared.force(D.force),
    trust_remote_code: bool = shared.trust_remote_code(D.trust_remote_code),
) -> None:
    """Run calibration data through the model with hooks and save importance scores."""
    from ..stages import calibrate

    settings = CalibrateSettings(samples=samples, seq_len=seq_len, batch_size=batch_size, depth_samples=depth_samples,
                                 text_field=text_field, seed=seed, device=device, device_map=device_map, dtype=dtype,
                                 force=force, trust_remote_code=trust_remote_code)
    check_not_blank(("--data", data, "shakespeare"), ("--text-field", text_field, "text"))
    calibrate.check(settings)
    check_data_path("--data", data)
    rank, world = init_distributed()
    scores = calibrate.run(settings, model, data, out, overwrite=overwrite, voice=voice(), shard=(rank, world))
    if rank == 0:
        _summary(scores, list(scores.meta["dims"]["block_kinds"]), out, Path(out) / PLOT_FILE)


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
