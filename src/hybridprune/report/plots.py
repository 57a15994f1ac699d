"""Matplotlib figures (Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KIND_COLOURS = {"mamba": "tab:blue", "attention": "tab:orange", "mlp": "tab:green", "moe": "tab:red"}
KIND_LETTERS = {"mamba": "M", "attention": "A", "mlp": "F", "moe": "E"}


def plot_layer_importance(scores, block_kinds: list[str], path: str | Path) -> Path:
    """Depth importance per block (KLD and/or Block Influence), coloured by block kind."""
    series = [(name, getattr(scores, attr)) for name, attr in
              (("KL divergence with the block skipped", "depth_kld"), ("Block Influence (1 - cos)", "depth_bi"))
              if getattr(scores, attr) is not None]
    fig, axes = plt.subplots(len(series), 1, figsize=(max(6, 0.35 * len(block_kinds) + 2), 2.6 * len(series)),
                             squeeze=False)
    colours = [KIND_COLOURS.get(k, "grey") for k in block_kinds]
    for ax, (title, values) in zip(axes[:, 0], series):
        ax.bar(range(len(values)), values.tolist(), color=colours)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels([f"{i}\n{KIND_LETTERS.get(k, '?')}" for i, k in enumerate(block_kinds)], fontsize=7)
        ax.set_yscale("log" if float(values.min()) > 0 else "linear")
    from matplotlib.patches import Patch

    present = [k for k in KIND_COLOURS if k in block_kinds]
    axes[0, 0].legend(handles=[Patch(color=KIND_COLOURS[k], label=f"{KIND_LETTERS[k]} = {k}") for k in present],
                      fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("block")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
