"""What a user probably meant by a plan field that is not one: the config name of an axis, a typo, or
a size that is not prunable.

Users copy names from their model's `config.json`, and every family spells the same axis its own way.
A plan speaks one vocabulary, Minitron's (`ffn_hidden_size`, `mamba_num_heads`, ...), so an unknown
field is answered with the plan field that config name stands for, else the nearest spelling. The
common names are here; each family's own spellings are its adapter's (`Adapter.config_spellings`).
"""

from __future__ import annotations

import difflib

#: common config.json names (Hugging Face's, and other conventions users copy) -> the plan field that
#: prunes that axis
CONFIG_ALIASES = {
    "intermediate_size": "ffn_hidden_size",
    "mlp_hidden_size": "ffn_hidden_size",
    "num_hidden_layers": "num_layers",
    "n_layer": "num_layers",
    "n_layers": "num_layers",
    "d_model": "hidden_size",
    "n_embd": "hidden_size",
    "expert_intermediate_size": "moe_ffn_hidden_size",
}

#: config.json sizes that no plan field sets, and why
NOT_PRUNABLE = {
    "num_key_value_heads": "query heads are pruned inside their KV group, the KV heads stay; set num_attention_heads",
    "head_dim": "attention head_dim is kept (rotary and the engines' kernels need it); Mamba2 head channels are "
                "mamba_head_dim",
    "vocab_size": "the vocabulary is kept (the tokenizer must still match)",
    "ssm_state_size": "the SSM state size is kept (B/C channels are shared by every head of a group)",
    "conv_kernel": "the convolution kernel is kept",
    "num_experts_per_tok": "the router's top-k is kept; set num_moe_experts",
}


def family_spellings() -> dict[str, str]:
    """Every supported family's config.json spellings -> the plan field or common name they stand for."""
    from ..architectures import ADAPTERS

    out: dict[str, str] = {}
    for cls in ADAPTERS:
        out.update({**cls.config_aliases, **cls.config_spellings})
    return out


def suggestion(name: str, fields: list[str]) -> str:
    """A short hint for an unknown plan field `name` ("" if none): the plan field its config name
    stands for, why it is not prunable, or the nearest plan field by spelling."""
    meant = family_spellings().get(name, name)
    if meant in CONFIG_ALIASES:
        return f"{name} is set in a plan as {CONFIG_ALIASES[meant]}"
    if meant in NOT_PRUNABLE:
        return f"{name} is not a plan field: {NOT_PRUNABLE[meant]}"
    if meant != name:
        return f"{name} is set in a plan as {meant}"
    close = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else ""
