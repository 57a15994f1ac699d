"""What a user probably meant by a plan field that is not one: the config name of an axis, a typo, or
a size that is not prunable.

Users copy names from their model's `config.json`, and every family spells the same axis its own way
(`intermediate_size`, Falcon-H1's `mamba_n_heads`, Zamba2's `n_mamba_heads`, Kimi's `linear_num_heads`).
A plan speaks one vocabulary, Minitron's (`ffn_hidden_size`, `mamba_num_heads`, ...), so an unknown
field is answered with the plan field that config name stands for, else the nearest spelling.
"""

from __future__ import annotations

import difflib

#: config.json names (across the supported families) -> the plan field that prunes that axis
CONFIG_ALIASES = {
    "intermediate_size": "ffn_hidden_size",
    "mlp_hidden_size": "ffn_hidden_size",
    "block_ff_dim": "ffn_hidden_size",
    "num_hidden_layers": "num_layers",
    "n_layer": "num_layers",
    "n_layers": "num_layers",
    "d_model": "hidden_size",
    "n_embd": "hidden_size",
    "mamba_n_heads": "mamba_num_heads",
    "n_mamba_heads": "mamba_num_heads",
    "num_heads": "mamba_num_heads",
    "linear_num_heads": "mamba_num_heads",
    "mamba_d_head": "mamba_head_dim",
    "mamba_headdim": "mamba_head_dim",
    "num_experts": "num_moe_experts",
    "n_routed_experts": "num_moe_experts",
    "num_local_experts": "num_moe_experts",
    "moe_intermediate_size": "moe_ffn_hidden_size",
    "expert_intermediate_size": "moe_ffn_hidden_size",
    "shared_expert_intermediate_size": "moe_shared_expert_intermediate_size",
}

#: config.json sizes that no plan field sets, and why
NOT_PRUNABLE = {
    "num_key_value_heads": "query heads are pruned inside their KV group, the KV heads stay; set num_attention_heads",
    "head_dim": "attention head_dim is kept (rotary and the engines' kernels need it); Mamba2 head channels are "
                "mamba_head_dim",
    "vocab_size": "the vocabulary is kept (the tokenizer must still match)",
    "ssm_state_size": "the SSM state size is kept (B/C channels are shared by every head of a group)",
    "mamba_d_state": "the SSM state size is kept (B/C channels are shared by every head of a group)",
    "conv_kernel": "the convolution kernel is kept",
    "num_experts_per_tok": "the router's top-k is kept; set num_moe_experts",
}


def suggestion(name: str, fields: list[str]) -> str:
    """A short hint for an unknown plan field `name` ("" if none): the plan field its config name
    stands for, why it is not prunable, or the nearest plan field by spelling."""
    if name in CONFIG_ALIASES:
        return f"{name} is set in a plan as {CONFIG_ALIASES[name]}"
    if name in NOT_PRUNABLE:
        return f"{name} is not a plan field: {NOT_PRUNABLE[name]}"
    close = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else ""
