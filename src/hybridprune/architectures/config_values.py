"""Config integers the adapters divide by or step with, checked before any layout is read.

A checkpoint's config.json is someone else's file: `decoder_sparse_step: 0` or `num_attention_heads: 0`
would end in a ZeroDivisionError deep in a layout or a head count. Such a value is refused when the
adapter is chosen, naming config.json's key and what it is used for.
"""

from __future__ import annotations

#: config key -> what the adapters use it for (each a divisor or a step, so at least 1)
DIVISORS = {
    "num_attention_heads": "it splits hidden_size into attention heads",
    "num_key_value_heads": "it splits the attention heads into key/value groups",
    "linear_num_key_heads": "it splits the Gated DeltaNet value heads among key heads",
    "decoder_sparse_step": "it is the step between MoE layers (every Nth layer)",
    "attn_layer_period": "it is the period of the attention layers",
    "expert_layer_period": "it is the period of the MoE layers",
    "n_groups": "it splits the Mamba heads into groups",
    "mamba_n_groups": "it splits the Mamba heads into groups",
    "n_group": "it splits the routed experts into groups",
    "num_mem_blocks": "the hybrid layers take turns over this many shared blocks",
    "block_multiple_of": "the FFN width is rounded up to a multiple of it",
}


class ConfigValueError(ValueError):
    """A config holds a value no model of its family can have; the message names the key."""


def check_config_values(config, prefix: str = "") -> None:
    """Refuse a divisor or step of `config` (and of its `text_config`) that is not a whole number >= 1."""
    for key, use in DIVISORS.items():
        value = getattr(config, key, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigValueError(f"config.json: {prefix}{key} is {value!r}, but {use}, so it must be a whole "
                                   "number >= 1; the checkpoint's config is broken: fix that key or use another copy")
    text = getattr(config, "text_config", None)
    if text is not None and text is not config:
        check_config_values(text, f"{prefix}text_config.")
