"""MoE hybrids: counts by hand, expert scores against a direct computation, group-aware expert
selection, the active-parameter budget of the search, and the command line. The shared battery
(tests/test_families.py) runs permutation, removal and reload proofs on the same tiny MoE models."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from conftest import build, tiny_config
from hybridprune import calibrate, prune
from hybridprune.architectures import Unrepresentable, get_adapter
from hybridprune.archsearch import Budget, SearchConfig, SearchSpace, build_grid, search
from hybridprune.cli import app
from hybridprune.importance.scores import Scores
from hybridprune.pruning.plan import Plan, PlanError
from hybridprune.pruning.selection import select


@pytest.fixture(scope="module")
def moe():
    return build(tiny_config("nemotron_h_moe"))


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, 96, (4, 12), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def moe_scores(moe, ids):
    return calibrate(moe, ids, progress=False, depth_samples=2)


def test_total_and_active_parameters_equal_a_hand_count(moe):
    """hidden 48, vocab 96; layers mamba, moe, attention, moe, mamba, mlp; 8 experts of 16, top-2,
    shared expert 24."""
    embeddings = 2 * 96 * 48 + 48  # embedding, LM head, final norm
    norms = 6 * 48
    mamba = (2 * 96 + 2 * 24 + 12) * 48 + (96 + 48) * 4 + (96 + 48) + 3 * 12 + 96 + 96 * 48  # 17,556
    attention = (64 + 16 + 16) * 48 + 64 * 48  # 7,680
    mlp = 2 * 64 * 48  # 6,144
    expert = 2 * 16 * 48  # 1,536 (up + down)
    moe_layer = 8 * 48 + 8 * expert + 2 * 24 * 48  # router, experts, shared expert: 14,976
    total = embeddings + norms + 2 * mamba + attention + mlp + 2 * moe_layer
    assert total == 88_440
    adapter = get_adapter(moe)
    dims = adapter.dims(moe.config)
    assert adapter.num_parameters(dims) == total == sum(p.numel() for p in moe.parameters())
    active = total - 2 * (8 - 2) * expert  # each token skips 6 of 8 experts in both MoE layers
    assert active == 70_008
    assert adapter.num_active_parameters(dims) == active
    pruned = prune(moe, calibrate(moe, torch.randint(3, 96, (2, 8)), progress=False), "num_moe_experts=4")
    new = adapter.dims(pruned.config)
    assert adapter.num_active_parameters(new) == active - 2 * 4 * 48  # two experts per token; fewer router rows
    assert adapter.num_parameters(new) == total - 2 * 4 * (expert + 48)  # 4 experts and router rows fewer


def test_dense_models_have_every_parameter_active():
    model = build(tiny_config("nemotron_h"))
    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    assert adapter.num_active_parameters(dims) == adapter.num_parameters(dims)


def _routing(model, ids):
    """(expert inputs, top-k indices, top-k weights) of every MoE block, recorded at the experts module."""
    seen = []
    handles = [layer.mixer.experts.register_forward_hook(lambda m, args, out: seen.append(args))
               for layer in model.model.layers if hasattr(layer.mixer, "experts")]
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    for h in handles:
        h.remove()
    return seen


def test_expert_scores_match_a_direct_computation(moe, ids, moe_scores):
    """Output norm, router-weighted norm and frequency of each expert, and the expert-neuron statistic,
    recomputed directly from the routing and the expert weights (relu² experts)."""
    layers = [i for i, layer in enumerate(moe.model.layers) if hasattr(layer.mixer, "experts")]
    for i, (x, index, weights) in zip(layers, _routing(moe, ids)):
        experts = moe.model.layers[i].mixer.experts
        norm_sum, weighted, count = torch.zeros(8), torch.zeros(8), torch.zeros(8)
        per_sample = torch.zeros(4, 16)
        pairs = torch.zeros(4)
        for token in range(x.shape[0]):
            for slot in range(2):
                e = int(index[token, slot])
                a = F.relu(x[token] @ experts.up_proj[e].T) ** 2
                out = a @ experts.down_proj[e].T
                norm_sum[e] += out.norm()
                weighted[e] += weights[token, slot] * out.norm()
                count[e] += 1
                per_sample[token // 12] += a.abs()
                pairs[token // 12] += 1
        torch.testing.assert_close(moe_scores.moe_experts[i], norm_sum / count.clamp(min=1), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(moe_scores.moe_router_weighted[i], weighted / count.clamp(min=1),
                                   rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(moe_scores.moe_frequency[i], count / count.sum())
        expected_ffn = (per_sample / pairs[:, None]).pow(2).sum(dim=0).sqrt()
        torch.testing.assert_close(moe_scores.moe_ffn[i], expected_ffn, rtol=1e-4, atol=1e-6)
        assert moe_scores.moe_shared_ffn[i].shape == (24,)


def test_experts_are_ranked_inside_their_routing_group(moe, moe_scores):
    """Group 0 (experts 0-3) scores far above group 1 (4-7); each group still keeps the same count."""
    adapter = get_adapter(moe)
    dims = adapter.dims(moe.config)
    scores = Scores(**{k: getattr(moe_scores, k) for k in ("mamba", "ffn", "attention", "moe_ffn", "moe_shared_ffn",
                                                           "moe_router_weighted", "moe_frequency", "hidden")})
    scores.moe_experts = {i: torch.tensor([9.0, 1.0, 8.0, 7.0, 0.1, 0.4, 0.2, 0.3]) for i in (1, 3)}
    sel = select(scores, Plan(num_moe_experts=4), dims)
    assert sel.moe_experts[1].tolist() == [0, 2, 5, 7]  # the best two of each group
    with pytest.raises(PlanError, match="unknown expert importance 'loudest'"):
        select(scores, Plan(num_moe_experts=4), dims, expert_importance="loudest")


def test_each_expert_importance_picks_from_its_own_table(moe, moe_scores):
    dims = get_adapter(moe).dims(moe.config)
    for name, table in (("output_norm", "moe_experts"), ("router_weighted", "moe_router_weighted"),
                        ("frequency", "moe_frequency")):
        scores = Scores(**{k: getattr(moe_scores, k) for k in (
            "mamba", "ffn", "attention", "moe_ffn", "moe_shared_ffn", "moe_experts", "moe_router_weighted",
            "moe_frequency", "hidden")})
        getattr(scores, table)[1] = torch.tensor([0.0, 5.0, 0.0, 4.0, 3.0, 0.0, 2.0, 0.0])
        assert select(scores, Plan(num_moe_experts=4), dims, expert_importance=name).moe_experts[1].tolist() == [1, 3, 4, 6]


def test_a_pruned_moe_model_records_its_experts_and_active_parameters(moe, moe_scores):
    pruned = prune(moe, moe_scores, "num_moe_experts=6,moe_ffn_hidden_size=8", expert_importance="router_weighted")
    info = pruned.hybridprune_info
    assert info["expert_importance"] == "router_weighted"
    assert sorted(info["kept_experts"]) == ["1", "3"] and all(len(v) == 6 for v in info["kept_experts"].values())
    assert info["active_parameters"]["after"] < info["active_parameters"]["before"]
    assert pruned.config.n_routed_experts == 6 and pruned.config.moe_intermediate_size == 8
    assert pruned.model.layers[1].mixer.gate.e_score_correction_bias.dtype == torch.float32


def test_expert_widths_must_stay_aligned_for_grouped_matmuls(moe, moe_scores):
    with pytest.raises(Unrepresentable, match="hidden_size=44 is not a multiple of 8.*16-byte aligned"):
        prune(moe, moe_scores, "hidden_size=44")


def test_search_space_has_the_moe_axes_and_respects_active_params(moe, ids, moe_scores):
    adapter = get_adapter(moe)
    dims = adapter.dims(moe.config)
    space = SearchSpace(max_width_pruning=0.5, max_depth_pruning=0.0)
    _, choices = build_grid(dims, space, moe_scores)
    assert choices["num_moe_experts"] == [8, 6, 4]  # multiples of 2 groups; >= 2 per token from 1 group
    assert all(v % 8 == 0 for v in choices["moe_ffn_hidden_size"] + choices["hidden_size"])
    assert "moe_shared_expert_intermediate_size" in choices
    limit = int(0.8 * adapter.num_active_parameters(dims))
    cfg = SearchConfig(space=space, band=None, measure_speed=False, progress=False, top_k=1, max_candidates=3)
    result = search(moe, moe_scores, ids, Budget(active_params=limit), cfg)
    for c in result.candidates:
        assert c["active_params"] <= limit
    best = prune(moe, moe_scores, result.best)
    assert adapter.num_active_parameters(adapter.dims(best.config)) <= limit


def test_granite_moe_plan_fields_follow_its_config(ids):
    model = build(tiny_config("granitemoehybrid_moe"))
    scores = calibrate(model, ids, progress=False)
    assert sorted(scores.moe_experts) == [0, 1, 2, 3] and not scores.moe_shared_ffn  # shared MLP is the FFN unit
    pruned = prune(model, scores, "num_moe_experts=4,moe_ffn_hidden_size=8,ffn_hidden_size=32")
    assert (pruned.config.num_local_experts, pruned.config.intermediate_size,
            pruned.config.shared_intermediate_size) == (4, 8, 32)
    assert pruned.model.layers[0].block_sparse_moe.router.weight.shape == (4, 48)


def test_cli_calibrates_searches_with_active_params_and_prunes_a_moe_checkpoint(tmp_path):
    from hybridprune.data import tokenizer_path
    from hybridprune.pruning.export import copy_tokenizer_files

    runner = CliRunner()
    build(tiny_config("nemotron_h_moe", vocab_size=4096)).save_pretrained(tmp_path / "model")
    copy_tokenizer_files(tokenizer_path(), tmp_path / "model")
    result = runner.invoke(app, ["calibrate", "--model", str(tmp_path / "model"), "--data", "shakespeare",
                                 "--samples", "4", "--seq-len", "16", "--batch-size", "2",
                                 "--out", str(tmp_path / "scores")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["search", "--model", str(tmp_path / "model"), "--data", "shakespeare",
                                 "--active-params", "0.9x", "--scores", str(tmp_path / "scores"),
                                 "--eval-samples", "2", "--eval-seq-len", "16", "--max-candidates", "2",
                                 "--top-k", "1", "--no-speed", "--skip", "mamba_head_dim",
                                 "--max-depth-pruning", "0", "--out", str(tmp_path / "search")])
    assert result.exit_code == 0, result.output
    best = json.loads((tmp_path / "search" / "summary.json").read_text())["best"]
    result = runner.invoke(app, ["prune", "--model", str(tmp_path / "model"), "--scores", str(tmp_path / "scores"),
                                 "--plan", "num_moe_experts=4,moe_ffn_hidden_size=8", "--in-memory",
                                 "--expert-importance", "router_weighted", "--out", str(tmp_path / "pruned")])
    assert result.exit_code == 0, result.output
    assert "active parameters" in result.output
    info = json.loads((tmp_path / "pruned" / "hybridprune.json").read_text())
    assert info["expert_importance"] == "router_weighted"
    assert best  # the search decided on a plan


def _nano_config():
    """Nemotron 3 Nano 30B-A3B's shape (52 layers: 23 Mamba2, 23 MoE, 6 attention; 128 experts of 1856,
    top-6, a shared expert of 3712), in the Hub's legacy pattern-string form."""
    from transformers import AutoConfig

    return AutoConfig.for_model(
        "nemotron_h", hybrid_override_pattern="MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME",
        vocab_size=131072, hidden_size=2688, mamba_num_heads=64, mamba_head_dim=64, ssm_state_size=128, n_groups=8,
        num_attention_heads=32, num_key_value_heads=2, head_dim=128, intermediate_size=1856, n_routed_experts=128,
        moe_intermediate_size=1856, moe_shared_expert_intermediate_size=3712, num_experts_per_tok=6, n_group=1,
        topk_group=1)


def test_counts_at_nemotron_3_nano_scale_agree_with_the_published_sizes():
    """NVIDIA publishes 31.6B total / 3.5B active for Nemotron 3 Nano, and 22B / A3.0B for its Minitron
    tutorial's pruned model (104 experts, hidden 2304). The analytic counts, from the configs alone:"""
    adapter = get_adapter(_nano_config())
    dims = adapter.dims(_nano_config())
    assert adapter.num_parameters(dims) == 31_577_937_344
    assert adapter.num_active_parameters(dims) == 3_580_073_408
    plan = Plan.parse("num_moe_experts=104,moe_ffn_hidden_size=1856,hidden_size=2304")
    plan.validate(dims)
    pruned = plan.target_dims(dims, list(range(dims.num_layers)))
    adapter.check_representable(pruned, original=dims)
    assert adapter.num_parameters(pruned) == 22_344_695_360
    assert adapter.num_active_parameters(pruned) == 3_067_477_568
    assert adapter.make_config(_nano_config(), pruned).n_routed_experts == 104


@pytest.mark.slow
def test_the_expert_selection_benchmark_runs(tmp_path):
    """bench/expert_selection.py --smoke: a tiny random MoE hybrid, a few steps, every method."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "expert_selection.py"
    spec = importlib.util.spec_from_file_location("expert_selection", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--smoke", "--out", str(tmp_path / "r.json")])
    assert [row["removed"] for row in result["rows"]] == [0.25, 0.5]
    for row in result["rows"]:
        for method in ("output_norm", "router_weighted", "frequency"):
            assert torch.isfinite(torch.tensor(row[method]))
        assert row["random"]["n"] == 2
    assert json.loads((tmp_path / "r.json").read_text())["setup"]["experts"] == 8


@pytest.mark.parametrize("command,flags,words", [
    ("search", ["--active-params", "0.5x", "--params", "0.8x"], "--active-params limits the parameters one token uses"),
    ("prune", ["--expert-importance", "frequency", "--plan", "ffn_hidden_size=32"], "--expert-importance ranks routed"),
])
def test_moe_only_options_are_refused_on_a_dense_model(tmp_path, command, flags, words):
    """Not silently ignored, and not silently the whole budget (a dense model's active count is its total)."""
    from hybridprune.data import tokenizer_path
    from hybridprune.pruning.export import copy_tokenizer_files

    build(tiny_config("nemotron_h", vocab_size=4096)).save_pretrained(tmp_path / "model")
    copy_tokenizer_files(tokenizer_path(), tmp_path / "model")
    scores = calibrate(build(tiny_config("nemotron_h", vocab_size=4096)), torch.randint(3, 96, (2, 8)), progress=False)
    scores.save(tmp_path / "scores")
    extra = ["--data", "shakespeare"] if command == "search" else []
    result = CliRunner().invoke(app, [command, "--model", str(tmp_path / "model"), "--scores", str(tmp_path / "scores"),
                                      *extra, *flags, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_granite_moe_lists_only_hidden_sizes_its_experts_can_take(ids):
    """The mamba_expand refusal lists hidden sizes; on a MoE model only multiples of 8 are valid."""
    model = build(tiny_config("granitemoehybrid_moe"))
    with pytest.raises(Unrepresentable, match=r"divisors of 96 \(multiples of 8: MoE experts\): \[8, 16, 24, 32, 48\]"):
        prune(model, calibrate(model, ids, progress=False), "hidden_size=40")


def test_eval_reports_active_parameters_of_moe_models(moe, ids):
    from hybridprune.evaluate.compare import compare_models
    from hybridprune.evaluate.tables import quality_table

    dense = build(tiny_config("nemotron_h"))
    evaluation = compare_models({"moe": moe, "dense": dense}, samples=ids)
    rows = {r["name"]: r for r in evaluation["models"]}
    assert rows["moe"]["active_parameters"] == 70_008 and "active_parameters" not in rows["dense"]
    columns, cells = quality_table(evaluation)
    assert columns[:3] == ["model", "parameters", "active"]
    assert cells[0][:3] == ["moe", "88,440", "70,008"] and cells[1][2] == cells[1][1]
