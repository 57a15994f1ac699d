"""Calibration statistics against hand computation, masking, persistence, depth and torchrun."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

import hybridprune as hp
from conftest import build, tiny_nemotron_config
from hybridprune.importance.calibrate import CalibrationError
from hybridprune.importance.scores import Scores, ScoresError


def _l2_of_means(acts: torch.Tensor) -> torch.Tensor:
    """[N, T, C] -> mean |a| over T, then L2 over N."""
    return acts.abs().mean(dim=1).double().pow(2).sum(0).sqrt().float()


def test_scores_match_hand_computation(nemotron, tokens):
    m = nemotron
    scores = hp.calibrate(m, tokens, batch_size=4, progress=False)
    with torch.no_grad():
        hs = m(input_ids=tokens, output_hidden_states=True, use_cache=False).hidden_states
        layers = m.model.layers
        inner = 12 * 8
        # Mamba block 0: the x slice of in_proj applied to the block's pre-norm output.
        x = layers[0].mixer.in_proj(layers[0].norm(hs[0]))[..., inner:2 * inner]
        torch.testing.assert_close(scores.mamba[0], _l2_of_means(x).view(12, 8), rtol=1e-5, atol=1e-6)
        # MLP block 1: the input of down_proj is relu²(up_proj(norm(h))).
        up = layers[1].mixer.up_proj(layers[1].norm(hs[1]))
        torch.testing.assert_close(scores.ffn[1], _l2_of_means(torch.relu(up) ** 2), rtol=1e-5, atol=1e-6)
        # Hidden channels: per-block statistic of the pre-norm output, summed over blocks.
        hidden = sum(_l2_of_means(layers[i].norm(hs[i])) for i in range(len(layers)))
        torch.testing.assert_close(scores.hidden, hidden, rtol=1e-5, atol=1e-5)
    assert scores.attention[2].shape == (8, 8)
    assert scores.meta["num_samples"] == 6 and scores.meta["num_tokens"] == 6 * 24


def test_padding_is_ignored(nemotron, tokens):
    """Right padding with garbage tokens gives the same scores as the unpadded samples alone."""
    lengths = [24, 16, 9]
    ids = tokens[:3].clone()
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        ids[row, n:] = torch.randint(3, 96, (24 - n,))
    padded = hp.calibrate(nemotron, [{"input_ids": ids, "attention_mask": mask}], progress=False)
    alone = hp.calibrate(nemotron, [tokens[r:r + 1, :n] for r, n in enumerate(lengths)], progress=False)
    for group in ("mamba", "ffn", "attention"):
        for i, t in getattr(alone, group).items():
            torch.testing.assert_close(getattr(padded, group)[i], t, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(padded.hidden, alone.hidden, rtol=1e-4, atol=1e-6)
    assert padded.meta["num_tokens"] == sum(lengths)


def test_scores_round_trip(nemotron, tokens, tmp_path):
    scores = hp.calibrate(nemotron, tokens, progress=False)
    scores.depth_kld = torch.arange(6.0)
    scores.save(tmp_path / "scores")
    loaded = Scores.load(tmp_path / "scores")
    assert loaded.meta == scores.meta
    for key, t in scores.tensors().items():
        assert torch.equal(loaded.tensors()[key], t)
    with pytest.raises(ScoresError, match="Run `hybridprune calibrate`"):
        Scores.load(tmp_path / "missing")
    (tmp_path / "scores" / "scores.safetensors").write_bytes(b"garbage")
    with pytest.raises(ScoresError, match="unreadable"):
        Scores.load(tmp_path / "scores")


def test_depth_scores_are_zero_for_an_identity_block(nemotron, tokens):
    with torch.no_grad():
        nemotron.model.layers[4].mixer.out_proj.weight.zero_()
    kld = hp.depth_importance(nemotron, tokens[:2], progress=False)
    bi = hp.calibrate(nemotron, tokens[:2], progress=False).depth_bi
    assert kld[4] == 0 and bi[4].abs() < 1e-6
    others = [i for i in range(6) if i != 4]
    assert (kld[others] > 0).all() and (bi[others] > 0).all()


def test_non_finite_activations_and_empty_data_are_errors(nemotron, tokens):
    with pytest.raises(CalibrationError, match="no calibration samples"):
        hp.calibrate(nemotron, [], progress=False)
    with torch.no_grad():
        nemotron.model.layers[1].mixer.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(CalibrationError, match="non-finite"):
        hp.calibrate(nemotron, tokens, progress=False)


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = build(tiny_nemotron_config())
        data = torch.randint(3, 96, (8, 20), generator=torch.Generator().manual_seed(4))
        scores = hp.calibrate(model, data[rank::world], batch_size=2, progress=False)
        scores.depth_kld = hp.depth_importance(model, data[rank::world][:2], progress=False)
        if rank == 0:
            scores.save(out)
        dist.barrier()  # leave together: gloo aborts a process whose peer tears down mid-exchange
    finally:
        dist.destroy_process_group()


def test_two_processes_on_half_the_data_match_one_process(tmp_path):
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "two")), nprocs=2, join=True)
    model = build(tiny_nemotron_config())
    data = torch.randint(3, 96, (8, 20), generator=torch.Generator().manual_seed(4))
    one = hp.calibrate(model, data, batch_size=2, progress=False)
    one.depth_kld = hp.depth_importance(model, torch.cat([data[0::2][:2], data[1::2][:2]]), progress=False)
    two = Scores.load(tmp_path / "two")
    assert two.meta["num_samples"] == 8
    for key, t in one.tensors().items():
        torch.testing.assert_close(two.tensors()[key], t, rtol=1e-5, atol=1e-6, msg=key)


def test_depth_scores_from_the_calibration_pass_equal_a_separate_run(nemotron, tokens):
    """depth_samples keeps the first samples of the one pass, so even a generator can be used."""
    one_shot = (tokens[i:i + 4] for i in range(0, len(tokens), 4))
    scores = hp.calibrate(nemotron, one_shot, progress=False, depth_samples=3)
    torch.testing.assert_close(scores.depth_kld, hp.depth_importance(nemotron, tokens[:3], progress=False))
    assert scores.meta["depth_samples"] == 3 and scores.meta["num_samples"] == len(tokens)


def test_scores_record_the_window_length_when_the_caller_does_not(nemotron, tokens):
    """The recipe's calibrate stage passes no seq_len; the scores (and every model card built from them)
    must still say how long the windows were, not `None`."""
    scores = hp.calibrate(nemotron, tokens, batch_size=2, progress=False)
    assert scores.meta["seq_len"] == tokens.shape[1]
    assert hp.calibrate(nemotron, tokens, batch_size=2, progress=False, seq_len=99).meta["seq_len"] == 99
