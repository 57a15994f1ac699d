"""hybridprune: the Minitron-SSM recipe (calibrate, group-aware prune, search, distil, export)
for Hugging Face hybrid Mamba-Transformer checkpoints.

The public names are imported lazily so that `import hybridprune` stays cheap and each stage only
pulls in what it needs.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "calibrate": "hybridprune.importance.calibrate",
    "Scores": "hybridprune.importance.scores",
    "depth_importance": "hybridprune.importance.depth",
    "Plan": "hybridprune.pruning.plan",
    "PlanError": "hybridprune.pruning.plan",
    "prune": "hybridprune.pruning.apply",
    "select": "hybridprune.pruning.selection",
    "Selection": "hybridprune.pruning.selection",
    "export": "hybridprune.pruning.export",
    "get_adapter": "hybridprune.architectures",
    "UnsupportedArchitecture": "hybridprune.architectures",
    "count_parameters": "hybridprune.architectures",
    "distill": "hybridprune.distill",
    "DistillConfig": "hybridprune.distill",
    "search": "hybridprune.search",
    "Budget": "hybridprune.search",
    "SearchResult": "hybridprune.search",
    "evaluate_loss": "hybridprune.evaluate",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    # Only reached for names not yet bound; see the end of this module for `distill` and `search`.
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'hybridprune' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


# `distill` and `search` are both functions and subpackages. Importing a subpackage rebinds the
# package attribute to the module, so a lazy function would turn into a module the moment anything
# imported `hybridprune.distill`. Binding the functions once, after the subpackages are imported,
# keeps `hp.distill(...)` and `hp.search(...)` callable.
from .distill import distill  # noqa: E402
from .search import search  # noqa: E402
