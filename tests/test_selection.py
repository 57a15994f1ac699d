"""Group-aware selection against hand-built scores."""

from __future__ import annotations

import pytest
import torch

from hybridprune.architectures import Dims
from hybridprune.importance.scores import Scores
from hybridprune.pruning.plan import Plan, PlanError
from hybridprune.pruning.selection import select, select_attention, select_mamba, top_k_per_group


def test_mamba_keeps_the_top_heads_of_each_group_even_when_one_group_dominates():
    # 8 heads, 2 groups. Group 0 holds the four best heads overall; a global top-4 would take
    # all of them. Group-aware selection keeps the best 2 of each group instead.
    head_strength = torch.tensor([9.0, 8.0, 7.0, 6.0, 1.0, 3.0, 2.0, 0.5])
    s = head_strength[:, None] * torch.ones(8, 4)
    heads, channels = select_mamba(s, n_groups=2, heads=4, head_dim=4)
    assert heads.tolist() == [0, 1, 5, 6]
    assert channels.tolist() == [0, 1, 2, 3]


def test_mamba_heads_never_leave_their_group():
    torch.manual_seed(0)
    for _ in range(50):
        groups = int(torch.randint(1, 5, ()))
        per_group = int(torch.randint(1, 6, ()))
        keep = int(torch.randint(1, per_group + 1, ()))
        s = torch.rand(groups * per_group, 6)
        heads, _ = select_mamba(s, n_groups=groups, heads=groups * keep, head_dim=3)
        assert len(heads) == groups * keep
        for g in range(groups):
            chunk = heads[g * keep:(g + 1) * keep]
            assert all(g * per_group <= h < (g + 1) * per_group for h in chunk.tolist())
            best = torch.argsort(s[g * per_group:(g + 1) * per_group][:, _].norm(dim=1), descending=True)[:keep]
            assert sorted((best + g * per_group).tolist()) == chunk.tolist()


def test_mamba_channels_share_one_ranking_and_heads_are_scored_on_kept_channels():
    # Channel 3 is huge in head 0 only; channel ranking is the L2 over heads.
    s = torch.ones(4, 4)
    s[0, 3] = 10.0
    s[2, 0] = 0.0
    s[3, 0] = 0.0
    heads, channels = select_mamba(s, n_groups=2, heads=2, head_dim=2)
    assert channels.tolist() == [1, 3]  # channel 3 first; 1 and 2 tie and the lower index wins
    # head 0 wins group 0 (channel 3); in group 1 heads 2 and 3 tie on the kept channels -> lower index
    assert heads.tolist() == [0, 2]


def test_attention_heads_ranked_inside_kv_groups():
    s = torch.tensor([1.0, 2.0, 3.0, 4.0, 8.0, 7.0, 0.0, 0.1])[:, None].repeat(1, 4)
    assert select_attention(s, kv_heads=2, heads=4).tolist() == [2, 3, 4, 5]


def test_top_k_per_group_rejects_uneven_groups():
    with pytest.raises(PlanError):
        top_k_per_group(torch.rand(7), 2, 1)


def _dims():
    return Dims(block_kinds=("mamba", "mlp", "attention", "mlp"), vocab_size=10, hidden_size=6,
                ffn_hidden_size=5, mamba_num_heads=4, mamba_head_dim=2, mamba_n_groups=2, mamba_state_size=2,
                mamba_conv_kernel=4, num_attention_heads=4, num_key_value_heads=2, attention_head_dim=2)


def _scores():
    return Scores(
        mamba={0: torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [0.5, 0.5]])},
        ffn={1: torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0]), 3: torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])},
        attention={2: torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])},
        hidden=torch.tensor([6.0, 1.0, 5.0, 2.0, 4.0, 3.0]),
        depth_kld=torch.tensor([4.0, 0.1, 3.0, 0.2]),
        depth_bi=torch.tensor([0.0, 9.0, 9.0, 9.0]),
    )


def test_select_combines_every_axis():
    sel = select(_scores(), Plan(hidden_size=3, ffn_hidden_size=2, mamba_num_heads=2, num_attention_heads=2,
                                 num_layers=3), _dims())
    assert sel.kept_blocks == [0, 2, 3]  # block 1 has the lowest KLD (BI is ignored when KLD exists)
    assert sel.hidden.tolist() == [0, 2, 4]
    assert sel.mamba_heads[0].tolist() == [1, 2]
    assert sorted(sel.ffn) == [3] and sel.ffn[3].tolist() == [3, 4]  # dropped block 1 is not selected
    assert sel.attention_heads[2].tolist() == [0, 3]


def test_explicit_drop_layers():
    sel = select(_scores(), Plan(drop_layers=(0, 2)), _dims())
    assert sel.kept_blocks == [1, 3]


def test_depth_falls_back_to_block_influence():
    scores = _scores()
    scores.depth_kld = None
    assert select(scores, Plan(num_layers=3), _dims()).kept_blocks == [1, 2, 3]


def test_depth_keeps_the_best_block_of_a_required_kind():
    scores = _scores()
    scores.depth_kld = torch.tensor([4.0, 3.0, 0.1, 2.0])  # the attention block 2 is least important
    assert select(scores, Plan(num_layers=2), _dims()).kept_blocks == [0, 1]
    sel = select(scores, Plan(num_layers=2), _dims(), required_kinds=("attention",))
    assert sel.kept_blocks == [0, 2]


def test_too_few_layers_says_which_must_stay():
    """The refusal names what pins layers, and says nothing of fixed types where there are none."""
    scores = _scores()
    with pytest.raises(PlanError) as exc:
        select(scores, Plan(num_layers=1), _dims(), required_kinds=("mamba", "attention"))
    assert ("num_layers=1 is too few: 2 layers must stay (one layer of each of mamba, attention). "
            "Valid values: 2..4") in str(exc.value)
    assert "none" not in str(exc.value)
