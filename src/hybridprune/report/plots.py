"""Matplotlib figures (Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KIND_COLOURS = {"mamba": "tab:blue", "attention": "tab:orange", "mlp": "tab:green", "moe": "tab:red"}
KIND_LETTERS = {"mamba": "M", "attention": "A", "mlp": "F", "moe": "E", "conv": "C"}


def _letters(layer_type: str) -> str:
    """"mamba+mlp" -> "MF": one letter per unit the layer holds."""
    from ..architectures.base import unit_kinds

    return "".join(KIND_LETTERS.get(k, "?") for k in unit_kinds(layer_type))


def _layer_colours(block_kinds: list[str]) -> dict[str, str]:
    """One colour per layer type: the unit kinds' own colours for one-unit layers, others after them."""
    spare = iter(["tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"] * 4)
    return {t: KIND_COLOURS.get(t) or next(spare) for t in dict.fromkeys(block_kinds)}


def plot_layer_importance(scores, block_kinds: list[str], path: str | Path) -> Path:
    """Depth importance per block (KLD and/or Block Influence), coloured by layer type (a layer holding
    a mixer and an MLP is labelled e.g. "MF")."""
    series = [(name, getattr(scores, attr)) for name, attr in
              (("KL divergence with the block skipped", "depth_kld"), ("Block Influence (1 - cos)", "depth_bi"))
              if getattr(scores, attr) is not None]
    fig, axes = plt.subplots(len(series), 1, figsize=(max(6, 0.35 * len(block_kinds) + 2), 2.6 * len(series)),
                             squeeze=False)
    palette = _layer_colours(block_kinds)
    colours = [palette[k] for k in block_kinds]
    for ax, (title, values) in zip(axes[:, 0], series):
        ax.bar(range(len(values)), values.tolist(), color=colours)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels([f"{i}\n{_letters(k)}" for i, k in enumerate(block_kinds)], fontsize=7)
        ax.set_yscale("log" if float(values.min()) > 0 else "linear")
    from matplotlib.patches import Patch

    axes[0, 0].legend(handles=[Patch(color=c, label=f"{_letters(t)} = {t}") for t, c in palette.items()],
                      fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("block")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _unit_rows(scores) -> list[tuple[str, str, dict[int, list[float]]]]:
    """(title, unit name, {layer: scores per unit}) for each axis the scores hold."""
    import torch

    from ..importance.scores import as_float64

    def f32(t):  # loaded scores are numpy arrays, calibration's torch tensors
        return torch.from_numpy(as_float64(t)).float()

    axes = []
    if scores.mamba:
        axes.append(("Mamba heads (L2 over head channels)", "head",
                     {i: torch.linalg.vector_norm(f32(t), dim=1).tolist() for i, t in scores.mamba.items()}))
        axes.append(("Mamba head channels (L2 over heads)", "channel",
                     {i: torch.linalg.vector_norm(f32(t), dim=0).tolist() for i, t in scores.mamba.items()}))
    if scores.attention:
        axes.append(("Attention heads (L2 over head channels)", "head",
                     {i: torch.linalg.vector_norm(f32(t), dim=1).tolist() for i, t in scores.attention.items()}))
    if scores.ffn:
        axes.append(("FFN neurons", "neuron", {i: f32(t).tolist() for i, t in scores.ffn.items()}))
    if scores.moe_experts:
        axes.append(("Routed experts (mean output norm over their tokens)", "expert",
                     {i: f32(t).tolist() for i, t in scores.moe_experts.items()}))
        axes.append(("Routed experts (share of routed tokens)", "expert",
                     {i: f32(t).tolist() for i, t in scores.moe_frequency.items()}))
        axes.append(("Expert FFN neurons (shared by all experts)", "neuron",
                     {i: f32(t).tolist() for i, t in scores.moe_ffn.items()}))
    if scores.moe_shared_ffn:
        axes.append(("Shared-expert neurons", "neuron", {i: f32(t).tolist() for i, t in scores.moe_shared_ffn.items()}))
    if scores.hidden is not None:
        axes.append(("Hidden channels (summed over blocks)", "channel", {-1: f32(scores.hidden).tolist()}))
    return axes


def plot_score_heatmaps(scores, path: str | Path) -> Path | None:
    """Per-axis importance as heatmaps, layer × unit, each row scaled to its own maximum.

    Scaling per row shows which units a layer keeps (pruning ranks units within a layer); the raw
    magnitudes differ by orders between layers and kinds.
    """
    import numpy as np

    axes_data = _unit_rows(scores)
    if not axes_data:
        return None
    fig, axes = plt.subplots(len(axes_data), 1, figsize=(8, 1.2 + sum(0.25 * len(d) + 0.9 for _, _, d in axes_data)),
                             squeeze=False, gridspec_kw={"height_ratios": [max(1, len(d)) + 2 for _, _, d in axes_data]})
    for ax, (title, unit, rows) in zip(axes[:, 0], axes_data):
        layers = sorted(rows)
        width = max(len(rows[i]) for i in layers)
        grid = np.full((len(layers), width), np.nan)
        for r, i in enumerate(layers):
            values = np.asarray(rows[i], dtype=float)
            peak = np.nanmax(np.abs(values)) if values.size else 0
            grid[r, : values.size] = values / peak if peak > 0 else values
        im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_yticks(range(len(layers)))
        ax.set_yticklabels(["all" if i < 0 else f"block {i}" for i in layers], fontsize=7)
        ax.set_xlabel(unit, fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01)
    fig.tight_layout()
    return _save(fig, path)


def plot_candidates(records: list[dict], path: str | Path, winner: str | None = None) -> Path | None:
    """Search candidates on the size–loss plane: zero-shot loss, and loss after the short distillation."""
    zero = [(r["cost"]["params"], r["loss"], r["key"]) for r in records
            if r.get("stage") == "zero_shot" and r.get("loss") is not None and "cost" in r]
    kd = [(r["cost"]["params"], r["loss"], r["key"]) for r in records
          if r.get("stage") not in (None, "zero_shot") and r.get("loss") is not None and "cost" in r]
    if not zero and not kd:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if zero:
        ax.scatter([p for p, _, _ in zero], [loss for _, loss, _ in zero], s=18, color="tab:blue", alpha=0.7,
                   label="zero-shot (pruned, no training)")
    if kd:
        ax.scatter([p for p, _, _ in kd], [loss for _, loss, _ in kd], s=30, color="tab:orange", marker="D",
                   label="after short distillation")
    for p, loss, key in kd if kd else zero:
        if key == winner:
            ax.scatter([p], [loss], s=160, facecolors="none", edgecolors="red", linewidths=1.5, label="chosen")
            ax.annotate(key, (p, loss), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("parameters")
    ax.set_ylabel("validation loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_kd_curve(log: list[dict], path: str | Path) -> Path | None:
    """The distillation's training loss per step, and its validation loss where it was measured."""
    train = [(r["step"], r["loss"]) for r in log if "step" in r and "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in log if "step" in r and "val_loss" in r]
    if not train and not val:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    if train:
        ax.plot([s for s, _ in train], [v for _, v in train], color="tab:blue", lw=1, label="train KD loss")
    if val:
        ax.plot([s for s, _ in val], [v for _, v in val], "o-", color="tab:orange", ms=4, label="validation KD loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_speed_vs_loss(points: list[tuple[str, float, float]], path: str | Path, *, x_label: str,
                       y_label: str) -> Path | None:
    """One point per model: quality (x, lower is better) against decode speed (y, higher is better)."""
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, x, y) in enumerate(points):
        ax.scatter([x], [y], s=50, color=plt.cm.tab10(i % 10))
        ax.annotate(name, (x, y), fontsize=8, xytext=(5, 4), textcoords="offset points")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    ax.margins(0.25)
    fig.tight_layout()
    return _save(fig, path)
