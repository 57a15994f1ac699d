"""The distillation loop: schedule, data order, exact resume, crash safety, outputs and bad input."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hybridprune.distillation import CheckpointError, DistillConfig, DistillError, NonFiniteLoss, WarmupCosine, distill
from hybridprune.distillation.data import GlobalBatches, as_token_data

from distill_helpers import DictDataset, random_tokens, tiny_nemotron_h

TESTS = Path(__file__).parent


def _models():
    return tiny_nemotron_h(hidden=64, seed=0), tiny_nemotron_h(hidden=48, seed=1)


def _cfg(**kw):
    base = dict(steps=4, global_batch=4, micro_batch=2, lr=1e-3, min_lr=1e-4, warmup=1, progress=False,
                precision="fp32", chunk_size=40)
    base.update(kw)
    return DistillConfig(**base)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_bit_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs (max {float((a[k] - b[k]).abs().max())})"


def _losses(out: Path):
    return [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.fixture(scope="module")
def data():
    return random_tokens(n=12, seq_len=32)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    """An uninterrupted 4-step run, checkpointing every 2 steps."""
    out = tmp_path_factory.mktemp("ref")
    teacher, student = _models()
    distill(teacher, student, data, _cfg(out_dir=str(out), save_every=2))
    return out, _weights(student)


# ------------------------------------------------------------------------------------ schedule, data


def test_warmup_cosine_schedule():
    f = WarmupCosine(warmup=4, total=20, min_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0
    assert f(19) == pytest.approx(0.1)
    vals = [f(s) for s in range(4, 20)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    assert f(11.5) == pytest.approx(0.55)  # half way down the cosine
    assert WarmupCosine(0, 1, 0.1)(0) == 1.0


def test_global_batches_do_not_depend_on_process_count():
    gb = GlobalBatches(10, 8, seed=3)
    for step in range(4):
        whole = gb.step_indices(step)
        for world in (1, 2, 4):
            parts = [i for r in range(world) for mb in gb.micro_batches(step, r, world, 2) for i in mb]
            assert parts == whole
    # every sample once per epoch
    seen = [i for s in range(5) for i in gb.step_indices(s)][:10]
    assert sorted(seen) == list(range(10))


def test_dataset_of_dicts_and_tensor_give_the_same_batches(data):
    mask = torch.ones_like(data)
    mask[3, 20:] = 0
    a, b = as_token_data(data), as_token_data(DictDataset(data, mask))
    ids_a, m_a = a.get([3, 1])
    ids_b, m_b = b.get([3, 1])
    assert torch.equal(ids_a, ids_b) and int(m_b[0].sum()) == 20 and int(m_a.sum()) == 64


# ---------------------------------------------------------------------------------- exact resume


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, data, reference):
    ref_out, ref_weights = reference
    out = tmp_path / "run"
    teacher, student = _models()
    distill(teacher, student, data, _cfg(out_dir=str(out), save_every=2, stop_at_step=2))
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000002"]
    assert not (out / "config.json").exists()  # stopped early: no export yet

    teacher, student = _models()  # fresh process state: new models, weights come from the checkpoint
    torch.manual_seed(1234)  # and a disturbed RNG, which the checkpoint restores
    distill(teacher, student, data, _cfg(out_dir=str(out), save_every=2, resume=str(out)))
    _assert_bit_identical(_weights(student), ref_weights)
    assert _losses(out) == _losses(ref_out)
    assert _losses(ref_out)[-1] < _losses(ref_out)[0]  # and it learns


def test_sigkill_during_save_resumes_from_previous_checkpoint(tmp_path, data, reference):
    """A process killed while writing checkpoint 4 leaves checkpoint 2 usable and a temp dir that is
    ignored; resuming then reproduces the uninterrupted run exactly."""
    _, ref_weights = reference
    out = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(TESTS)!r})
        import torch
        torch.set_num_threads({torch.get_num_threads()})
        from test_distill_trainer import _models, _cfg
        from distill_helpers import random_tokens
        from hybridprune.distillation import checkpoint, distill

        real = checkpoint.fsync_file
        def fsync_then_die(path):
            real(path)
            if path.parent.name.startswith(".tmp-step-00000004") and path.name == "optimizer.pt":
                os.kill(os.getpid(), signal.SIGKILL)
        checkpoint.fsync_file = fsync_then_die
        teacher, student = _models()
        distill(teacher, student, random_tokens(n=12, seq_len=32), _cfg(out_dir={str(out)!r}, save_every=2))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "step-00000002" in ckpts and "step-00000004" not in ckpts
    assert any(n.startswith(".tmp-step-00000004") for n in ckpts)

    teacher, student = _models()
    distill(teacher, student, data, _cfg(out_dir=str(out), save_every=2, resume=str(out)))
    _assert_bit_identical(_weights(student), ref_weights)
    assert not any(p.name.startswith(".tmp") for p in (out / "checkpoints").iterdir())


def test_corrupt_latest_checkpoint_falls_back_and_bad_resume_paths_fail_clearly(tmp_path, data, reference):
    ref_out, _ = reference
    teacher, student = _models()
    with pytest.raises(CheckpointError, match="does not exist"):
        distill(teacher, student, data, _cfg(resume=str(tmp_path / "nowhere")))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        distill(teacher, student, data, _cfg(resume=str(empty)))

    import shutil

    run = tmp_path / "copy"
    shutil.copytree(ref_out / "checkpoints", run / "checkpoints")
    (run / "checkpoints" / "step-00000004" / "state.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        distill(teacher, student, data, _cfg(resume=str(run / "checkpoints" / "step-00000004")))
    # from the run dir: the corrupt newest is skipped, step 2 is used, and the run completes
    warnings = []
    from hybridprune.distillation.trainer import Distiller

    d = Distiller(teacher, student, data, _cfg(out_dir=str(run), resume=str(run), save_every=2))
    d._say = warnings.append
    d.run()
    assert any("skipping checkpoint step-00000004" in w for w in warnings)
    assert d.step == 4
    # truncated model file: size check
    (run / "checkpoints" / "step-00000004" / "model.safetensors").write_bytes(b"xx")
    (run / "checkpoints" / "step-00000002").rename(run / "checkpoints" / "ignored")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        distill(*_models(), data, _cfg(resume=str(run)))


def test_resume_with_other_settings_or_data_is_refused(tmp_path, data, reference):
    ref_out, _ = reference
    with pytest.raises(CheckpointError, match="settings differ.*lr"):
        distill(*_models(), data, _cfg(resume=str(ref_out), lr=5e-4))
    with pytest.raises(CheckpointError, match="other data"):
        distill(*_models(), random_tokens(n=12, seq_len=32, seed=9), _cfg(resume=str(ref_out)))


def test_existing_run_without_resume_is_refused(data, reference):
    ref_out, _ = reference
    with pytest.raises(DistillError, match="--resume"):
        distill(*_models(), data, _cfg(out_dir=str(ref_out)))


# --------------------------------------------------------------------------------------- outputs


def test_outputs_hf_checkpoint_log_and_plot(tmp_path, data):
    from transformers import AutoModelForCausalLM

    src = tmp_path / "student_src"
    src.mkdir()
    (src / "tokenizer.json").write_text('{"fake": true}')
    (src / "hybridprune.json").write_text('{"plan": {}}')
    out = tmp_path / "out"
    teacher, student = _models()
    mask = torch.ones_like(data)
    mask[::3, 25:] = 0
    val = DictDataset(data[:5], mask[:5])
    distill(
        teacher, student, DictDataset(data, mask),
        _cfg(out_dir=str(out), steps=3, tokenizer_dir=str(src), eval_every=2, ce_weight=0.2), val_data=val,
    )
    for name in ("config.json", "model.safetensors", "tokenizer.json", "hybridprune.json", "distill.json",
                 "loss.png", "log.jsonl"):
        assert (out / name).is_file(), name
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not any(p.name.startswith(".tmp") for p in out.iterdir())
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for r in steps:
        assert {"loss", "kd_loss", "ce_loss", "lr", "grad_norm", "tokens", "tokens_per_s"} <= r.keys()
        assert math.isfinite(r["loss"]) and r["loss"] > 0
    assert [r["step"] for r in records if "val_loss" in r] == [2, 3]
    assert steps[0]["lr"] == pytest.approx(1e-3)  # warmup 1: step 1 trains at the peak
    assert steps[-1]["lr"] == pytest.approx(1e-4)  # ... and the last at the floor
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    student.eval()
    ids = data[:2]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, student(input_ids=ids).logits, rtol=0, atol=0)
    summary = json.loads((out / "distill.json").read_text())
    assert summary["steps"] == 3 and summary["final_val_loss"] is not None


def test_tokens_sets_the_number_of_steps(data):
    teacher, student = _models()
    from hybridprune.distillation.trainer import Distiller

    d = Distiller(teacher, student, data, _cfg(steps=None, tokens=4 * 32 * 2.5))
    assert d.total_steps == 3


# ------------------------------------------------------------------------------------- bad input


def test_bad_input_gives_clear_errors(data):
    with pytest.raises(DistillError, match="exactly one of steps and tokens"):
        distill(*_models(), data, _cfg(steps=None))
    with pytest.raises(DistillError, match="exactly one of steps and tokens"):
        distill(*_models(), data, _cfg(steps=3, tokens=1000))
    with pytest.raises(DistillError, match="empty"):
        distill(*_models(), data[:0], _cfg())
    with pytest.raises(DistillError, match="empty"):
        distill(*_models(), DictDataset(data[:0]), _cfg())
    with pytest.raises(DistillError, match="vocabulary sizes differ"):
        distill(tiny_nemotron_h(hidden=64, vocab=300), tiny_nemotron_h(hidden=48), data, _cfg())
    with pytest.raises(DistillError, match="outside the models' vocabulary"):
        distill(*_models(), data + 1000, _cfg())
    with pytest.raises(DistillError, match="multiple of micro_batch"):
        distill(*_models(), data, _cfg(global_batch=5))
    with pytest.raises(TypeError, match="unknown distill settings"):
        distill(*_models(), data, _cfg(), stepz=3)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data):
    out = tmp_path / "run"
    teacher, student = _models()
    from hybridprune.distillation.trainer import Distiller

    d = Distiller(teacher, student, data, _cfg(out_dir=str(out), save_every=2))
    real_step = d.train_step

    def poisoned():
        if d.step == 3:  # from the 4th step on the teacher emits NaN
            with torch.no_grad():
                teacher.get_output_embeddings().weight.fill_(float("nan"))
        return real_step()

    d.train_step = poisoned
    with pytest.raises(NonFiniteLoss, match=r"became nan at step 4.*step-00000002"):
        d.run()
    assert d.step == 3
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002"]
    assert not (out / "config.json").exists()
    assert all(math.isfinite(r["loss"]) for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()))
    assert all(torch.isfinite(p).all() for p in student.parameters())  # the NaN step was not applied


def test_bf16_autocast_runs_and_tracks_fp32(data):
    from hybridprune.distillation.trainer import Distiller

    losses = {}
    for precision in ("fp32", "bf16"):
        teacher, student = _models()
        d = Distiller(teacher, student, data, _cfg(steps=2, precision=precision))
        d.run()
        losses[precision] = [r["loss"] for r in d.history]
        assert all(p.dtype == torch.float32 for p in student.parameters())  # fp32 master weights
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)
