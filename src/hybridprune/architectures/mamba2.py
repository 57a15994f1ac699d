"""Mamba2 (`mamba2`): every block is a Mamba2 mixer; no attention, no MLP.

The config couples widths: the mixer's inner size is `expand * hidden_size`, `expand` must be an
integer, and `hidden_size * expand == num_heads * head_dim` is validated. Plans that break this
cannot be written, and the error lists the targets that can.
"""

from __future__ import annotations

import copy
import math

from .base import MAMBA, Adapter, Dims, LayerSpec
from .config_view import ViewRules
from .expand import check_expand
from .layouts import MAMBA2_MIXER, outer_rules


def _post_init(attrs: dict, extra: dict) -> None:
    """Mamba2Config.__post_init__ (transformers 5.24) on plain data."""
    if attrs["time_step_rank"] == "auto":
        attrs["time_step_rank"] = math.ceil(attrs["hidden_size"] / 16)


class Mamba2Adapter(Adapter):
    model_types = ("mamba2",)
    config_spellings = {"num_heads": "mamba_num_heads"}
    layers_prefix = "backbone.layers."
    global_rules = outer_rules("backbone.embeddings", "backbone.norm_f")
    layer_specs = {MAMBA: LayerSpec(units=(("mixer.", MAMBA2_MIXER),), norms=("norm",))}
    config_view_rules = ViewRules(
        _post_init, {"layer_types": lambda a: ["linear_attention"] * a["num_hidden_layers"]},
        # Mamba2Config.validate_architecture
        lambda a: a["hidden_size"] * a["expand"] == a["num_heads"] * a["head_dim"])

    def dims(self, config) -> Dims:
        return Dims(
            block_kinds=(MAMBA,) * config.num_hidden_layers,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            tied_embeddings=bool(config.tie_word_embeddings),
            mamba_num_heads=config.num_heads,
            mamba_head_dim=config.head_dim,
            mamba_n_groups=config.n_groups,
            mamba_state_size=config.state_size,
            mamba_conv_kernel=config.conv_kernel,
            mamba_proj_bias=bool(config.use_bias),
            mamba_conv_bias=bool(config.use_conv_bias),
        )

    def check_representable(self, dims: Dims, original: Dims | None = None) -> None:
        super().check_representable(dims, original)
        check_expand(dims, original, "Mamba2", names=("expand", "num_heads", "head_dim"))

    def make_config(self, config, dims: Dims):
        self.check_representable(dims)
        new = copy.deepcopy(config)
        new.hidden_size = dims.hidden_size
        new.num_heads = dims.mamba_num_heads
        new.head_dim = dims.mamba_head_dim
        new.expand = dims.mamba_num_heads * dims.mamba_head_dim // dims.hidden_size
        new.num_hidden_layers = dims.num_layers
        return type(config).from_dict(new.to_dict())
