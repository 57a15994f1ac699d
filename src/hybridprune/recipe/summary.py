"""The numbers a run prints and reports: size, loss, perplexity, bits per byte and forward speed of each
model, and the side-by-side evaluation as rich tables."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table



def measure(model, row: dict[str, Any], settings) -> dict[str, Any]:
    """One model's summary row: its counts, loss, perplexity and bits per byte as the side-by-side
    evaluation measured them (`row`, its entry in `models`: not measured twice), and its forward speed."""
    from ..evaluate import measure_throughput

    return {
        "params": row["parameters"],
        "non_embedding_params": row["non_embedding_parameters"],
        "val_loss": row["loss"],
        "perplexity": row["perplexity"],
        "bits_per_byte": row["bits_per_byte"],
        "tokens_per_s": measure_throughput(model, settings.batch_size, settings.seq_len, warmup=1, repeats=3),
    }


def summary_table(results: dict[str, Any], names: list[str] | None = None, title: str = "hybridprune run") -> Table:
    table = Table(title=title)
    for col in ("model", "parameters", "non-embedding", "val loss", "perplexity", "bits/byte", "tokens/s (fwd)"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name in names or [n for n in ("teacher", "pruned", "distilled") if n in results]:
        r = results[name]
        table.add_row(name, f"{r['params']:,}", f"{r['non_embedding_params']:,}", f"{r['val_loss']:.4f}",
                      f"{r['perplexity']:.2f}", f"{r['bits_per_byte']:.4f}", f"{r['tokens_per_s']:,.0f}")
    return table


def evaluation_tables(evaluation: dict[str, Any]) -> Group:
    """The side-by-side evaluation (tasks, generation speed) as rich tables."""
    from ..evaluate.tables import quality_table, speed_table

    tables = []
    parts = [("tasks", quality_table(evaluation))]
    if evaluation.get("speed"):
        parts.append(("generation speed (medians; ratio to the teacher)", speed_table(evaluation)))
    for title, (columns, rows) in parts:
        table = Table(title=title)
        for col in columns:
            table.add_column(col, justify="left" if col == "model" else "right")
        for row in rows:
            table.add_row(*row)
        tables.append(table)
    return Group(*tables)
