"""The recipe's sections take their defaults from the configs of the stages they feed, so the two
cannot drift: a recipe that leaves a key out trains as `hp.distill` with that setting left out does."""

from __future__ import annotations

import dataclasses

from hybridprune.distillation import DistillConfig
from hybridprune.recipe.schema import Distill
from hybridprune.stages.distill import _as_in


def test_the_distill_section_defaults_are_distill_configs():
    config = {f.name: f for f in dataclasses.fields(DistillConfig)}
    shared = [f for f in dataclasses.fields(Distill) if f.name in config]
    assert len(shared) == 24  # every training setting the section offers
    for f in shared:
        assert (f.default, f.default_factory) == (config[f.name].default, config[f.name].default_factory), f.name
    assert Distill().lr == DistillConfig().lr and Distill().keep_last == DistillConfig().keep_last


def test_a_default_is_read_from_the_config_not_copied():
    @dataclasses.dataclass
    class Config:
        lr: float = 3e-4
        tags: list = dataclasses.field(default_factory=lambda: ["a"])

    assert _as_in(Config, "lr") == 3e-4
    made = _as_in(Config, "tags")
    assert isinstance(made, dataclasses.Field) and made.default_factory() == ["a"]


def test_from_takes_the_docs_spelling_of_a_stage():
    """`--from distil` (the README's verb) finds the distill stage; an unknown name lists the stages."""
    import pytest

    from hybridprune.recipe.loader import RecipeError
    from hybridprune.recipe.plan import find

    class St:
        def __init__(self, index, kind):
            self.index, self.kind, self.name = index, kind, f"{index:02d}-{kind}"

    stages = [St(1, "calibrate"), St(2, "prune"), St(3, "distill"), St(4, "eval")]
    assert find(stages, "distil") is stages[2] and find(stages, "distill") is stages[2]
    assert find(stages, "evaluate") is stages[3] and find(stages, "03") is stages[2]
    with pytest.raises(RecipeError, match="the stages are 01-calibrate, 02-prune, 03-distill, 04-eval"):
        find(stages, "distilling")
