"""Jamba (`jamba`): refused, with the reason.

Jamba's mixers are Mamba-1: no heads and no B/C groups, so none of the group-aware Mamba rules apply,
and its layer layout comes only from periods and offsets (`attn_layer_period/offset`,
`expert_layer_period/offset`), so a depth-pruned layout cannot be written in its config.
"""

from __future__ import annotations

from .base import Adapter, UnsupportedArchitecture


class JambaAdapter(Adapter):
    model_types = ("jamba",)

    def check_supported(self, config) -> None:
        raise UnsupportedArchitecture(
            "Jamba is not supported: its Mamba-1 mixers have no heads or B/C groups, so the group-aware "
            "Mamba pruning does not apply, and its layer layout comes only from periods and offsets "
            "(attn_layer_period/offset, expert_layer_period/offset), so depth pruning cannot be written "
            "in its config. Supported hybrids with Mamba2 mixers: bamba, falcon_h1, granitemoehybrid, "
            "mamba2, nemotron_h, zamba2."
        )
