"""The calibrate stage: score every prunable unit of a checkpoint on calibration text.

`hybridprune calibrate`, a recipe's `calibrate:` section and the Python API run `run` with
`CalibrateSettings`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .common import SILENT, LoadSettings, Loader, Voice, say_forecast

#: the plot written next to the scores
PLOT_FILE = "layer_importance.png"


@dataclass(kw_only=True)
class CalibrateSettings(LoadSettings):
    """The calibrate stage's options (flags `--seq-len`, ...; recipe keys `calibrate.seq_len`, ...).

    `depth_samples` windows also measure each block's KL-divergence depth importance (0: Block
    Influence only)."""

    samples: int = 1024
    seq_len: int = 2048
    batch_size: int = 1
    depth_samples: int = 64


def check(s: CalibrateSettings) -> None:
    """The settings' own rules, and the device, before anything is loaded (SettingError/OptionError)."""
    from ..checkpoint.devices import check_device, check_device_map
    from ..options import CALIBRATE

    check_device(s.device)
    check_device_map(s.device_map)
    CALIBRATE.check({k: v for k, v in dataclasses.asdict(s).items() if k in CALIBRATE})


def run(s: CalibrateSettings, model: str | Path, data: str, out: str | Path, *, overwrite: bool = False,
        plot: str | Path | None = None, voice: Voice = SILENT, loader: Loader | None = None,
        shard: tuple[int, int] = (0, 1)):
    """Calibrate the checkpoint `model` on `data` and write its scores to `out` (with the layer plot,
    or the plot at `plot`); returns the `Scores`. Under torchrun each process (`shard`: rank, world)
    reads its part of the windows; only rank 0 writes."""
    from ..checkpoint.load import load_config, resolve
    from ..output.atomic import check_output

    check(s)
    check_output(out, overwrite=overwrite)  # before the long calibration pass
    resolve(model, "checkpoint")  # a wrong path is named before torch is imported
    from ..checkpoint.devices import resolve_device
    from ..checkpoint.forecast import forward_forecast
    from ..importance.calibrate import calibrate

    loader = loader or Loader()
    rank, world = shard
    if world > 1 and s.device == "auto":
        s = dataclasses.replace(s, device=f"cuda:{rank}" if resolve_device("auto").type == "cuda" else "cpu")
    config = load_config(model, trust_remote_code=s.trust_remote_code)
    say_forecast(voice, forward_forecast(config, "calibrate", batch=s.batch_size, seq=s.seq_len, dtype=s.dtype,
                                         device=s.device, depth=s.depth_samples > 0),
                 force=s.force, lower="--batch-size or --seq-len", spread=s.device_map is not None)
    lm = loader.model(model, s)
    calib = loader.samples(data, loader.tokenizer(model, s), split="calibration", seq_len=s.seq_len,
                           n=s.samples, seed=s.seed, text_field=s.text_field, vocab=lm.config.vocab_size)
    if world > 1:
        calib = calib.shard(rank, world)
    per_process = max(1, s.depth_samples // world) if s.depth_samples else 0
    scores = calibrate(lm, calib, batch_size=s.batch_size, seq_len=s.seq_len, depth_samples=per_process)
    scores.meta.update({"source_model": str(model), "data": str(data), "seed": s.seed,
                        "depth_samples": s.depth_samples})
    if rank == 0:
        _write(scores, out, overwrite, plot)
    return scores


def _write(scores, out, overwrite: bool, plot) -> None:
    from ..output.atomic import atomic_directory
    from ..report.plots import plot_layer_importance

    kinds = list(scores.meta["dims"]["block_kinds"])

    def write(tmp: Path) -> None:  # scores and plot appear together, or not at all
        scores.write_files(tmp)
        if plot is None:
            plot_layer_importance(scores, kinds, tmp / PLOT_FILE)

    atomic_directory(out, write, overwrite=overwrite, what="the scores")
    if plot is not None:
        plot_layer_importance(scores, kinds, Path(plot))
