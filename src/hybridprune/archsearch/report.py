"""Showing a search: progress lines, the table of the top candidates, the size-loss plot, and the
files written beside `candidates.jsonl` (`best.yaml`, `summary.json`, `search.png`)."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .space import AXES, LABELS
from .store import BEST_FILE, PLOT_FILE, SUMMARY_FILE

COLUMN_TITLES = {"num_layers": "layers", "hidden_size": "hidden", "ffn_hidden_size": "FFN",
                 "mamba_num_heads": "M heads", "mamba_head_dim": "M head dim", "num_attention_heads": "A heads",
                 "num_moe_experts": "experts", "moe_ffn_hidden_size": "expert FFN",
                 "moe_shared_expert_intermediate_size": "shared expert", "linear_num_key_heads": "GDN K heads",
                 "linear_num_value_heads": "GDN V heads", "linear_key_head_dim": "GDN K dim",
                 "linear_value_head_dim": "GDN V dim"}
SHORT_TITLES = {"num_layers": "L", "hidden_size": "hid", "ffn_hidden_size": "FFN", "mamba_num_heads": "mH",
                "mamba_head_dim": "mD", "num_attention_heads": "aH", "num_moe_experts": "E",
                "moe_ffn_hidden_size": "eFFN", "moe_shared_expert_intermediate_size": "sFFN", "linear_num_key_heads": "gK",
                "linear_num_value_heads": "gV", "linear_key_head_dim": "gKD", "linear_value_head_dim": "gVD"}


def human_count(n: int) -> str:
    """4.482B, 350.0M, 51.73K: four significant digits, enough to tell close candidates apart."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.4g}{suffix}"
    return str(n)


def default_console() -> Console:
    return Console(stderr=True)


class Printer:
    """Prints to a rich console, or nothing when there is none."""

    def __init__(self, console: Console | None):
        self.console = console

    def lines(self, lines: list[str]) -> None:
        if self.console is not None:
            for line in lines:
                self.console.print(line)

    def axes(self, choices: dict[str, list[int]], original) -> None:
        parts = [f"{COLUMN_TITLES[a]} {v}" for a, v in choices.items()]
        self.lines(["search space: " + "; ".join(parts)])

    @contextlib.contextmanager
    def progress(self, what: str, total: int):
        """Yields `advance(message)`: a progress bar on a terminal, one line per candidate otherwise (logs)."""
        if self.console is None or total == 0:
            yield lambda message="": None
            return
        if not self.console.is_terminal:
            done = [0]

            def advance(message: str = "") -> None:
                done[0] += 1
                self.console.print(f"{what} [{done[0]}/{total}] {message}")

            yield advance
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=self.console, transient=True) as bar:
            task = bar.add_task(what, total=total)
            yield lambda message="": bar.advance(task)
        self.console.print(f"{what}: {total} candidate(s) done")


def _fmt_loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def results_table(result, n: int = 10) -> Table:
    """The best `n` candidates: axes, cost, zero-shot and final loss, throughput relative to the winner."""
    rows = result.top(n)
    # Axes with a single choice (skipped, or fixed by the space) say nothing: they are left out.
    axes = [a for a in AXES if len(result.axis_choices.get(a, ())) > 1]
    fixed = [f"{SHORT_TITLES[a]}={v[0]}" for a, v in result.axis_choices.items() if len(v) == 1]
    kd = any(r["kd"] for r in rows)
    title = f"top {len(rows)} of {len(result.candidates)} candidates"
    table = Table(title=title + (f" (fixed: {', '.join(fixed)})" if fixed else ""))
    table.add_column("#", justify="right")
    for a in axes:
        table.add_column(SHORT_TITLES[a], justify="right")
    moe = any(r.get("active_params", r["params"]) != r["params"] for r in rows)
    for heading in ("params", *(("active",) if moe else ()), "MiB", "zero-shot", "after KD" if kd else "loss",
                    "rel thpt"):
        table.add_column(heading, justify="right")
    ref = result.best_candidate.get("throughput")
    for i, r in enumerate(rows, 1):
        rel = "-" if not ref or r["throughput"] is None else f"{r['throughput'] / ref:.2f}"
        style = "bold green" if r["key"] == result.best_key else None
        active = (human_count(r["active_params"]),) if moe else ()
        table.add_row(str(i), *(str(r["values"][a]) for a in axes), human_count(r["params"]), *active,
                      f"{r['memory_mb']:,.1f}", _fmt_loss(r["zero_shot_loss"]), _fmt_loss(r["loss"]), rel, style=style)
    return table


def plot_search(result, path: str | Path, *, x: str = "params") -> Path:
    """Scatter of cost (`params` or `memory_mb`) against loss: zero-shot for every candidate, after KD
    (or final) for the top-K, the winner starred."""
    from ..report.plots import plt

    non_embedding = x == "params" and result.report.params_kind != "total"
    if non_embedding:  # show the count the budget constrains, so the budget line belongs on the axis
        x = "params_non_embedding"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    shown = [c for c in result.candidates if math.isfinite(c["zero_shot_loss"])]
    ax.scatter([c[x] for c in shown], [c["zero_shot_loss"] for c in shown], s=14, color="tab:gray", alpha=0.6,
               label="zero-shot")
    finals = [c for c in shown if c["loss"] is not None and math.isfinite(c["loss"])]
    kd = any(c["kd"] for c in finals)
    if kd:
        ax.scatter([c[x] for c in finals], [c["loss"] for c in finals], s=22, color="tab:blue", label="after short KD")
        for c in finals:
            ax.plot([c[x], c[x]], [c["zero_shot_loss"], c["loss"]], color="tab:blue", alpha=0.25, lw=0.8)
    elif finals:
        ax.scatter([c[x] for c in finals], [c["loss"] for c in finals], s=60, facecolors="none",
                   edgecolors="tab:blue", label=f"top {len(finals)}")
    limits = {"active_params": result.report.active_limit, "memory_mb": result.report.memory_limit_mb}
    limit = result.report.param_limit if x.startswith("params") else limits.get(x)
    if limit is not None:
        ax.axvline(limit, color="tab:red", ls="--", lw=0.8, alpha=0.7, label="budget")
    best = result.best_candidate
    best_loss = best["loss"] if best["loss"] is not None else best["zero_shot_loss"]
    ax.scatter([best[x]], [best_loss], marker="*", s=220, color="tab:red", zorder=5, label=f"winner {best['key']}")
    ax.set_xlabel({"params": "parameters", "params_non_embedding": "non-embedding parameters",
                   "active_params": "active parameters per token"}.get(x, "memory (MiB)"))
    ax.set_ylabel("validation loss")
    ax.set_title("architecture search: cost vs loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from ..output.atomic import writing

    path = Path(path)
    try:
        with writing("the search plot", path):
            fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def decision_text(decision: dict[str, Any]) -> str:
    """"loss" or "tie: analytic cost among 3 within 0.005 (a, b, c)": what chose the winner."""
    by = decision.get("decided_by", "loss")
    if not decision.get("tied"):
        return by
    tied = decision["tied"]
    return f"{by} among {len(tied)} within {decision.get('tie_tolerance')} of the lowest loss ({', '.join(tied)})"


def best_yaml(result, budget, scores_dir: str | None = None) -> str:
    best = result.best_candidate
    header = [
        f"# hybridprune search winner {best['key']}",
        f"# loss {_fmt_loss(best['loss'])} (zero-shot {_fmt_loss(best['zero_shot_loss'])}); "
        f"{best['params']:,} parameters ({best['params_non_embedding']:,} without embeddings"
        + (f", {best['active_params']:,} active" if best.get("active_params", best["params"]) != best["params"] else "")
        + "); "
        f"{best['memory_mb']:,.1f} MiB at batch {budget.batch} x {budget.seq_len} ({budget.dtype})",
        f"# apply: hybridprune prune --model MODEL --scores {scores_dir or 'SCORES_DIR'} "
        "--plan SEARCH_DIR/best.yaml --out OUT",
    ]
    if result.decision:
        header.insert(2, f"# chosen by {decision_text(result.decision)}")
    body = yaml.safe_dump(result.best.to_dict(), sort_keys=False, default_flow_style=False)
    return "\n".join(header) + "\n" + body


def write_outputs(result, store, budget, original, scores_dir: str | None = None) -> None:
    """best.yaml, summary.json and the plot (nothing without an output directory)."""
    if store.dir is None:
        return
    store.write_text(BEST_FILE, best_yaml(result, budget, scores_dir))
    summary: dict[str, Any] = {
        "best": result.best_key, "decision": result.decision, "plan": result.best.to_dict(),
        "filter": result.report.to_dict(),
        "axis_choices": result.axis_choices, "labels": LABELS, "candidates": result.candidates,
    }
    store.write_text(SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    x = "params" if budget.params is not None else "active_params" if budget.active_params is not None else "memory_mb"
    plot_search(result, store.dir / PLOT_FILE, x=x)
