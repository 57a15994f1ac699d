"""prune() end to end on tiny models: parameter counts, export/reload, generation, bad plans."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import hybridprune as hp
from conftest import build, tiny_mamba2_config, tiny_nemotron_config
from hybridprune.architectures import Unrepresentable, UnsupportedArchitecture, get_adapter
from hybridprune.pruning.plan import PlanError


@pytest.fixture
def scores(nemotron, tokens):
    s = hp.calibrate(nemotron, tokens, batch_size=3, progress=False)
    s.depth_kld = hp.depth_importance(nemotron, tokens[:2], progress=False)
    return s


PLANS = [
    hp.Plan(),
    hp.Plan(mamba_num_heads=6),
    hp.Plan(mamba_head_dim=5, ffn_hidden_size=40),
    hp.Plan(hidden_size=32, num_attention_heads=4),
    hp.Plan(num_layers=4),
    hp.Plan(hidden_size=40, ffn_hidden_size=24, mamba_num_heads=9, mamba_head_dim=6, num_attention_heads=6,
            drop_layers=(3,)),
]


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("plan", PLANS, ids=str)
def test_analytic_parameter_count_matches_built_model(nemotron, scores, plan):
    adapter = get_adapter(nemotron)
    assert adapter.num_parameters(adapter.dims(nemotron.config)) == n_params(nemotron)
    pruned = hp.prune(nemotron, scores, plan)
    assert adapter.num_parameters(adapter.dims(pruned.config)) == n_params(pruned)
    assert pruned.hybridprune_info["parameters"]["after"] == n_params(pruned)


@pytest.mark.parametrize("tied", [False, True])
def test_mamba2_parameter_count_and_pruning(tied, tokens):
    model = build(tiny_mamba2_config(tie_word_embeddings=tied))
    adapter = get_adapter(model)
    assert adapter.num_parameters(adapter.dims(model.config)) == n_params(model)
    scores = hp.calibrate(model, tokens, progress=False)
    pruned = hp.prune(model, scores, hp.Plan(hidden_size=24, mamba_num_heads=6, num_layers=2))
    assert (pruned.config.hidden_size, pruned.config.expand, pruned.config.num_heads) == (24, 2, 6)
    assert adapter.num_parameters(adapter.dims(pruned.config)) == n_params(pruned)


def test_mamba2_coupling_is_refused_with_representable_targets(mamba2, tokens):
    scores = hp.calibrate(mamba2, tokens, progress=False)
    with pytest.raises(Unrepresentable, match="Representable targets"):
        hp.prune(mamba2, scores, hp.Plan(hidden_size=40))  # 12 * 8 = 96 is not a multiple of 40
    ok = hp.prune(mamba2, scores, hp.Plan(hidden_size=32))  # 96 = 32 * 3
    assert ok.config.expand == 3 and ok.config.hidden_size == 32


def test_export_reloads_in_plain_transformers_with_same_logits(nemotron, scores, tokens, tmp_path):
    pruned = hp.prune(nemotron, scores, PLANS[-1])
    out = hp.export(pruned, tmp_path / "pruned", source="tiny")
    info = json.loads((out / "hybridprune.json").read_text())
    assert info["plan"]["mamba_num_heads"] == 9 and info["source"] == "tiny"
    with torch.no_grad():
        expected = pruned(input_ids=tokens, use_cache=False).logits
    torch.save(tokens, tmp_path / "tokens.pt")
    code = textwrap.dedent(f"""
        import sys, torch
        from transformers import AutoModelForCausalLM
        m = AutoModelForCausalLM.from_pretrained({str(out)!r}).eval()
        ids = torch.load({str(tmp_path / 'tokens.pt')!r}, weights_only=True)
        with torch.no_grad():
            torch.save(m(input_ids=ids, use_cache=False).logits, {str(tmp_path / 'logits.pt')!r})
        assert not any(name.startswith('hybridprune') for name in sys.modules)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    reloaded = torch.load(tmp_path / "logits.pt", weights_only=True)
    torch.testing.assert_close(reloaded, expected, atol=1e-6, rtol=1e-6)
    assert not list(tmp_path.glob(".pruned.tmp-*"))


@pytest.mark.parametrize("model_name", ["nemotron", "mamba2"])
def test_generation_with_cache_equals_without_cache(model_name, request, tokens):
    model = request.getfixturevalue(model_name)
    scores = hp.calibrate(model, tokens, progress=False)
    plan = hp.Plan(mamba_num_heads=6, hidden_size=24) if model_name == "mamba2" else PLANS[-1]
    pruned = hp.prune(model, scores, plan)
    prompt = tokens[:2, :7]
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = pruned.generate(prompt, use_cache=True, **kw)
        uncached = pruned.generate(prompt, use_cache=False, **kw)
    assert torch.equal(cached, uncached)
    assert cached.shape[1] == prompt.shape[1] + 12


def test_prune_leaves_the_original_untouched(nemotron, scores, tokens):
    before = {k: v.clone() for k, v in nemotron.state_dict().items()}
    hp.prune(nemotron, scores, PLANS[-1])
    assert all(torch.equal(before[k], v) for k, v in nemotron.state_dict().items())


@pytest.mark.parametrize(
    "plan, message",
    [
        ({"mamba_num_heads": 8}, "not a multiple of n_groups=3.*Valid values: \\[3, 6, 9, 12\\]"),
        ({"num_attention_heads": 3}, "not a multiple of num_key_value_heads=2"),
        ({"ffn_hidden_size": 65}, "larger than the current size 64"),
        ({"hidden_size": 0}, "must be positive"),
        ({"num_layers": 0}, "must be positive"),
        ({"mamba_heads": 6}, "unknown plan field.*valid fields"),
        ({"drop_layers": [9]}, "out of range"),
        ({"num_layers": 3, "drop_layers": [1]}, "not both"),
    ],
)
def test_impossible_plans_are_refused_clearly(nemotron, scores, plan, message):
    with pytest.raises(PlanError, match=message):
        hp.prune(nemotron, scores, plan)


def test_plan_from_string_and_files(tmp_path):
    plan = hp.Plan.from_string("hidden_size=32, mamba_num_heads=6,drop_layers=1+4")
    assert plan == hp.Plan(hidden_size=32, mamba_num_heads=6, drop_layers=(1, 4))
    (tmp_path / "p.yaml").write_text("hidden_size: 32\nmamba_num_heads: 6\ndrop_layers: [1, 4]\n")
    (tmp_path / "p.json").write_text(json.dumps(plan.to_dict()))
    assert hp.Plan.parse(tmp_path / "p.yaml") == plan == hp.Plan.parse(str(tmp_path / "p.json"))
    assert hp.Plan.from_string(str(plan)) == plan
    with pytest.raises(PlanError, match="integer"):
        hp.Plan.from_string("hidden_size=3.5")


def test_unsupported_architecture_is_named():
    from transformers import AutoConfig

    config = AutoConfig.for_model("gpt2", n_layer=1, n_embd=16, n_head=2, vocab_size=32)
    with pytest.raises(UnsupportedArchitecture, match="'gpt2' is not supported.*mamba2.*nemotron_h"):
        get_adapter(config)


def test_moe_fields_on_a_dense_model_are_refused_clearly(nemotron, scores):
    with pytest.raises(PlanError, match="num_moe_experts: this architecture has no moe blocks"):
        hp.prune(nemotron, scores, "num_moe_experts=4")


def test_removing_every_attention_block_of_nemotron_h_is_refused(nemotron, scores):
    """transformers' NemotronH cache cannot run without an attention block."""
    with pytest.raises(Unrepresentable, match="removes every attention block"):
        hp.prune(nemotron, scores, hp.Plan(drop_layers=(2,)))
    scores.depth_kld = torch.tensor([5.0, 4.0, 0.0, 3.0, 2.0, 1.0])
    pruned = hp.prune(nemotron, scores, hp.Plan(num_layers=3))
    assert pruned.config.layers_block_type == ["linear_attention", "mlp", "full_attention"]
    pruned(input_ids=torch.tensor([[3, 4, 5]]))  # default use_cache=True runs


class _Two(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(3, 2)
        self.b = torch.nn.Linear(2, 2, bias=False)


@pytest.mark.parametrize("chunk_bytes", [0, 1 << 30])
def test_chunked_load_is_as_strict_as_load_state_dict(chunk_bytes):
    """`load_in_chunks` refuses what `load_state_dict(strict=True)` refuses, whatever the chunk size:
    a key of the model left unfilled, a key the model does not have, a tensor of the wrong shape."""
    from hybridprune.pruning.apply import load_in_chunks

    source = _Two().state_dict()
    target = _Two()
    load_in_chunks(target, source.items(), chunk_bytes)
    for key, value in source.items():
        assert torch.equal(target.state_dict()[key], value)
    with pytest.raises(RuntimeError, match=r"missing keys \['b.weight'\]"):
        load_in_chunks(_Two(), [(k, v) for k, v in source.items() if k != "b.weight"], chunk_bytes)
    with pytest.raises(RuntimeError, match=r"unexpected keys \['c.weight'\]"):
        load_in_chunks(_Two(), [*source.items(), ("c.weight", torch.zeros(2, 2))], chunk_bytes)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_in_chunks(_Two(), [(k, v if k != "a.bias" else torch.zeros(3)) for k, v in source.items()], chunk_bytes)
