"""The numpy selection and axis maths against the former torch code, kept here as the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridprune.architectures import Dims
from hybridprune.pruning.selection import (
    Selection,
    select_attention,
    select_gdn,
    select_mamba,
    top_k_per_group,
    top_k_sorted,
)
from hybridprune.pruning.slicing import AxisIndex


# ---- the former torch selection (the reference) ----------------------------------------------------
def ref_top_k_sorted(scores: torch.Tensor, k: int) -> torch.Tensor:
    order = torch.sort(scores.double(), descending=True, stable=True).indices
    return torch.sort(order[:k]).values


def ref_top_k_per_group(scores: torch.Tensor, groups: int, k: int) -> torch.Tensor:
    size = scores.numel() // groups
    return torch.cat([g * size + ref_top_k_sorted(scores[g * size:(g + 1) * size], k) for g in range(groups)])


def ref_select_mamba(s, n_groups, heads, head_dim):
    channels = ref_top_k_sorted(s.double().norm(dim=0), head_dim)
    return ref_top_k_per_group(s.double()[:, channels].norm(dim=1), n_groups, heads // n_groups), channels


def ref_select_gdn(values, keys, key_heads, value_heads, key_dim, value_dim):
    hk, per = keys.shape[0], values.shape[0] // keys.shape[0]
    v = values.double()
    groups = ref_top_k_sorted(v.reshape(hk, -1).norm(dim=1), key_heads)
    members = (groups[:, None] * per + torch.arange(per)[None, :]).reshape(-1)
    channels = ref_top_k_sorted(v[members].norm(dim=0), value_dim)
    heads = members[ref_top_k_per_group(v[members][:, channels].norm(dim=1), key_heads, value_heads // key_heads)]
    return groups, heads, ref_top_k_sorted(keys.double()[groups].norm(dim=0), key_dim), channels


def _scores(g: torch.Generator, shape, ties: bool) -> torch.Tensor:
    """Random scores; with `ties`, small integers, so that many are equal (the tie order is tested)."""
    if ties:
        return torch.randint(0, 4, shape, generator=g).float()
    return torch.rand(shape, generator=g)


def _same(got: np.ndarray, expected: torch.Tensor) -> None:
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    assert got.tolist() == expected.tolist()


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_rankings_equal_the_former_torch_selection(seed, ties):
    g = torch.Generator().manual_seed(seed)
    s = _scores(g, (48,), ties)
    for k in (1, 7, 24, 48):
        _same(top_k_sorted(s, k), ref_top_k_sorted(s, k))
        _same(top_k_sorted(s.numpy(), k), ref_top_k_sorted(s, k))  # numpy scores rank the same
    _same(top_k_per_group(s, 4, 5), ref_top_k_per_group(s, 4, 5))
    m = _scores(g, (16, 8), ties)
    for got, expected in zip(select_mamba(m.numpy(), 4, 8, 5), ref_select_mamba(m, 4, 8, 5)):
        _same(got, expected)
    a = _scores(g, (8, 6), ties)
    _same(select_attention(a.numpy(), 2, 4), ref_top_k_per_group(a.double().norm(dim=1), 2, 2))
    values, keys = _scores(g, (12, 6), ties), _scores(g, (4, 5), ties)
    for got, expected in zip(select_gdn(values.numpy(), keys.numpy(), 2, 6, 3, 4),
                             ref_select_gdn(values, keys, 2, 6, 3, 4)):
        _same(got, expected)


def test_the_tie_order_is_higher_score_then_lower_index():
    assert top_k_sorted(np.array([1.0, 3.0, 3.0, 2.0, 3.0]), 2).tolist() == [1, 2]
    assert top_k_sorted(np.array([0.0, -0.0, 0.0]), 1).tolist() == [0]  # -0.0 and 0.0 are equal


# ---- the axis grammar ---------------------------------------------------------------------------------
DIMS = Dims(vocab_size=16, hidden_size=8, ffn_hidden_size=6, mamba_num_heads=4, mamba_head_dim=3, mamba_n_groups=2,
            mamba_state_size=2, num_attention_heads=4, num_key_value_heads=2, attention_head_dim=2,
            moe_ffn_hidden_size=5, block_kinds=("M",), extras=(("q_width", 3),))
HIDDEN, HEADS, CHANNELS = np.array([1, 4, 6]), np.array([0, 3]), np.array([0, 2])
SEL = Selection(kept_blocks=[0], hidden=HIDDEN, mamba_heads={0: HEADS}, mamba_channels={0: CHANNELS},
                ffn={0: np.array([2, 5])}, attention_heads={0: np.array([1, 2])}, moe_ffn={0: np.array([0, 4])})


def _former(axis: str) -> list[int]:
    """The index the former one-branch-per-name code gave, written out."""
    h, inner, gn = 8, 12, 4
    xc = [hd * 3 + c for hd in HEADS for c in CHANNELS]
    return {
        "hidden2": [*HIDDEN, *(h + HIDDEN)],
        "hidden3": [*HIDDEN, *(h + HIDDEN), *(2 * h + HIDDEN)],
        "ffn_gate_up": [2, 5, 8, 11],
        "moe_ffn_gate_up": [0, 4, 5, 9],
        "attn_q": [2, 3, 4, 5],
        "attn_q_gate": [4, 5, 6, 7, 8, 9, 10, 11],
        "attn_heads:q_width": [3, 4, 5, 6, 7, 8],
        "mamba_channels_x3": [*xc, *(inner + x for x in xc), *(2 * inner + x for x in xc)],
        "mamba_in_proj": [*xc, *(inner + x for x in xc), *range(2 * inner, 2 * inner + 2 * gn),
                          *(2 * inner + 2 * gn + HEADS)],
        "mamba_conv": [*xc, *range(inner, inner + 2 * gn)],
    }[axis]


@pytest.mark.parametrize("axis", ["hidden2", "hidden3", "ffn_gate_up", "moe_ffn_gate_up", "attn_q", "attn_q_gate",
                                  "attn_heads:q_width", "mamba_channels_x3", "mamba_in_proj", "mamba_conv"])
def test_every_former_axis_name_gives_its_former_index(axis):
    assert AxisIndex(SEL, DIMS)(axis, 0).tolist() == [int(i) for i in _former(axis)]


def test_the_grammar_composes_stacks_widths_and_windows():
    index = AxisIndex(SEL, DIMS)
    assert index("hidden*3", None).tolist() == index("hidden3", None).tolist()
    assert index("attn_heads/2*attention_head_dim", 0).tolist() == index("attn_q_gate", 0).tolist()
    assert index("ffn+hidden", 0).tolist() == [2, 5, 6 + 1, 6 + 4, 6 + 6]
    assert index("mamba_in_proj|12:32", 0).tolist() == [i - 12 for i in _former("mamba_in_proj") if 12 <= i < 32]
    assert index("mamba_heads+mamba_bc", 0).tolist() == [0, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert AxisIndex(Selection(kept_blocks=[0]), DIMS)("hidden*2+ffn", 0) is None  # nothing cut: keep all
    assert index.width("mamba_in_proj") == 2 * 12 + 2 * 4 + 4
    with pytest.raises(KeyError, match="unknown slicing axis 'nope'"):
        index("nope", 0)
    with pytest.raises(KeyError, match="unknown width 'nope'"):
        index("attn_heads/nope", 0)


def test_a_selection_of_torch_tensors_is_taken_as_numpy():
    sel = Selection(kept_blocks=[0], hidden=torch.tensor([1, 4, 6]))
    got = AxisIndex(sel, DIMS)("hidden2", None)
    assert isinstance(got, np.ndarray) and got.tolist() == _former("hidden2")
