"""The one way stages load: a command's `Loader` loads afresh; a recipe run's `SharedLoader` loads each
model once for all its stages, whichever stage asks first and however it spells the same options, and
hands distillation private copies (letting the kept one go, so no second copy is held)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from hybridprune.recipe.stages import SharedLoader
from hybridprune.stages.calibrate import CalibrateSettings
from hybridprune.stages.common import Loader, LoadSettings


def _counting(monkeypatch) -> list:
    from hybridprune.checkpoint import load

    calls = []

    def load_model(path, **kw):
        calls.append((str(path), kw))
        return object()

    monkeypatch.setattr(load, "load_model", load_model)
    return calls


def test_a_recipe_run_loads_a_model_once_for_every_stage(monkeypatch):
    calls = _counting(monkeypatch)
    loader = SharedLoader(SimpleNamespace(source=Path("teacher")))
    calibrated = loader.model("teacher", CalibrateSettings())  # its device: "auto"
    searched = loader.model("teacher", LoadSettings(device=None))  # the recipe's, unset: "auto" too
    assert searched is calibrated and len(calls) == 1
    assert calls[0][1]["device"] == "auto"


def test_distillation_gets_a_private_copy_and_the_kept_one_is_let_go(monkeypatch):
    calls = _counting(monkeypatch)
    loader = SharedLoader(SimpleNamespace(source=Path("teacher")))
    kept = loader.model("teacher", LoadSettings())
    private = loader.model("teacher", LoadSettings(dtype="float32", device="cpu"), role="teacher", keep=False)
    assert private is not kept and calls[1][1]["dtype"] == "float32" and calls[1][1]["role"] == "teacher"
    assert loader.model("teacher", LoadSettings()) is not kept and len(calls) == 3  # not held beside the private one


def test_a_commands_loader_loads_afresh(monkeypatch):
    calls = _counting(monkeypatch)
    loading = LoadSettings(dtype="bfloat16", device="cpu", trust_remote_code=True)
    assert Loader().model("m", loading) is not Loader().model("m", loading) and len(calls) == 2
    assert calls[0] == ("m", {"dtype": "bfloat16", "device": "cpu", "role": "checkpoint", "whole": False,
                              "trust_remote_code": True, "device_map": None})
