"""`hybridprune eval`: validation loss, perplexity and throughput of one or more checkpoints."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .checks import SEED_MAX
from .common import CliError, console, fail_cleanly, load_model, load_tokenizer


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


@fail_cleanly
def eval_command(
    models: list[Path] = typer.Argument(..., help="One or more Hugging Face checkpoint directories (e.g. teacher and student)."),
    data: str = typer.Option(..., "--data", help="Text source: .txt/.jsonl/.json/.parquet, a saved dataset, or 'shakespeare'."),
    split: str = typer.Option("validation", help="Data split to measure on (validation, test, ...)."),
    samples: int = typer.Option(256, min=1, help="Samples to evaluate."),
    seq_len: int = typer.Option(2048, "--seq-len", min=2, help="Tokens per sample."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Samples per forward pass."),
    speed: bool = typer.Option(True, "--speed/--no-speed", help="Also measure forward throughput (tokens/s, median of 3)."),
    text_field: str = typer.Option("text", "--text-field", help="Field holding the text in JSON/parquet data."),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Seed for sampling the windows."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("auto", help="auto (as saved), float32, bfloat16, float16."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoints' own Python code."),
) -> None:
    """Measure every checkpoint on the same token samples and print one table."""
    from ..architectures import get_adapter
    from ..data import load_token_samples
    from ..evaluate import evaluate_loss, measure_throughput

    table = Table(title=f"{split} split of {data}: {samples} samples x {seq_len} tokens")
    for col in ("model", "parameters", "loss", "perplexity", "tokens/s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    tokens = None
    for path in models:
        lm = load_model(path, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        if tokens is None:  # one token set for every model, from the first model's tokenizer
            tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
            tokens = load_token_samples(data, tokenizer, seq_len=seq_len, num_samples=samples, split=split,
                                        seed=seed, text_field=text_field, model_vocab_size=lm.config.vocab_size)
        elif lm.config.vocab_size < int(tokens.input_ids.max()) + 1:
            raise CliError(f"{path} has a smaller vocabulary than {models[0]}: they cannot share token samples")
        ev = evaluate_loss(lm, tokens, batch_size=batch_size)
        tps = measure_throughput(lm, batch_size, seq_len) if speed else None
        try:
            params = f"{get_adapter(lm).num_parameters(get_adapter(lm).dims(lm.config)):,}"
        except ValueError:  # not a supported architecture: count what is there
            params = f"{sum(p.numel() for p in lm.parameters()):,}"
        table.add_row(str(path), params, f"{ev['loss']:.4f}", f"{ev['perplexity']:.2f}",
                      f"{tps:,.0f}" if tps is not None else "-")
        del lm
    console.print(table)
