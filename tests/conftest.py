"""Tiny random models built from configs: every test runs offline in seconds."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

NEMOTRON_BLOCKS = ["linear_attention", "mlp", "full_attention", "mlp", "linear_attention", "mlp"]


def tiny_nemotron_config(**overrides):
    from transformers import AutoConfig

    kw = dict(
        vocab_size=96, hidden_size=48, layers_block_type=NEMOTRON_BLOCKS,
        mamba_num_heads=12, mamba_head_dim=8, n_groups=3, ssm_state_size=8, conv_kernel=4, chunk_size=8,
        num_attention_heads=8, num_key_value_heads=2, head_dim=8, intermediate_size=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    kw.update(overrides)
    return AutoConfig.for_model("nemotron_h", **kw)


def tiny_mamba2_config(**overrides):
    from transformers import AutoConfig

    kw = dict(vocab_size=96, hidden_size=48, num_heads=12, head_dim=8, expand=2, n_groups=3, state_size=8,
              num_hidden_layers=3, chunk_size=8, conv_kernel=4, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    kw.update(overrides)
    return AutoConfig.for_model("mamba2", **kw)


def build(config, seed: int = 0):
    """A random model whose weights are perturbed away from their (often constant) init values,
    so that norms, biases and per-head parameters all matter in equivalence tests."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm_f.weight", "D", "dt_bias", "conv1d.bias")):
                p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.fixture
def nemotron():
    return build(tiny_nemotron_config())


@pytest.fixture
def mamba2():
    return build(tiny_mamba2_config())


@pytest.fixture
def tokens():
    g = torch.Generator().manual_seed(1)
    return torch.randint(3, 96, (6, 24), generator=g)
