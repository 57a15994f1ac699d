"""A streaming prune without a cast needs no torch of its own: numpy dtypes, checks and cuts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build, tiny_nemotron_config

from hybridprune.checkpoint.dtypes import DTYPES, as_float32, count_non_finite, dtype_of
from hybridprune.importance.calibrate import calibrate

PLAN = "hidden_size=32,ffn_hidden_size=40,mamba_num_heads=6,mamba_head_dim=6,num_attention_heads=4,num_layers=5"

#: Run in a fresh process: every import of torch (or safetensors.torch) made by a hybridprune module is
#: recorded, then the streaming prune runs.
PROBE = textwrap.dedent("""
    import builtins, json, sys, warnings
    importers = []
    original = builtins.__import__

    def recording(name, globals=None, locals=None, fromlist=(), level=0):
        who = (globals or {}).get("__name__") or ""
        wants_torch = name == "torch" or name.startswith("torch.") or name.endswith(".torch") or (
            name == "safetensors" and "torch" in (fromlist or ()))
        if wants_torch and who.startswith("hybridprune"):
            importers.append(who)
        return original(name, globals, locals, fromlist, level)

    builtins.__import__ = recording
    warnings.simplefilter("ignore")
    from hybridprune.importance.scores import Scores
    from hybridprune.pruning.streaming import stream_prune

    stream_prune(sys.argv[1], Scores.load(sys.argv[2]), sys.argv[3], sys.argv[4])
    print(json.dumps({"importers": sorted(set(importers)), "torch": "torch" in sys.modules,
                      "transformers_imports_torch": "transformers" in sys.modules}))
""")


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")
    model = build(tiny_nemotron_config())
    tokens = torch.randint(3, 96, (6, 24), generator=torch.Generator().manual_seed(0))
    calibrate(model, tokens, batch_size=2, progress=False, depth_samples=2).save(root / "scores")
    model.to(torch.bfloat16).save_pretrained(root / "source", max_shard_size="20KB")
    return root


def _probe(root: Path, out: str) -> dict:
    import json

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run([sys.executable, "-c", PROBE, str(root / "source"), str(root / "scores"), PLAN,
                           str(root / out)], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_no_hybridprune_module_imports_torch_for_a_streaming_prune(bf16_checkpoint):
    assert _probe(bf16_checkpoint, "out")["importers"] == []


def test_a_streaming_prune_leaves_torch_unimported(bf16_checkpoint):
    assert _probe(bf16_checkpoint, "out2")["torch"] is False


# ---- the numpy dtypes against torch ---------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [None, 999])
@pytest.mark.parametrize("name", [n for n, d in DTYPES.items() if d.kind in "fc"])
def test_non_finite_counts_and_float32_widening_equal_torchs(name, chunk, monkeypatch):
    """Every bit pattern's class (finite or not) and float32 value as torch has them; `chunk`: counted
    a few elements at a time, so that chunks without any NaN/Inf are skipped."""
    from hybridprune.checkpoint import dtypes

    if chunk:
        monkeypatch.setattr(dtypes, "_CHUNK", chunk)
    dtype = DTYPES[name]
    bits = np.random.default_rng(0).integers(0, 256, size=65536 * dtype.itemsize, dtype=np.uint8)
    stored = bits.view(dtype.storage)
    t = torch.from_numpy(bits.copy()).view(dtype.torch)
    parts = torch.view_as_real(t) if t.is_complex() else t
    assert count_non_finite(stored, dtype) == int((~torch.isfinite(parts.float() if parts.itemsize == 1 else parts))
                                                  .sum()) > 0
    if dtype.kind == "f":
        expected = t.to(torch.float32).numpy()
        assert np.array_equal(as_float32(stored, dtype).view(np.uint32), expected.view(np.uint32))


def test_dtype_names():
    assert dtype_of(torch.bfloat16) is dtype_of("bf16") is dtype_of("BF16") is DTYPES["BF16"]
    assert DTYPES["BF16"].storage == np.uint16 and DTYPES["F8_E4M3"].torch is torch.float8_e4m3fn
    with pytest.raises(ValueError, match="unknown dtype 'float7'"):
        dtype_of("float7")


def test_a_lone_nan_or_inf_is_counted_in_whichever_chunk_it_is(monkeypatch):
    from hybridprune.checkpoint import dtypes

    monkeypatch.setattr(dtypes, "_CHUNK", 999)
    stored = np.full((50, 100), 0x3F80, dtype=np.uint16)  # bf16 ones
    assert count_non_finite(stored, DTYPES["BF16"]) == 0
    stored[45, 7], stored[3, 3] = 0x7FC0, 0xFF80  # NaN in the 5th chunk, -inf in the 1st
    assert count_non_finite(stored, DTYPES["BF16"]) == 2
    assert count_non_finite(np.array([0x80, 0, 0x7F], dtype=np.uint8), DTYPES["F8_E4M3FNUZ"]) == 1
    assert count_non_finite(np.arange(10), DTYPES["I64"]) == 0


@pytest.mark.filterwarnings("ignore:the scores were computed on a different model")
def test_a_bfloat16_nan_is_refused_by_name(bf16_checkpoint, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from hybridprune.checkpoint.load import CheckpointLoadError
    from hybridprune.importance.scores import Scores
    from hybridprune.pruning.streaming import stream_prune

    source = tmp_path / "source"
    shutil.copytree(bf16_checkpoint / "source", source)
    shard = sorted(source.glob("*.safetensors"))[1]
    tensors = load_file(str(shard))
    key = next(k for k, t in tensors.items() if t.dim() == 2)
    tensors[key].view(-1)[-1] = float("nan")
    save_file(tensors, str(shard), metadata={"format": "pt"})
    name = key.split(".", 1)[1]  # named as the model names it
    with pytest.raises(CheckpointLoadError, match=rf"NaN or infinite weights: \w+\.{name} \(1 values\)"):
        stream_prune(source, Scores.load(bf16_checkpoint / "scores"), PLAN, tmp_path / "out")
