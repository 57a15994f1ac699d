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

from families import FAMILIES, tiny_config  # noqa: E402,F401  (tiny_config: for the tests importing it from here)


def tiny_nemotron_config(**overrides):
    return FAMILIES["nemotron_h"].tiny_config(**overrides)


def tiny_mamba2_config(**overrides):
    return FAMILIES["mamba2"].tiny_config(**overrides)


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


def sliced(model, selection, **changes):
    """`model` cut to `selection` (`slice_state_dict`) and loaded strictly into a model built from the config
    that `changes` to its dims give (the same config when none): the slicing rule alone, without `prune`."""
    from hybridprune.architectures import get_adapter
    from hybridprune.pruning.slicing import slice_state_dict

    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    config = adapter.make_config(model.config, dims.replace(**changes)) if changes else model.config
    out = build(config, seed=7)
    out.load_state_dict(slice_state_dict(model.state_dict(), adapter, dims, selection), strict=True)
    return out


def measured_cache_bytes(model, batch: int, seq_len: int) -> dict[str, int]:
    """The bytes a real forward's cache holds (attention keys and values, conv and recurrent states): the
    independent truth for the analytic cache size."""
    ids = torch.randint(3, 90, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).cache
    kv = conv = ssm = 0
    for layer in cache.layers:
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                kv += t.numel() * t.element_size()
        for t in (getattr(layer, "conv_states", None) or {}).values():
            if t is not None:
                conv += t.numel() * t.element_size()
        for t in (getattr(layer, "recurrent_states", None) or {}).values():
            if t is not None:
                ssm += t.numel() * t.element_size()
    return {"kv": kv, "conv": conv, "ssm": ssm}


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
