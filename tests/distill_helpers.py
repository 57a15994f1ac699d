"""Tiny random models and data shared by the distillation tests (no tests here)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

VOCAB = 256


def tiny_nemotron_h(hidden: int = 64, seed: int = 0, vocab: int = VOCAB, mamba_heads: int | None = None):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(
        "nemotron_h",
        vocab_size=vocab,
        hidden_size=hidden,
        layers_block_type=["linear_attention", "mlp", "full_attention", "mlp"],
        mamba_num_heads=mamba_heads or (8 if hidden >= 64 else 4),
        mamba_head_dim=16,
        n_groups=2,
        ssm_state_size=16,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=2 * hidden,
        chunk_size=16,
        conv_kernel=4,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg)


def tiny_mamba2(hidden: int = 64, seed: int = 0, vocab: int = VOCAB):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(
        "mamba2",
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_heads=hidden // 16,
        head_dim=16,
        expand=1,
        n_groups=2,
        state_size=16,
        chunk_size=16,
        conv_kernel=4,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg)


def random_tokens(n: int = 16, seq_len: int = 32, vocab: int = VOCAB, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, seq_len), generator=g)


class DictDataset(torch.utils.data.Dataset):
    """The data layer's item shape: {"input_ids": LongTensor[T], "attention_mask": LongTensor[T]}."""

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor | None = None):
        self.ids = ids
        self.mask = torch.ones_like(ids) if mask is None else mask

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i]}
