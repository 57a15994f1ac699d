"""Top-k teacher logits with the tail mass kept: the loss pinned to a hand-computed value, its
gradient to autograd, k = V to the full KL; the cache written by `hybridprune teacher-logits`."""

from __future__ import annotations

import math

import pytest
import torch

from hybridprune.distillation.loss import Head, kd_loss_from_logits
from hybridprune.distillation.topk import teacher_topk, topk_kd_loss


def _eye_head(v):
    return Head(torch.eye(v, dtype=torch.float64))


def test_topk_loss_is_the_hand_computed_value():
    # one position, V = 4, k = 2; the heads are identities, so the hidden states are the logits
    zt = torch.tensor([[[2.0, 1.0, 0.0, 0.0]]], dtype=torch.float64)
    zs = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]], dtype=torch.float64)
    teacher = teacher_topk(zt.view(1, 4), _eye_head(4), 2)
    assert teacher[0].tolist() == [[0, 1]]
    # by hand: p = e^(2,1,0,0)/S with S = e^2 + e + 2; q = e^(1,1,1,0)/(3e + 1)
    s_t, s_s = math.e**2 + math.e + 2, 3 * math.e + 1
    p0, p1, pt = math.e**2 / s_t, math.e / s_t, 2 / s_t
    q0, q1, qt = math.e / s_s, math.e / s_s, (math.e + 1) / s_s
    hand = p0 * math.log(p0 / q0) + p1 * math.log(p1 / q1) + pt * math.log(pt / qt)
    assert hand == pytest.approx(0.22833113, abs=1e-8)  # 0.4398 − 0.0628 − 0.1486, written out
    loss, kd_sum, _ = topk_kd_loss(zs, _eye_head(4), tuple(t.view(1, 1, -1) if t.dim() == 2 else t.view(1, 1)
                                                          for t in teacher))
    assert float(loss) == pytest.approx(hand, abs=1e-6) and float(kd_sum) == pytest.approx(hand, abs=1e-6)


def _coarse_kl(zs, zt, k):
    """The definition, by autograd on full logits."""
    p = torch.softmax(zt, -1)
    q = torch.softmax(zs, -1)
    top = torch.topk(zt, k, -1).indices
    pk, qk = p.gather(-1, top), q.gather(-1, top)
    pt, qt = 1 - pk.sum(-1), 1 - qk.sum(-1)
    return ((pk * (pk.log() - qk.log())).sum(-1) + pt * (pt.log() - qt.log())).sum()


@pytest.mark.parametrize("k", [1, 3, 7])
def test_gradients_match_autograd_and_k_equal_v_is_full_kd(k):
    torch.manual_seed(0)
    V, H, n = 11, 6, 9
    w = torch.randn(V, H, dtype=torch.float64, requires_grad=True)
    tw = torch.randn(V, H, dtype=torch.float64)
    h = torch.randn(1, n, H, dtype=torch.float64, requires_grad=True)
    th = torch.randn(n, H, dtype=torch.float64)
    teacher = teacher_topk(th, Head(tw), k)
    teacher = (teacher[0].view(1, n, k), teacher[1].view(1, n, k), teacher[2].view(1, n))
    loss, _, _ = topk_kd_loss(h, Head(w), teacher, chunk_size=4)
    loss.backward()
    h2 = h.detach().clone().requires_grad_(True)
    w2 = w.detach().clone().requires_grad_(True)
    ref = _coarse_kl(h2[0] @ w2.t(), th @ tw.t(), k) / n
    ref.backward()
    ref = ref.detach()
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-9)
    assert torch.allclose(h.grad, h2.grad, atol=1e-10) and torch.allclose(w.grad, w2.grad, atol=1e-10)


def test_k_equal_v_is_the_full_kl():
    torch.manual_seed(1)
    V, H, n = 9, 5, 7
    w, tw = torch.randn(V, H, dtype=torch.float64), torch.randn(V, H, dtype=torch.float64)
    h, th = torch.randn(1, n, H, dtype=torch.float64), torch.randn(1, n, H, dtype=torch.float64)
    t = teacher_topk(th[0], Head(tw), V)
    loss, _, _ = topk_kd_loss(h, Head(w), (t[0].view(1, n, V), t[1].view(1, n, V), t[2].view(1, n)))
    full = kd_loss_from_logits(h @ w.t(), th @ tw.t())
    assert float(loss) == pytest.approx(float(full), rel=1e-9)


# ---- through the command line -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from ckpt_helpers import invoke, save_checkpoint, small_corpus
    from hybridprune.data import tokenizer_path

    root = tmp_path_factory.mktemp("topk")
    save_checkpoint(root / "teacher")
    save_checkpoint(root / "student", seed=1)
    small_corpus(root / "corpus.jsonl")
    assert invoke("tokenize", "--data", root / "corpus.jsonl", "--tokenizer", tokenizer_path(),
                  "--out", root / "tokens").exit_code == 0
    return root


def _distill(root, out, *extra):
    from ckpt_helpers import invoke

    return invoke("distill", "--teacher", root / "teacher", "--student", root / "student", "--data", root / "tokens",
                  "--seq-len", "32", "--global-batch", "4", "--micro-batch", "2", "--val-samples", "2",
                  "--num-samples", "40", "--steps", "3", "--no-progress", "--out", out, *extra)


def _losses(out):
    import json

    return [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]


def test_cached_teacher_logits_give_the_online_topk_run(root, tmp_path):
    from ckpt_helpers import invoke, no_traceback

    r = invoke("teacher-logits", "--teacher", root / "teacher", "--data", root / "tokens", "--seq-len", "32",
               "--top-k", "16", "--num-samples", "40", "--out", tmp_path / "logits", "--device", "cpu")
    assert r.exit_code == 0, r.output
    online = _distill(root, tmp_path / "online", "--kd-topk", "16")
    cached = _distill(root, tmp_path / "cached", "--teacher-logits", tmp_path / "logits")
    assert online.exit_code == 0 and cached.exit_code == 0, online.output + cached.output
    assert _losses(tmp_path / "online") == pytest.approx(_losses(tmp_path / "cached"), rel=1e-6)
    full = _distill(root, tmp_path / "full")
    assert full.exit_code == 0 and _losses(tmp_path / "full")[0] > _losses(tmp_path / "online")[0] * 0.5
    # logits of other samples are refused, naming what to do; nothing is written
    bad = _distill(root, tmp_path / "bad", "--teacher-logits", tmp_path / "logits", "--seed", "5")
    assert bad.exit_code == 2 and no_traceback(bad) and "other training windows" in bad.output
    assert not (tmp_path / "bad").exists()
    r = _distill(root, tmp_path / "rev", "--kd-topk", "8", "--kd-loss", "reverse")
    assert r.exit_code == 2 and "forward KL at temperature 1" in r.output and not (tmp_path / "rev").exists()
    r = invoke("teacher-logits", "--teacher", root / "teacher", "--data", root / "corpus.jsonl", "--out",
               tmp_path / "x")
    assert r.exit_code == 2 and "not a token directory" in r.output and not (tmp_path / "x").exists()


def test_teacher_on_its_own_device(root, tmp_path):
    from ckpt_helpers import invoke, no_traceback

    a = _distill(root, tmp_path / "a", "--teacher-device", "cpu")
    assert a.exit_code == 0, a.output
    b = _distill(root, tmp_path / "b", "--teacher-device-map", "auto")
    assert b.exit_code == 0, b.output
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    r = _distill(root, tmp_path / "c", "--teacher-device", "cuda:7")
    assert r.exit_code == 2 and no_traceback(r) and "--teacher-device" in r.output
    r = _distill(root, tmp_path / "c", "--teacher-device-map", "everywhere")
    assert r.exit_code == 2 and "--teacher-device-map 'everywhere' is not a placement strategy" in r.output
    assert not (tmp_path / "c").exists()


def test_search_computes_the_teacher_logits_once_for_all_candidates(tmp_path, monkeypatch):
    from ckpt_helpers import invoke, save_checkpoint
    from hybridprune.distillation import teacher_logits as tl

    save_checkpoint(tmp_path / "model")
    calls = []
    real = tl.compute
    monkeypatch.setattr(tl, "compute", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    r = invoke("search", "--model", tmp_path / "model", "--out", tmp_path / "search", "--params", "0.9x",
               "--top-k", "3", "--kd-steps", "1", "--kd-batch", "2", "--kd-topk", "8", "--max-candidates", "4",
               "--skip", "attention_heads", "--data", "shakespeare", "--eval-samples", "4", "--eval-seq-len", "32",
               "--calib-samples", "4", "--depth-samples", "2", "--batch-size", "4",
               "--divisors", "hidden=8,ffn=16,head_dim=2", "--speed-batch", "1")
    assert r.exit_code == 0, r.output
    finals = [x for x in (tmp_path / "search" / "candidates.jsonl").read_text().splitlines() if '"final"' in x]
    assert len(finals) == 3 and len(calls) == 1
