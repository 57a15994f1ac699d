"""Tiny random models built from configs: every test runs offline in seconds."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# tiny tensors gain nothing from a second thread, and on a busy machine threads waiting for a core slow
# every op many times over; the commands tests start in fresh processes inherit the setting
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

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
    if getattr(config, "vision_config", None) is not None:  # a vision-language wrapper: its own class
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_config(config).eval()
    else:
        model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "norm_f.weight", "D", "dt_bias", "conv1d.bias", "layernorm.weight")):
                p.add_(0.3 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith(("e_score_correction_bias", "expert_bias")):  # a trained router's bias is not zero
                b.add_(0.05 * torch.randn_like(b))
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


# ---- one tiny config per family, for the shared battery (tests/test_families.py) ----------------
# Sizes are chosen so every axis has room: 12 Mamba heads × 8 in 3 groups, 6 query heads in 2 KV
# groups, FFN 64, hidden 48.
_MAMBA_KW = dict(mamba_n_heads=12, mamba_d_head=8, mamba_n_groups=3, mamba_d_state=8, mamba_d_conv=4,
                 mamba_expand=2, mamba_chunk_size=8)
_COMMON = dict(vocab_size=96, hidden_size=48, num_attention_heads=6, num_key_value_heads=2,
               pad_token_id=0, bos_token_id=1, eos_token_id=2)


NEMOTRON_MOE_BLOCKS = ["linear_attention", "moe", "full_attention", "moe", "linear_attention", "mlp"]
# 8 experts in 2 routing groups, 2 per token from 1 group; expert FFN 16, shared expert 24
_NEMOTRON_MOE_KW = dict(layers_block_type=NEMOTRON_MOE_BLOCKS, n_routed_experts=8, moe_intermediate_size=16,
                        moe_shared_expert_intermediate_size=24, num_experts_per_tok=2, n_group=2, topk_group=1,
                        routed_scaling_factor=1.5, norm_topk_prob=True)

# 6 KDA heads x 8, 4 MLA heads (nope 8 + rope 8, v 12, kv_lora 16), Hub-style linear_attn_config; 8 experts
# in 2 routing groups, 2 per token from 1 group; expert FFN 16, one shared expert (16)
_KIMI_KW = dict(vocab_size=96, hidden_size=48, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=12,
                intermediate_size=64, moe_intermediate_size=16, num_local_experts=8, num_experts_per_tok=2,
                n_group=2, topk_group=1, n_shared_experts=1, routed_scaling_factor=1.5, first_k_dense_replace=1,
                linear_attn_config={"num_heads": 6, "head_dim": 8, "short_conv_kernel_size": 4,
                                    "full_attn_layers": [2], "kda_layers": [1, 3, 4]},
                pad_token_id=0, bos_token_id=1, eos_token_id=2)


# Gated DeltaNet hybrids: 2 key heads of 8 channels, each serving 3 value heads of 8 channels; gated
# attention with 6 query heads in 2 KV groups; GDN:attention 3:1 as in Qwen3.5.
GDN_LAYERS = ["linear_attention", "full_attention", "linear_attention", "linear_attention"]
_GDN_KW = dict(vocab_size=96, hidden_size=48, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
               num_hidden_layers=4, layer_types=GDN_LAYERS, linear_num_key_heads=2, linear_num_value_heads=6,
               linear_key_head_dim=8, linear_value_head_dim=8, linear_conv_kernel_dim=4,
               pad_token_id=0, bos_token_id=1, eos_token_id=2)
#: a one-block vision tower whose merger writes the language model's 48 hidden channels
TINY_VISION = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=48, patch_size=4,
                   spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16)
# MoE: 8 experts of 16 neurons, 2 per token, a shared expert of 24
_QWEN_MOE_KW = dict(num_experts=8, moe_intermediate_size=16, shared_expert_intermediate_size=24, num_experts_per_tok=2)


def tiny_config(family: str, **overrides):
    from transformers import AutoConfig

    if family == "qwen3_5_text":
        return AutoConfig.for_model(family, **{**_GDN_KW, "intermediate_size": 64, **overrides})
    if family == "qwen3_5_moe_text":
        return AutoConfig.for_model(family, **{**_GDN_KW, **_QWEN_MOE_KW, **overrides})
    if family in ("qwen3_5", "qwen3_5_moe"):  # the vision-language wrapper around the text family
        text = tiny_config(f"{family}_text", **overrides).to_dict()
        return AutoConfig.for_model(family, text_config=text, vision_config=TINY_VISION)
    if family == "olmo_hybrid":  # attention head_dim = hidden / heads = 8
        return AutoConfig.for_model(family, **{**{k: v for k, v in _GDN_KW.items() if k != "head_dim"},
                                               "intermediate_size": 64, **overrides})
    if family == "qwen3_next":  # MoE in layers 0, 1 and 3, a dense MLP in layer 2 (mlp_only_layers)
        return AutoConfig.for_model(family, **{**_GDN_KW, **_QWEN_MOE_KW, "intermediate_size": 64,
                                               "mlp_only_layers": [2], **overrides})

    if family == "nemotron_h":
        return tiny_nemotron_config(**overrides)
    if family == "nemotron_h_moe":  # Nemotron 3 Nano's layout, tiny
        return tiny_nemotron_config(**{**_NEMOTRON_MOE_KW, **overrides})
    if family == "nemotron_h_moe_latent":  # experts in a latent space, with biased projections
        return tiny_nemotron_config(**{**_NEMOTRON_MOE_KW, "moe_latent_size": 32, "mlp_bias": True, **overrides})
    if family == "granitemoehybrid_moe":  # Granite-4.0-H Tiny's layout, tiny
        return tiny_config("granitemoehybrid", **{"num_local_experts": 6, "intermediate_size": 16,
                                                  "num_experts_per_tok": 2, **overrides})
    if family == "mamba2":
        return tiny_mamba2_config(**overrides)
    if family == "kimi_linear":  # Kimi-Linear-48B-A3B's layout, tiny: KDA, MLA, a dense first FFN, then MoE
        return AutoConfig.for_model("kimi_linear", **{**_KIMI_KW, **overrides})
    kw = dict(_COMMON)
    if family == "bamba":
        kw.update(_MAMBA_KW, intermediate_size=64, num_hidden_layers=4, attn_layer_indices=[1])
    elif family == "granitemoehybrid":
        kw.update(_MAMBA_KW, shared_intermediate_size=64, num_local_experts=0, num_hidden_layers=4,
                  layer_types=["mamba", "attention", "mamba", "mamba"], position_embedding_type="rope",
                  embedding_multiplier=2.0, residual_multiplier=0.5, attention_multiplier=0.3, logits_scaling=2.0)
    elif family == "falcon_h1":
        kw.update({k: v for k, v in _MAMBA_KW.items() if k != "mamba_expand"}, intermediate_size=64,
                  num_hidden_layers=3, head_dim=8, mamba_d_ssm=96, mamba_rms_norm=True,
                  ssm_multipliers=[1.0, 0.5, 1.0, 1.0, 1.0], mlp_multipliers=[1.0, 0.8], embedding_multiplier=1.5)
    elif family == "zamba2":
        kw.update(intermediate_size=64, num_hidden_layers=5, n_mamba_heads=12, mamba_ngroups=3, mamba_d_state=8,
                  mamba_expand=2, chunk_size=8, num_key_value_heads=6, num_mem_blocks=1,
                  layers_block_type=["mamba", "hybrid", "mamba", "hybrid", "mamba"],
                  use_shared_attention_adapter=True, adapter_rank=4)
    elif family in ("llama", "mistral", "qwen2"):
        kw.update(intermediate_size=64, num_hidden_layers=3, head_dim=8, tie_word_embeddings=family == "llama")
    elif family in ("lfm2", "lfm2_ffn_auto"):  # LFM2's layout, tiny; the FFN width exact or auto-adjusted
        auto = family == "lfm2_ffn_auto"  # int(2 * 100 / 3) = 66, rounded up to 16: 80
        kw.update(intermediate_size=100 if auto else 64, block_auto_adjust_ff_dim=auto, block_multiple_of=16,
                  num_hidden_layers=4, layer_types=["conv", "full_attention", "conv", "full_attention"], conv_L_cache=3)
        family = "lfm2"
    elif family == "lfm2_moe":  # LFM2-8B-A1B's layout, tiny: 1 dense layer, then 8 experts, 2 per token
        kw.update(intermediate_size=64, moe_intermediate_size=16, num_experts=8, num_experts_per_tok=2,
                  num_dense_layers=1, num_hidden_layers=4, layer_types=["conv", "full_attention", "conv", "conv"])
    elif family == "lfm3":  # sandwich norms, gated attention with biases, sliding and full attention
        kw.update(intermediate_size=64, head_dim=8, num_hidden_layers=4, sliding_window=4, attention_bias=True,
                  layer_types=["conv", "sliding_attention", "full_attention", "conv"], conv_L_cache=4)
    elif family == "qwen3":
        kw.update(intermediate_size=64, num_hidden_layers=3, head_dim=8, sliding_window=8, use_sliding_window=True,
                  layer_types=["full_attention", "sliding_attention", "full_attention"])
    else:
        raise KeyError(family)
    kw.update(overrides)
    return AutoConfig.for_model(family, **kw)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty, offline Hugging Face Hub cache of the test's own (HF_HUB_CACHE and the constant read
    from it at import)."""
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    return cache


def _tree_digest(root) -> dict[str, str]:
    """Every file under `root` (relative name -> sha256 of its bytes)."""
    import hashlib
    from pathlib import Path

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file() or p.is_symlink()}


@pytest.fixture(scope="session")
def calibrated_checkpoint(tmp_path_factory):
    """A tiny random Nemotron-H with the shipped tokenizer (root/model), a small corpus (root/corpus.jsonl)
    and the model's scores from `hybridprune calibrate` (root/scores), made once for the session.

    Shared: tests only read it (copy what you change, write outputs under tmp_path); the session ends by
    checking that nothing under it was changed, added or removed."""
    from ckpt_helpers import invoke, save_checkpoint, small_corpus

    root = tmp_path_factory.mktemp("calibrated")
    save_checkpoint(root / "model")
    small_corpus(root / "corpus.jsonl")
    result = invoke("calibrate", "--model", root / "model", "--data", root / "corpus.jsonl", "--samples", "4",
                    "--seq-len", "32", "--depth-samples", "0", "--out", root / "scores")
    assert result.exit_code == 0, result.output
    before = _tree_digest(root)
    yield root
    assert _tree_digest(root) == before, "a test changed the shared calibrated checkpoint: copy it first"
