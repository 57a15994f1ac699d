"""Parameter layouts shared by several architectures: which axis slices each tensor dimension.

Rules are keyed by the parameter's name inside its block (or inside the model for globals). Axes are
resolved into index tensors by `hybridprune.pruning.slicing`.
"""

from __future__ import annotations

# The Mamba2 mixer is laid out identically in every HF Mamba2-family class:
# in_proj rows [z | x | B | C | dt], conv1d channels [x | B | C], per-head dt_bias/A_log/D,
# a gated norm over x channels, out_proj columns over x channels.
MAMBA2_MIXER = {
    "in_proj.weight": ("mamba_in_proj", "hidden"),
    "in_proj.bias": ("mamba_in_proj",),
    "conv1d.weight": ("mamba_conv", None, None),
    "conv1d.bias": ("mamba_conv",),
    "dt_bias": ("mamba_heads",),
    "A_log": ("mamba_heads",),
    "D": ("mamba_heads",),
    "norm.weight": ("mamba_channels",),
    "out_proj.weight": ("hidden", "mamba_channels"),
    "out_proj.bias": ("hidden",),
}

# Attention with separate q/k/v/o projections; KV heads are never pruned.
QKVO_ATTENTION = {
    "q_proj.weight": ("attn_q", "hidden"),
    "q_proj.bias": ("attn_q",),
    "k_proj.weight": (None, "hidden"),
    "v_proj.weight": (None, "hidden"),
    "o_proj.weight": ("hidden", "attn_q"),
    "o_proj.bias": ("hidden",),
}

# A non-gated MLP (up -> activation -> down).
UP_DOWN_MLP = {
    "up_proj.weight": ("ffn", "hidden"),
    "up_proj.bias": ("ffn",),
    "down_proj.weight": ("hidden", "ffn"),
    "down_proj.bias": ("hidden",),
}

NORM = {"weight": ("hidden",)}


def prefixed(prefix: str, rules: dict[str, tuple]) -> dict[str, tuple]:
    return {f"{prefix}{name}": axes for name, axes in rules.items()}
