"""`Scores`: per-unit importance of one model on one calibration set, saved once and reused.

Every candidate of a search is pruned from the same `Scores`, so they live on disk as safetensors
(the tensors) plus `scores.json` (what they were computed from).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..fsutil import atomic_directory

TENSORS_FILE = "scores.safetensors"
META_FILE = "scores.json"


class ScoresError(ValueError):
    """Scores are missing, corrupt, or belong to a different model."""


class CalibrationError(ValueError):
    """Calibration could not produce meaningful scores (no data, NaNs)."""


@dataclass
class Scores:
    """Importance per prunable unit. Keys are original block indices.

    - `mamba[i]`: [heads, head_dim], mean |x| over tokens, L2 over samples (x slice of in_proj);
    - `ffn[i]`: [ffn], the same statistic on the input of the down projection;
    - `attention[i]`: [q_heads, head_dim], on the input of o_proj;
    - `hidden`: [hidden], per-block statistic of the pre-norm output, summed over blocks;
    - `depth_kld`, `depth_bi`: [blocks], KL divergence of logits with the block skipped, and
      Block Influence (1 - cos between the block's input and output).
    """

    mamba: dict[int, torch.Tensor] = field(default_factory=dict)
    ffn: dict[int, torch.Tensor] = field(default_factory=dict)
    attention: dict[int, torch.Tensor] = field(default_factory=dict)
    hidden: torch.Tensor | None = None
    depth_kld: torch.Tensor | None = None
    depth_bi: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- persistence -------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for group in ("mamba", "ffn", "attention"):
            for i, t in getattr(self, group).items():
                out[f"{group}.{i}"] = t
        for name in ("hidden", "depth_kld", "depth_bi"):
            t = getattr(self, name)
            if t is not None:
                out[name] = t
        return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}

    def write_files(self, directory: str | os.PathLike) -> None:
        """Write the two files into an existing directory (`save` is the atomic whole)."""
        save_file(self.tensors(), str(Path(directory) / TENSORS_FILE))
        (Path(directory) / META_FILE).write_text(json.dumps(self.meta, indent=2, sort_keys=True) + "\n")

    def save(self, directory: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """Write atomically: a temporary sibling directory renamed into place. `overwrite` replaces
        earlier scores, never a directory holding files hybridprune did not write."""
        return atomic_directory(directory, self.write_files, overwrite=overwrite, what="the scores")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Scores":
        directory = Path(directory)
        tensors_path, meta_path = directory / TENSORS_FILE, directory / META_FILE
        if not tensors_path.is_file() or not meta_path.is_file():
            raise ScoresError(
                f"no scores in {directory}: expected {TENSORS_FILE} and {META_FILE}. "
                "Run `hybridprune calibrate` first."
            )
        try:
            tensors = load_file(str(tensors_path))
            meta = json.loads(meta_path.read_text())
        except Exception as exc:  # corrupt file
            raise ScoresError(f"scores in {directory} are unreadable ({exc}); re-run calibration") from exc
        scores = cls(meta=meta)
        for key, t in tensors.items():
            group, _, index = key.partition(".")
            if group in ("mamba", "ffn", "attention") and index:
                getattr(scores, group)[int(index)] = t
            else:
                setattr(scores, key, t)
        return scores

    def summary(self) -> dict[str, Any]:
        return {
            "samples": self.meta.get("num_samples"),
            "tokens": self.meta.get("num_tokens"),
            "mamba_layers": sorted(self.mamba),
            "ffn_layers": sorted(self.ffn),
            "attention_layers": sorted(self.attention),
            "depth": [n for n in ("depth_kld", "depth_bi") if getattr(self, n) is not None],
        }


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's config and weights, to tie Scores to the model they came from."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        d = config.to_dict()
        for volatile in ("transformers_version", "_name_or_path", "dtype", "torch_dtype"):
            d.pop(volatile, None)
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in sorted(model.state_dict().items()):
            flat = p.detach().reshape(-1)
            h.update(f"{name}:{tuple(p.shape)}:{flat.double().sum().item():.6e}".encode())
            h.update(flat[:16].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
