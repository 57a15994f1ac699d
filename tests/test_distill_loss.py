"""The chunked KD loss equals the unchunked one, in value and in gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridprune.distillation import DistillError, Head, chunked_kd_loss, kd_loss_from_logits
from hybridprune.distillation.trainer import check_head, final_hidden

from distill_helpers import tiny_mamba2, tiny_nemotron_h


def _problem(seed=0, B=2, T=7, H=5, Ht=6, V=11, dtype=torch.float64, bias=True):
    g = torch.Generator().manual_seed(seed)
    hs = torch.randn(B, T, H, generator=g, dtype=dtype).requires_grad_(True)
    W = torch.randn(V, H, generator=g, dtype=dtype).requires_grad_(True)
    b = torch.randn(V, generator=g, dtype=dtype).requires_grad_(True) if bias else None
    ht = torch.randn(B, T, Ht, generator=g, dtype=dtype)
    Wt = torch.randn(V, Ht, generator=g, dtype=dtype)
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[-1, T // 2 :] = 0
    return hs, W, b, ht, Wt, ids, mask


def _grads(loss, tensors):
    return torch.autograd.grad(loss, [t for t in tensors if t is not None])


@pytest.mark.parametrize("kind", ["forward", "reverse"])
@pytest.mark.parametrize("temperature,ce_weight", [(1.0, 0.0), (2.0, 0.0), (0.5, 0.7)])
@pytest.mark.parametrize("chunk", [1, 3, 4, 100])
def test_chunked_equals_unchunked(kind, temperature, ce_weight, chunk):
    hs, W, b, ht, Wt, ids, mask = _problem()
    s_scale, t_scale = 0.7, 1.3
    out = chunked_kd_loss(
        hs, Head(W, b, s_scale), ht, Head(Wt, None, t_scale), mask, ids,
        kind=kind, temperature=temperature, ce_weight=ce_weight, chunk_size=chunk,
    )
    ref = kd_loss_from_logits(
        (hs @ W.T + b) * s_scale, (ht @ Wt.T) * t_scale, mask, ids,
        kind=kind, temperature=temperature, ce_weight=ce_weight,
    )
    torch.testing.assert_close(out.loss, ref, rtol=1e-12, atol=1e-13)
    for g, r in zip(_grads(out.loss, [hs, W, b]), _grads(ref, [hs, W, b])):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-13)
    assert out.kd_tokens == int(mask.sum())


def test_masked_positions_get_no_gradient_and_do_not_count():
    hs, W, b, ht, Wt, ids, mask = _problem()
    out = chunked_kd_loss(hs, Head(W, b), ht, Head(Wt), mask, ids, chunk_size=2)
    (gh,) = torch.autograd.grad(out.loss, [hs])
    assert torch.all(gh[mask == 0] == 0)
    # changing a masked position's hidden state changes nothing
    hs2 = hs.detach().clone()
    hs2[mask == 0] += 100.0
    out2 = chunked_kd_loss(hs2, Head(W, b), ht, Head(Wt), mask, ids, chunk_size=2)
    assert float(out2.loss.detach()) == pytest.approx(float(out.loss.detach()), rel=1e-12)


def test_no_grad_path_equals_grad_path():
    hs, W, b, ht, Wt, ids, mask = _problem()
    with_grad = chunked_kd_loss(hs, Head(W, b), ht, Head(Wt), mask, ids, ce_weight=0.3, chunk_size=3)
    with torch.no_grad():
        plain = chunked_kd_loss(hs, Head(W, b), ht, Head(Wt), mask, ids, ce_weight=0.3, chunk_size=3)
    torch.testing.assert_close(with_grad.loss.detach(), plain.loss, rtol=1e-12, atol=0)
    assert float(with_grad.kd_sum) == pytest.approx(float(plain.kd_sum), rel=1e-12)


def test_backward_scales_with_upstream_gradient():
    hs, W, b, ht, Wt, ids, mask = _problem()
    out = chunked_kd_loss(hs, Head(W, b), ht, Head(Wt), mask, ids, chunk_size=3)
    g1 = _grads(out.loss, [hs, W])
    out = chunked_kd_loss(hs, Head(W, b), ht, Head(Wt), mask, ids, chunk_size=3)
    g3 = _grads(3.0 * out.loss, [hs, W])
    for a, c in zip(g1, g3):
        torch.testing.assert_close(3.0 * a, c)


def test_forward_kl_is_zero_for_identical_models_and_positive_otherwise():
    hs, W, b, _, _, ids, mask = _problem()
    same = chunked_kd_loss(hs, Head(W, b), hs.detach(), Head(W.detach(), b.detach()), mask, chunk_size=4)
    assert abs(float(same.loss.detach())) < 1e-12
    hs2, W2, b2, ht, Wt, ids, mask = _problem(seed=1)
    assert float(chunked_kd_loss(hs2, Head(W2, b2), ht, Head(Wt), mask).loss.detach()) > 0


def test_bad_options_raise():
    hs, W, b, ht, Wt, ids, mask = _problem()
    with pytest.raises(ValueError, match="kd loss"):
        chunked_kd_loss(hs, Head(W), ht, Head(Wt), mask, kind="jensen")
    with pytest.raises(ValueError, match="vocabularies differ"):
        chunked_kd_loss(hs, Head(W), ht, Head(Wt[:-1]), mask)
    with pytest.raises(ValueError, match="input_ids"):
        chunked_kd_loss(hs, Head(W), ht, Head(Wt), mask, ce_weight=0.5)


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 3),
    T=st.integers(1, 9),
    V=st.integers(2, 13),
    chunk=st.integers(1, 12),
    kind=st.sampled_from(["forward", "reverse"]),
    seed=st.integers(0, 10_000),
)
def test_chunked_equals_unchunked_property(B, T, V, chunk, kind, seed):
    hs, W, b, ht, Wt, ids, _ = _problem(seed=seed, B=B, T=T, V=V, bias=False)
    g = torch.Generator().manual_seed(seed + 1)
    mask = (torch.rand(B, T, generator=g) > 0.3).long()
    mask[0, 0] = 1
    out = chunked_kd_loss(hs, Head(W), ht, Head(Wt), mask, ids, kind=kind, ce_weight=0.25, chunk_size=chunk)
    ref = kd_loss_from_logits(hs @ W.T, ht @ Wt.T, mask, ids, kind=kind, ce_weight=0.25)
    torch.testing.assert_close(out.loss, ref, rtol=1e-11, atol=1e-12)
    for a, r in zip(_grads(out.loss, [hs, W]), _grads(ref, [hs, W])):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("build,s_hidden", [(tiny_nemotron_h, 48), (tiny_mamba2, 32)])
def test_model_gradients_equal_unchunked_loss_on_full_logits(build, s_hidden):
    """On real models: the chunked loss gives every parameter the gradient of the plain loss on the
    full `[B, T, V]` logits. The models run in fp32 (fp64 depthwise convolutions take seconds on the
    CPU); hidden states and heads are cast to fp64 for both losses, so the two differ only by the
    fp32 rounding of the gradient handed back to the body. (`check_head` pins head(hidden) to the
    models' own logits.)"""
    teacher = build(hidden=64, seed=0).eval()
    student = build(hidden=s_hidden, seed=1)
    V = student.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (2, 24), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    with torch.no_grad():
        t_hidden = final_hidden(teacher, ids, mask).double()
    t_w = teacher.get_output_embeddings().weight.detach().double()
    s_w = student.get_output_embeddings().weight
    params = [p for p in student.parameters() if p.requires_grad]

    def grads(loss):
        return torch.autograd.grad(loss, params, allow_unused=True)

    hs = final_hidden(student, ids, mask).double()
    ref = kd_loss_from_logits(hs @ s_w.double().T, t_hidden @ t_w.T, mask, ids, ce_weight=0.5)
    ref_grads = grads(ref)
    hs = final_hidden(student, ids, mask).double()
    out = chunked_kd_loss(hs, Head(s_w.double()), t_hidden, Head(t_w), mask, ids, ce_weight=0.5, chunk_size=5)
    torch.testing.assert_close(out.loss, ref, rtol=1e-12, atol=1e-14)
    for (name, _), a, r in zip(student.named_parameters(), grads(out.loss), ref_grads):
        if r is None:
            assert a is None or torch.all(a == 0), name
            continue
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6 * float(r.abs().max()) + 1e-12, msg=name)


@pytest.mark.parametrize("build", [tiny_nemotron_h, tiny_mamba2])
def test_base_model_output_is_post_final_norm(build):
    model = build(hidden=64, seed=0)
    check_head(model, model.config.vocab_size, "model", torch.device("cpu"))


def test_check_head_rejects_a_model_whose_logits_are_not_the_head_of_the_hidden_state(monkeypatch):
    from hybridprune.architectures.nemotron_h import NemotronHAdapter

    model = tiny_nemotron_h(hidden=48, seed=0)
    # pretend: the adapter states a scale of 1/3 that the forward does not apply, the check must notice
    monkeypatch.setattr(NemotronHAdapter, "logit_scale", lambda self, config: 1 / 3.0)
    with pytest.raises(DistillError, match="cannot reproduce"):
        check_head(model, model.config.vocab_size, "student", torch.device("cpu"))


def test_teacher_with_impossible_tokens_gives_finite_forward_kl():
    """Teacher logits of -inf (a masked vocabulary entry) contribute 0 · log 0 = 0, not NaN."""
    hs, W, b, ht, Wt, ids, mask = _problem()
    t_bias = torch.zeros(W.shape[0], dtype=W.dtype)
    t_bias[[2, 5]] = float("-inf")
    out = chunked_kd_loss(hs, Head(W, b), ht, Head(Wt, t_bias), mask, chunk_size=3)
    ref = kd_loss_from_logits(hs @ W.T + b, ht @ Wt.T + t_bias, mask)
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, ref, rtol=1e-12, atol=1e-13)
    for g, r in zip(_grads(out.loss, [hs, W]), _grads(ref, [hs, W])):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-13)
