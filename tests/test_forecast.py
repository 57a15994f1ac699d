"""The memory forecast against the measured peak of the real code path, and its refusal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import build, tiny_config
from hybridprune.architectures import get_adapter
from hybridprune.checkpoint.forecast import GIB, Forecast, MemoryForecastError, forecast_forward

# Loads the checkpoint and runs one stage, printing the peak resident memory it added (bytes).
MEASURE = r"""
import json, sys, torch
torch.set_num_threads(1)
from transformers import AutoModelForCausalLM
from hybridprune.importance.calibrate import calibrate
from hybridprune.evaluate import evaluate_loss

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

stage, path, batch, seq = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ids = torch.randint(3, 1000, (batch, seq), generator=torch.Generator().manual_seed(0))
open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current size
base = status("VmRSS")
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
if stage == "evaluate":
    evaluate_loss(model, ids, batch_size=batch)
else:
    calibrate(model, ids, batch_size=batch, progress=False, depth_samples=batch if stage == "depth" else 0)
print(json.dumps(status("VmHWM") - base))
"""


MID_SIZE = dict(
    vocab_size=16384, hidden_size=1024, intermediate_size=3072,
    layers_block_type=["linear_attention", "mlp", "linear_attention", "full_attention",
                       "linear_attention", "mlp", "linear_attention", "mlp"],
    mamba_num_heads=32, mamba_head_dim=32, n_groups=4, ssm_state_size=32, conv_kernel=4, chunk_size=128,
    num_attention_heads=16, num_key_value_heads=4, head_dim=64,
)


def mid_size_nemotron():
    """68.9M parameters (275 MB in float32): large enough that tensors, not the interpreter and the
    allocator's arenas (tens of MB that vary from run to run), dominate the growth."""
    from transformers import AutoConfig

    return AutoConfig.for_model("nemotron_h", **MID_SIZE)


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.fixture(scope="module")
def mid_size_checkpoint(tmp_path_factory):
    """The mid-size model saved once for every stage (read only).

    Built and saved in a process of its own: freed memory kept by this process's allocator would
    otherwise hide later allocations from the peak-memory measurements of other tests."""
    path = tmp_path_factory.mktemp("forecast") / "model"
    build_it = ("import sys, json; from conftest import build; from transformers import AutoConfig; "
                "build(AutoConfig.for_model('nemotron_h', **json.loads(sys.argv[1]))).save_pretrained(sys.argv[2])")
    run = subprocess.run([sys.executable, "-c", build_it, json.dumps(MID_SIZE), str(path)],
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return path


@pytest.mark.slow
@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs /proc/self/clear_refs")
@pytest.mark.parametrize("stage, batch, seq", [("calibrate", 4, 256), ("depth", 2, 512), ("evaluate", 4, 256)])
def test_forecast_is_within_20_percent_of_the_measured_peak(mid_size_checkpoint, stage, batch, seq):
    config = mid_size_nemotron()
    run = subprocess.run([sys.executable, "-c", MEASURE, stage, str(mid_size_checkpoint), str(batch), str(seq)],
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    adapter = get_adapter(config)
    forecast = forecast_forward("evaluate" if stage == "evaluate" else "calibrate", adapter,
                                adapter.dims(config), batch=batch, seq=seq, weight_bytes=4,
                                depth=stage == "depth", chunk=config.chunk_size)
    assert 0.8 <= forecast.total / measured <= 1.2, (forecast.describe(), measured)


def test_a_forecast_far_above_the_device_is_refused_with_what_to_do():
    f = Forecast("calibration", "cpu", {"weights": 30 * GIB, "activations": 2 * GIB}, available=20 * GIB)
    with pytest.raises(MemoryForecastError) as err:
        f.check(lower="--batch-size or --seq-len")
    message = str(err.value)
    assert message.startswith("calibration needs about 32.0 GiB but cpu has 20.0 GiB available")
    assert "Lower --batch-size or --seq-len" in message and "--force" in message
    f.check(force=True)  # forced: no error
    Forecast("calibration", "cpu", {"weights": 24 * GIB}, available=20 * GIB).check()  # within the margin


def test_the_8b_forecast_counts_the_weights_exactly():
    from transformers import AutoConfig

    pattern = "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-"
    types = {"M": "linear_attention", "-": "mlp", "*": "full_attention"}
    config = AutoConfig.for_model(
        "nemotron_h", layers_block_type=[types[c] for c in pattern], hidden_size=4096, intermediate_size=21504,
        mamba_num_heads=128, mamba_head_dim=64, n_groups=8, ssm_state_size=128, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, vocab_size=131072,
    )
    adapter = get_adapter(config)
    f = forecast_forward("calibrate", adapter, adapter.dims(config), batch=1, seq=2048, weight_bytes=2)
    assert f.parts["weights"] == 2 * 8_100_852_736  # the paper digest's exact count, in bf16
    assert f.available is None or f.available > 0


def test_commands_print_the_forecast_and_refuse_without_force(tmp_path, tokens, monkeypatch):
    """calibrate and prune say what they will need before loading anything; when that clearly exceeds
    what the device has, they stop with the flags to lower, unless --force."""
    from typer.testing import CliRunner

    import hybridprune.checkpoint.forecast as forecast
    from conftest import tiny_nemotron_config
    from hybridprune.cli import app
    from hybridprune.importance.calibrate import calibrate

    model = build(tiny_nemotron_config())
    model.save_pretrained(tmp_path / "model")
    calibrate(model, tokens, batch_size=2, progress=False, depth_samples=2).save(tmp_path / "scores")
    monkeypatch.setattr(forecast, "available_bytes", lambda device="cpu": 2**20)  # a 1 MiB device
    calib = ["calibrate", "--model", str(tmp_path / "model"), "--data", "shakespeare", "--samples", "2",
             "--seq-len", "16", "--depth-samples", "0", "--out", str(tmp_path / "c")]
    result = CliRunner().invoke(app, calib)
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert "memory forecast for calibrate" in text and "Lower --batch-size or --seq-len" in text
    assert "--force" in text and not (tmp_path / "c").exists()
    prune = ["prune", "--model", str(tmp_path / "model"), "--scores", str(tmp_path / "scores"), "--plan",
             "mamba_num_heads=6", "--out", str(tmp_path / "p")]
    result = CliRunner().invoke(app, prune)
    assert result.exit_code == 2 and "pruning needs about" in " ".join(result.output.split())
    result = CliRunner().invoke(app, [*prune, "--force"])
    assert result.exit_code == 0, result.output
    assert "memory forecast for pruning" in " ".join(result.output.split())


@pytest.mark.parametrize("family", ["bamba", "falcon_h1", "granitemoehybrid"])
def test_the_forecast_sizes_the_scan_with_the_chunk_the_family_names(family):
    """Families that call the scan chunk `mamba_chunk_size` are forecast at that chunk (the adapter's
    `scan_chunk`), not at the default of 128 a config without `chunk_size` used to get."""
    from hybridprune.checkpoint.forecast import forward_forecast

    config = tiny_config(family, mamba_chunk_size=32)
    adapter = get_adapter(config)
    assert adapter.scan_chunk(config) == 32
    f = forward_forecast(config, "calibrate", batch=2, seq=1024, dtype="float32", device="cpu")
    at = {chunk: forecast_forward("calibrate", adapter, adapter.dims(config), batch=2, seq=1024, weight_bytes=4,
                                  chunk=chunk).parts["activations"] for chunk in (32, 128)}
    assert f.parts["activations"] == at[32] != at[128]
