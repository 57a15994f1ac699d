"""Two CPU processes (gloo) follow the loss trajectory of one process with the same global batch,
with DDP and with FSDP2 (including an FSDP checkpoint, resume and export)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hybridprune.distillation import DistillConfig
from hybridprune.distillation.trainer import Distiller

from distill_helpers import random_tokens, tiny_nemotron_h

STEPS = 4
# Weights after 4 AdamW steps of lr 2e-3: float noise in tiny gradients (rare embedding rows) is
# amplified by Adam's normalisation to ~2e-6, i.e. 0.1 % of one step's update; 1e-5 leaves room.
ATOL_WEIGHTS = 1e-5


def _cfg(**kw):
    base = dict(steps=STEPS, global_batch=4, micro_batch=1, lr=2e-3, min_lr=2e-4, warmup=1, progress=False,
                precision="fp32", chunk_size=48)
    base.update(kw)
    return DistillConfig(**base)


def _models():
    return tiny_nemotron_h(hidden=64, seed=0), tiny_nemotron_h(hidden=48, seed=1)


def _data():
    return random_tokens(n=10, seq_len=32)


def _run(cfg, val=None):
    teacher, student = _models()
    d = Distiller(teacher, student, _data(), cfg, val_data=val)
    d.run()
    return d


def _worker(rank: int, world: int, init_file: str, out_dir: str):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {}
        d = _run(_cfg(parallel="ddp"), val=_data()[:3])
        results["ddp"] = {
            "losses": [r["loss"] for r in d.history if "loss" in r],
            "val": [r["val_loss"] for r in d.history if "val_loss" in r],
            "weights": {k: v.detach().clone() for k, v in d.student.state_dict().items()},
        }
        run = Path(out_dir) / "fsdp"
        first = _run(_cfg(parallel="fsdp", out_dir=str(run), save_every=2, stop_at_step=2))
        second = _run(_cfg(parallel="fsdp", out_dir=str(run), save_every=2, resume=str(run)))
        results["fsdp"] = {"losses": [r["loss"] for r in first.history + second.history if "loss" in r]}
        if rank == 0:
            torch.save(results, Path(out_dir) / "results.pt")
        dist.barrier()  # leave together: gloo aborts a process whose peer tears down mid-exchange
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(2, str(tmp / "init"), str(tmp)), nprocs=2, join=True)
    return tmp, torch.load(tmp / "results.pt", weights_only=True)


@pytest.fixture(scope="module")
def one_process():
    return _run(_cfg(), val=_data()[:3])


def test_ddp_two_processes_match_one(two_process_results, one_process):
    _, res = two_process_results
    ref = one_process
    ref_losses = [r["loss"] for r in ref.history if "loss" in r]
    assert len(res["ddp"]["losses"]) == STEPS
    assert res["ddp"]["losses"] == pytest.approx(ref_losses, rel=1e-5, abs=1e-7)
    assert res["ddp"]["val"] == pytest.approx([r["val_loss"] for r in ref.history if "val_loss" in r], rel=1e-5)
    assert ref_losses[-1] < ref_losses[0]
    ref_w = ref.student.state_dict()
    for k, v in res["ddp"]["weights"].items():
        torch.testing.assert_close(v, ref_w[k], rtol=1e-4, atol=ATOL_WEIGHTS, msg=k)


def test_fsdp_two_processes_match_one_and_checkpoint_resume_export(two_process_results, one_process):
    tmp, res = two_process_results
    ref_losses = [r["loss"] for r in one_process.history if "loss" in r]
    assert res["fsdp"]["losses"] == pytest.approx(ref_losses, rel=1e-5, abs=1e-7)
    run = tmp / "fsdp"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    logged = [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert logged == pytest.approx(ref_losses, rel=1e-5)
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(run)
    ref_w = one_process.student.state_dict()
    for k, v in exported.state_dict().items():
        torch.testing.assert_close(v, ref_w[k], rtol=1e-4, atol=ATOL_WEIGHTS, msg=k)
