"""search --kd-topk computes the teacher's top-k of its short-KD data once and reuses it for every
candidate; it must never reuse logits of another teacher, other data (a token a sampled fingerprint
does not see) or another k."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from conftest import build, tiny_nemotron_config
from hybridprune.archsearch import shared_topk as st


def _tokens(change_row: int | None = None):
    ids = torch.randint(0, 256, (8, 16), generator=torch.Generator().manual_seed(0))
    if change_row is not None:
        ids[change_row, 5] = (ids[change_row, 5] + 1) % 256
    return ids


def test_reuse_only_for_the_same_teacher_data_and_k():
    st._TOPK_ONCE.clear()
    teacher = build(tiny_nemotron_config(vocab_size=256)).eval()
    cfg = SimpleNamespace(kd_topk=4, micro_batch=4)
    first = st.shared_topk(teacher, _tokens(), cfg)
    assert st.shared_topk(teacher, _tokens(), cfg) is first  # the same: reused
    # row 3 is not among the rows TokenData.fingerprint samples (0, 1, 2, n//2, n-1)
    other_data = st.shared_topk(teacher, _tokens(change_row=3), cfg)
    assert other_data is not first and not torch.equal(other_data.ids[3], first.ids[3])
    other_teacher = st.shared_topk(build(tiny_nemotron_config(vocab_size=256), seed=1).eval(), _tokens(), cfg)
    assert other_teacher is not first and not torch.equal(other_teacher.logp, first.logp)
    other_k = st.shared_topk(teacher, _tokens(), SimpleNamespace(kd_topk=2, micro_batch=4))
    assert other_k.k == 2
