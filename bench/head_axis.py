"""The grouped head axis of a hybrid's linear mixer, as the head experiments (group_awareness,
score_source, heads_vs_channels) see it: Mamba2 heads under their B/C groups, or Gated DeltaNet
value heads under their key heads. Both are "H heads of D channels in G groups, where a head reads
its group's shared tensors": B/C for Mamba2, the query/key head (the delta rule's state) for GDN.

An experiment asks `axis_of(dims)` and uses the names here instead of `mamba_*` fields, so one script
runs on either teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hybridprune.pruning.selection import Selection


@dataclass(frozen=True)
class HeadAxis:
    kind: str  # the unit kind (`Dims.layers_of`) and the Scores group of the head scores
    heads_field: str  # Dims / plan field: number of heads
    channels_field: str  # Dims / plan field: channels per head
    groups_field: str  # Dims field: number of groups
    sel_heads: str  # Selection field of the kept heads
    sel_channels: str  # Selection field of the kept channels
    head: str  # what the tables call one head
    group: str  # what the tables call the shared tensors of a group

    def sizes(self, dims) -> tuple[int, int, int]:
        """(heads, channels per head, groups)."""
        return getattr(dims, self.heads_field), getattr(dims, self.channels_field), getattr(dims, self.groups_field)

    def layers(self, dims) -> list[int]:
        return dims.layers_of(self.kind)

    def scores(self, scores) -> dict[int, torch.Tensor]:
        """[heads, channels] score matrix per layer (the library's default source)."""
        return getattr(scores, self.kind)

    def selection(self, dims, heads_per_layer: dict[int, torch.Tensor]) -> Selection:
        """Keep every block, every channel, and exactly these heads (in this order) per layer."""
        _, d, _ = self.sizes(dims)
        sel = Selection(kept_blocks=list(range(dims.num_layers)))
        for i, heads in heads_per_layer.items():
            getattr(sel, self.sel_heads)[i] = heads
            getattr(sel, self.sel_channels)[i] = torch.arange(d)
        return sel


MAMBA_HEADS = HeadAxis("mamba", "mamba_num_heads", "mamba_head_dim", "mamba_n_groups", "mamba_heads",
                       "mamba_channels", head="Mamba head", group="B/C")
GDN_VALUE_HEADS = HeadAxis("gdn", "linear_num_value_heads", "linear_value_head_dim", "linear_num_key_heads",
                           "gdn_value_heads", "gdn_value_channels", head="GDN value head", group="key head")


def axis_of(dims) -> HeadAxis:
    """The grouped head axis of a model: its Mamba2 heads, else its GDN value heads."""
    for axis in (MAMBA_HEADS, GDN_VALUE_HEADS):
        if axis.layers(dims):
            return axis
    raise ValueError("the model has neither Mamba2 nor Gated DeltaNet mixers")


def mixer_of(model, i):
    """The linear mixer of block i: the module that owns conv1d and out_proj (Mamba2 or GDN)."""
    import hybridprune as hp
    block = hp.get_adapter(model).blocks(model)[i]
    return next(m for m in block.module.modules() if hasattr(m, "conv1d") and hasattr(m, "out_proj"))
