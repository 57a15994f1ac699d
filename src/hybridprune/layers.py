"""The layers of the package, top to bottom: a module may import only from the layers below its own
(`tests/test_layers.py` walks every import, lazy ones included, and holds the code to this order).

Packages in one tier are siblings: neither imports the other. The root `__init__` is the bottom: it
holds `__version__` and names its lazy public attributes by string, so it imports nothing.
"""

LAYERS: list[tuple[str, ...]] = [
    ("__main__",),                  # `python -m hybridprune`
    ("cli",),                       # one module per command
    ("recipe",),                    # `run`: stages of a recipe file glued together
    ("stages",),                    # each stage's settings and entry function: what commands and recipes call
    ("archsearch",),                # candidate grid, cost model, ranking, short KD of the top few
    ("distillation", "report"),     # KD training and its checkpoints; the run report and plots
    ("pruning",),                   # Plan, Selection, slicing, apply, export, streaming prune
    ("evaluate",),                  # loss, perplexity, lm-eval bridge, generation speed
    ("importance",),                # calibration hooks, Scores, depth importance
    ("checkpoint",),                # the one load path, files, hub ids, memory forecasts
    ("data", "options"),            # text sources and batching; torch-free option rules
    ("architectures",),             # one adapter per Hugging Face family: the only code naming a model class
    ("output",),                    # atomic writes, documents read back, cleanup, signals
    ("__init__", "layers"),         # the root: `__version__` and the lazy public names; this order
]

#: Edges that run up, each with why it is there; "to be moved" marks a debt, not a design.
ALLOWED: dict[tuple[str, str], str] = {
    ("options", "archsearch"): "a rule's parser is the owning package's (sizes: archsearch.cost.parse_params, "
                               "search axes: archsearch.space), imported only when a value is checked",
}
