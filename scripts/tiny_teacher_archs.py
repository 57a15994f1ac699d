"""The architectures `train_tiny_teacher.py` can train: a stock Hugging Face config each, the asset
directory it ships to, and the lines of its model card that describe it.

Widths are chosen so that every pruning axis has room: 4 heads per group (Mamba2 B/C group or GDN key
head), 4 query heads per KV group, a gated or 3x MLP, and 8-10 blocks for depth pruning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

COMMON = dict(vocab_size=4096, max_position_embeddings=2048, tie_word_embeddings=False,
              bos_token_id=0, eos_token_id=0, pad_token_id=1)


@dataclass(frozen=True)
class Arch:
    model_type: str
    asset: str  # directory name under hybridprune/assets/
    layers: str  # one character per block, as the card draws it
    legend: str
    model: dict
    title: str  # what the loss curve and the card call it
    blurb: str  # the card's opening sentence, after the parameter count
    tags: tuple[str, ...]
    table: Callable  # config -> list of (field, value) rows of the card's architecture table
    defaults: dict = field(default_factory=dict)  # training defaults that differ from the script's

    def config(self):
        from transformers import AutoConfig

        return AutoConfig.for_model(self.model_type, **self.build_kwargs())

    def build_kwargs(self) -> dict:
        kinds = {"M": "linear_attention", "G": "linear_attention", "*": "full_attention", "-": "mlp"}
        blocks = [kinds[c] for c in self.layers]
        key = "layers_block_type" if self.model_type == "nemotron_h" else "layer_types"
        extra = {} if key == "layers_block_type" else {"num_hidden_layers": len(blocks)}
        return {key: blocks, **extra, **self.model, **COMMON}


def _nemotron_rows(c) -> list[tuple[str, str]]:
    return [
        ("Mamba2", f"{c.mamba_num_heads} heads x head_dim {c.mamba_head_dim}, n_groups {c.n_groups}, "
                   f"state {c.ssm_state_size}, conv {c.conv_kernel}, chunk {c.chunk_size}"),
        ("attention", f"{c.num_attention_heads} query / {c.num_key_value_heads} KV heads x head_dim {c.head_dim} (GQA, no RoPE)"),
        ("MLP", f"intermediate {c.intermediate_size}, relu² (non-gated)"),
    ]


def _qwen3_5_rows(c) -> list[tuple[str, str]]:
    rot = c.rope_parameters.get("partial_rotary_factor", 0.25)
    return [
        ("Gated DeltaNet", f"{c.linear_num_key_heads} key heads x {c.linear_key_head_dim} (state), "
                           f"{c.linear_num_value_heads} value heads x {c.linear_value_head_dim} "
                           f"({c.linear_num_value_heads // c.linear_num_key_heads} per key head), conv {c.linear_conv_kernel_dim}"),
        ("attention", f"{c.num_attention_heads} query / {c.num_key_value_heads} KV heads x head_dim {c.head_dim} "
                      f"(GQA, output gate, q/k norm, RoPE on {rot:g} of head_dim)"),
        ("MLP", f"intermediate {c.intermediate_size}, SwiGLU, after every mixer"),
    ]


ARCHS = {
    "nemotron_h": Arch(
        model_type="nemotron_h", asset="tiny-nemotron-h", layers="M-M*M-M*M-",
        legend="M = Mamba2, * = attention, - = MLP",
        model=dict(hidden_size=256, mamba_num_heads=16, mamba_head_dim=32, n_groups=4, ssm_state_size=16,
                   conv_kernel=4, chunk_size=64, num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                   intermediate_size=768, mlp_hidden_act="relu2"),
        title="tiny Nemotron-H", tags=("nemotron_h", "hybrid", "mamba2", "tiny", "shakespeare"),
        blurb="hybrid Mamba2–Transformer language model in the Nemotron-H architecture",
        table=_nemotron_rows,
    ),
    "qwen3_5_text": Arch(
        model_type="qwen3_5_text", asset="tiny-qwen3-5", layers="GGG*GGG*",
        legend="G = Gated DeltaNet, * = gated attention; every layer has its MLP",
        model=dict(hidden_size=256, linear_num_key_heads=4, linear_num_value_heads=16, linear_key_head_dim=32,
                   linear_value_head_dim=32, linear_conv_kernel_dim=4, num_attention_heads=8,
                   num_key_value_heads=2, head_dim=32, intermediate_size=256, hidden_act="silu"),
        title="tiny Qwen3.5", tags=("qwen3_5_text", "hybrid", "gated-deltanet", "tiny", "shakespeare"),
        blurb="hybrid Gated DeltaNet–Transformer language model in the Qwen3.5 text architecture (3:1)",
        table=_qwen3_5_rows,
        defaults=dict(max_steps=250, eval_every=50),
    ),
}
