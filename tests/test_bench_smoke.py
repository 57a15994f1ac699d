"""The paper experiments in bench/ (written up in docs/results.md) must keep running: each script's
`--smoke` mode runs here on a tiny random model, and the hooks the scripts add beside the library
(B/C re-pairing, other aggregations, other Mamba score sources) are checked against direct computation."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = ["group_awareness", "score_source", "heads_vs_channels", "width_vs_depth", "scratch_vs_kd", "aggregation"]


def bench_module(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


@pytest.mark.parametrize("name", SCRIPTS)
def test_smoke_mode_writes_table_json_and_plot(name, tmp_path):
    bench_module(name).main(["--smoke", "--out", str(tmp_path), "--threads", str(torch.get_num_threads())])
    data = json.loads((tmp_path / f"{name}.json").read_text())
    assert data["settings"]["smoke"] is True and data["settings"]["runtime_s"] >= 0
    assert len(data["rows"]) > 1
    table = (tmp_path / f"{name}.md").read_text()
    assert table.startswith("|") or table.startswith("Pruned")
    assert "nan" not in table.lower()
    assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_bc_repair_copies_the_source_group_and_averages_mixed_groups():
    ga, ex = bench_module("group_awareness"), bench_module("experiment")
    import hybridprune as hp
    from hybridprune.pruning.apply import apply_selection

    t = ex.tiny_teacher()
    dims = hp.get_adapter(t).dims(t.config)  # 8 heads in 2 groups of 4, state 8
    i = dims.layers_of("mamba")[0]
    # new group 0 <- heads 4, 5 (both from old group 1); new group 1 <- heads 2, 6 (one from each)
    heads = {j: torch.tensor([4, 5, 2, 6]) if j == i else torch.tensor([0, 1, 4, 5]) for j in dims.layers_of("mamba")}
    pruned = apply_selection(t, ga.selection_for(dims, heads), dims.replace(mamba_num_heads=4))
    ga.repair_bc(pruned, t, dims, heads)
    src, dst = ga.mixer_of(t, i), ga.mixer_of(pruned, i)
    inner, new_inner, ds = 8 * 8, 4 * 8, 8
    b_old = [src.in_proj.weight[2 * inner + k * ds: 2 * inner + (k + 1) * ds] for k in range(2)]
    b_new = [dst.in_proj.weight[2 * new_inner + k * ds: 2 * new_inner + (k + 1) * ds] for k in range(2)]
    torch.testing.assert_close(b_new[0], b_old[1])
    torch.testing.assert_close(b_new[1], (b_old[0] + b_old[1]) / 2)
    c_old1 = src.conv1d.weight[inner + 2 * ds + ds: inner + 2 * ds + 2 * ds]  # C of old group 1 in conv1d
    torch.testing.assert_close(dst.conv1d.weight[new_inner + 2 * ds: new_inner + 3 * ds], c_old1)


GDN_SCRIPTS = ["group_awareness", "score_source", "heads_vs_channels"]


@pytest.mark.parametrize("name", GDN_SCRIPTS)
def test_gdn_smoke_mode_writes_table_json_and_plot(name, tmp_path):
    """`--teacher tiny-qwen3-5`: the same experiment on Gated DeltaNet value heads, files named gdn_*."""
    bench_module(name).main(["--smoke", "--teacher", "tiny-qwen3-5", "--out", str(tmp_path),
                             "--threads", str(torch.get_num_threads())])
    data = json.loads((tmp_path / f"gdn_{name}.json").read_text())
    assert data["settings"]["smoke"] is True and data["settings"]["teacher"] == "tiny-qwen3-5"
    table = (tmp_path / f"gdn_{name}.md").read_text()
    assert table.startswith("|") and "nan" not in table.lower()
    assert (tmp_path / f"gdn_{name}.png").stat().st_size > 1000
    assert not (tmp_path / f"{name}.json").exists()  # the Mamba2 results keep their own files
    arms = {r.get("arm", r.get("source")) for r in data["rows"]}
    expected = {"group_awareness": {"group-aware", "group-agnostic", "agnostic, key heads re-paired"},
                "score_source": {"value branch", "out_proj input"},
                "heads_vs_channels": {"value heads", "value-head channels", "key-head channels"}}[name]
    assert expected <= arms
    if name == "group_awareness":  # the agnostic arm really moves value heads under other key heads
        assert any(r.get("heads_in_foreign_group", 0) > 0 for r in data["rows"])


def test_group_awareness_merge_keeps_one_copy_of_seedless_rows_and_the_ablation(tmp_path):
    """One seed per process, then `--merge`: the unpruned and oracle rows appear once, and the head
    ablation and per-seed Spearman ρ of the runs reach the merged table."""
    ga = bench_module("group_awareness")
    common = ["--smoke", "--teacher", "tiny-qwen3-5", "--ablation-windows", "2", "--kd-targets", "",
              "--threads", str(torch.get_num_threads())]
    for seed in (0, 1):
        ga.main(common + ["--seed-list", str(seed), "--out", str(tmp_path / f"s{seed}")])
    ga.main(common + ["--out", str(tmp_path / "m"), "--merge",
                      *(str(tmp_path / f"s{seed}" / "gdn_group_awareness.json") for seed in (0, 1))])
    data = json.loads((tmp_path / "m" / "gdn_group_awareness.json").read_text())
    seedless = [(r["heads"], r["arm"]) for r in data["rows"] if r["seed"] is None]
    assert len(seedless) == len(set(seedless)) and ("oracle in-group (ablation)" in {a for _, a in seedless})
    assert set(data["settings"]["spearman_score_vs_ablation"]) == {"0", "1"} and data["settings"]["ablation"]
    assert "Spearman correlation" in (tmp_path / "m" / "gdn_group_awareness.md").read_text()

def test_key_repair_copies_the_source_key_head_and_averages_mixed_ones():
    ga, ex = bench_module("group_awareness"), bench_module("experiment")
    import hybridprune as hp
    from hybridprune.pruning.apply import apply_selection

    t = ex.tiny_gdn_teacher()
    dims = hp.get_adapter(t).dims(t.config)  # 8 value heads under 2 key heads of 8 channels
    i = dims.layers_of("gdn")[0]
    # new key head 0 <- value heads 4, 5 (both under old key head 1); new key head 1 <- 2, 6 (one from each)
    heads = {j: torch.tensor([4, 5, 2, 6]) if j == i else torch.tensor([0, 1, 4, 5]) for j in dims.layers_of("gdn")}
    pruned = apply_selection(t, ga.selection_for(dims, heads), dims.replace(linear_num_value_heads=4))
    src, dst = ga.mixer_of(t, i), ga.mixer_of(pruned, i)
    # before the repair the value rows follow their heads and the key rows stay where they were
    v_old = src.in_proj_qkv.weight[32:].reshape(8, 8, -1)
    torch.testing.assert_close(dst.in_proj_qkv.weight[32:].reshape(4, 8, -1), v_old[[4, 5, 2, 6]])
    ga.repair_keys(pruned, t, dims, heads)
    for base in (0, 16):  # q rows, then k rows
        for name in ("in_proj_qkv", "conv1d"):
            old = [getattr(src, name).weight[base + g * 8: base + (g + 1) * 8] for g in range(2)]
            new = [getattr(dst, name).weight[base + g * 8: base + (g + 1) * 8] for g in range(2)]
            torch.testing.assert_close(new[0], old[1])
            torch.testing.assert_close(new[1], (old[0] + old[1]) / 2)


def test_gdn_score_sources_swap_the_table_the_selection_reads():
    src = bench_module("score_source")
    from hybridprune.importance.scores import GDN_IMPORTANCE, Scores

    scores = Scores(gdn={0: torch.ones(8, 4)}, gdn_value={0: torch.arange(32.0).view(8, 4)})
    by_source = src.gdn_variants(scores)
    assert set(src.GDN_SOURCES.values()) == set(GDN_IMPORTANCE.values())
    torch.testing.assert_close(by_source["value branch"].gdn[0], scores.gdn_value[0])
    torch.testing.assert_close(by_source["out_proj input"].gdn[0], scores.gdn[0])
    torch.testing.assert_close(scores.gdn[0], torch.ones(8, 4))  # the original is untouched


@pytest.mark.parametrize("name", ["mean / mean", "L2 / L2", "max / max", "L2 / mean"])
def test_swapped_aggregations_match_a_direct_computation(name):
    agg, ex = bench_module("aggregation"), bench_module("experiment")
    import hybridprune as hp

    t = ex.tiny_teacher()
    ids = torch.randint(3, 96, (5, 12), generator=torch.Generator().manual_seed(0))
    block = hp.get_adapter(t).blocks(t)[1]  # an MLP block: its score is the down projection's input
    seen = []
    h = block.units[0].module.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().abs()))
    with agg.aggregation(name):
        scores = hp.calibrate(t, ids, batch_size=2, progress=False)
    h.remove()
    a = torch.cat(seen)  # [samples, tokens, neurons]
    per_sample = {"mean": a.mean(dim=1), "L2": a.pow(2).sum(dim=1).sqrt(), "max": a.amax(dim=1)}[name.split(" / ")[1]]
    expected = {"mean": per_sample.mean(dim=0), "L2": per_sample.pow(2).sum(dim=0).sqrt(),
                "max": per_sample.amax(dim=0)}[name.split(" / ")[0]]
    torch.testing.assert_close(scores.ffn[1], expected, rtol=1e-5, atol=1e-6)


def test_z_and_out_proj_scores_match_a_direct_computation():
    src, ex, ga = bench_module("score_source"), bench_module("experiment"), bench_module("group_awareness")
    import hybridprune as hp

    t = ex.tiny_teacher()
    dims = hp.get_adapter(t).dims(t.config)
    ids = torch.randint(3, 96, (4, 10), generator=torch.Generator().manual_seed(1))
    i = dims.layers_of("mamba")[0]
    mixer = ga.mixer_of(t, i)
    got = []
    h = mixer.out_proj.register_forward_pre_hook(lambda m, a: got.append(a[0].detach()))
    out = src.mamba_source_scores(t, ids, dims, batch_size=3)
    h.remove()
    a = torch.cat(got).abs().mean(dim=1)  # mean |a| per sample
    torch.testing.assert_close(out["out_proj input"][i].flatten(), a.pow(2).sum(dim=0).sqrt(), rtol=1e-5, atol=1e-6)
    assert out["z"][i].shape == (dims.mamba_num_heads, dims.mamba_head_dim)


def test_teacher_cost_smoke(capsys):
    bench_module("teacher_cost").main(["--smoke", "--steps", "2", "--threads", str(torch.get_num_threads())])
    out = json.loads(capsys.readouterr().out)
    assert out["params"] > 0 and out["tokens_per_s"] > 0


@pytest.mark.parametrize("name", ["score_source", "heads_vs_channels"])
def test_gdn_merge_of_one_seed_per_process_runs(name, tmp_path):
    """`--seed-list N --out DIR` per process, then `--merge`: every seed's rows, the teacher once, and
    (heads_vs_channels) the speed table of the run that measured it."""
    mod = bench_module(name)
    common = ["--smoke", "--teacher", "tiny-qwen3-5", "--threads", str(torch.get_num_threads())]
    for seed in (0, 1):
        extra = ["--no-speed"] if name == "heads_vs_channels" and seed else []
        mod.main(common + extra + ["--seed-list", str(seed), "--out", str(tmp_path / f"s{seed}")])
    mod.main(common + ["--out", str(tmp_path / "m"), "--merge",
                       *(str(tmp_path / f"s{seed}" / f"gdn_{name}.json") for seed in (0, 1))])
    rows = json.loads((tmp_path / "m" / f"gdn_{name}.json").read_text())["rows"]
    assert sum(r["seed"] is None for r in rows) == 1 and {r["seed"] for r in rows} == {None, 0, 1}
    table = (tmp_path / "m" / f"gdn_{name}.md").read_text()
    assert "nan" not in table.lower() and " ± " in table
    if name == "heads_vs_channels":
        assert "Generation speed" in table
        assert "Generation speed" not in (tmp_path / "s1" / f"gdn_{name}.md").read_text()


def test_streaming_prune_bench_runs_and_imports_neither_torch_nor_transformers(tmp_path, capsys):
    """bench/streaming_prune_speed.py at 1/32 of its widths, one pair: it writes, prunes and reports the
    phases, and the prune's process imported neither torch nor transformers (nothing is timed here)."""
    out = bench_module("streaming_prune_speed").main(["--scale", "32", "--pairs", "1", "--dir", str(tmp_path)])
    assert out["prune_imported"] == [] and out["prune_median_s"] > 0
    assert set(out["prune_phases_median_s"]) >= {"import", "planning", "tensor work", "fixed"}
