"""hybridprune: the Minitron-SSM recipe (calibrate, group-aware prune, search, distil, export)
for Hugging Face hybrid Mamba-Transformer checkpoints.

The public names are imported lazily so that `import hybridprune` stays cheap and each stage only
pulls in what it needs. Subpackages are named apart from the functions they export (`distillation`
holds `distill`, `archsearch` holds `search`): a subpackage named like a package attribute would
replace that attribute the moment it is imported.
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
    "distill": "hybridprune.distillation",
    "DistillConfig": "hybridprune.distillation",
    "search": "hybridprune.archsearch",
    "Budget": "hybridprune.archsearch",
    "SearchResult": "hybridprune.archsearch",
    "evaluate_loss": "hybridprune.evaluate",
    "compare_models": "hybridprune.evaluate",
    "measure_generation": "hybridprune.evaluate",
    "run_tasks": "hybridprune.evaluate",
    "build_run_report": "hybridprune.report",
    "load_model": "hybridprune.checkpoint.load",
}

__all__ = sorted(_PUBLIC)


def lazy_names(package: str, names: dict[str, str]):
    """A module `__getattr__` (PEP 562) that imports `names[attribute]` (a module path) on first use and
    returns its attribute of that name; unknown names raise AttributeError as a module's would."""

    def __getattr__(name: str):
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__


__getattr__ = lazy_names(__name__, _PUBLIC)
