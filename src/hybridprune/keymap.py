"""Checkpoint key names: what transformers calls a checkpoint's tensors once loaded.

Key names are the checkpoint's own (e.g. Nemotron-H's Hub layout `backbone.layers.3.mixer.in_proj.weight`).
`KeyMap.model_key` maps them to the names the loaded transformers model uses (`model.layers.3...`) with
the renamings transformers itself applies when loading, so the adapters' slicing rules (written for model
keys) apply to files too, and an output can keep the source's key layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .safetensors_io import CheckpointFormatError


@dataclass(frozen=True)
class StackedSlice:
    """A checkpoint tensor that transformers stacks with its siblings into one model tensor on load
    (a `MergeModulelist` conversion: Nemotron-H's per-expert `experts.{j}.up_proj.weight` become
    `experts.up_proj [E, F, H]`). It is slice `index` of the model tensor `target` along `dim`;
    `span` is where `index` is written in the checkpoint key, so an output can renumber it."""

    target: str
    index: int
    dim: int
    span: tuple[int, int]


class KeyMap:
    """Checkpoint key -> model key, with the renamings transformers applies on load for this model type.

    Conversions that stack per-expert tensors into one (`MergeModulelist`, read from transformers'
    own conversion mapping) are understood too (`stacked`), so a checkpoint in the Hub's per-expert
    layout can be checked, fingerprinted and sliced tensor by tensor; any other conversion is
    reported by `needs_conversion` and refused by the streaming prune.
    """

    def __init__(self, model_type: str) -> None:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
        from transformers.core_model_loading import (
            MergeModulelist, WeightConverter, WeightRenaming, apply_renamings,
        )

        mapping = get_checkpoint_conversion_mapping(model_type) or []
        self._renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
        self._reverse = [m.reverse_transform() for m in self._renamings[::-1]]
        self._converters = [m for m in mapping if isinstance(m, WeightConverter)]
        self._apply = apply_renamings
        # Stacking converters: one source pattern with one `*` (the slice index), one MergeModulelist.
        self._stacks = []
        for c in self._converters:
            ops = list(c.operations)
            if (len(c.source_patterns) == 1 and c.source_patterns[0].count("*") == 1 and len(ops) == 1
                    and isinstance(ops[0], MergeModulelist)):
                pattern = re.escape(c.source_patterns[0]).replace(r"\*", r"(\d+)") + r"(?!\w)"
                self._stacks.append((c, re.compile(pattern), ops[0].dim))

    def model_key(self, key: str) -> str:
        return self._apply(key, self._renamings) if self._renamings else key

    def checkpoint_key(self, model_key: str) -> str:
        """The name `save_pretrained` gives a model key in this model type's checkpoints."""
        return self._apply(model_key, self._reverse) if self._reverse else model_key

    def needs_conversion(self, key: str) -> bool:
        """True for keys that transformers merges or splits on load (e.g. per-expert MoE weights)."""
        model_key = self.model_key(key)
        return any(c.rename_source_key(model_key)[1] is not None for c in self._converters)

    def stacked(self, key: str) -> StackedSlice | None:
        """Where checkpoint tensor `key` lands in the model if transformers stacks it with its
        siblings on load, else None."""
        model_key = self.model_key(key)
        for converter, regex, dim in self._stacks:
            target, matched = converter.rename_source_key(model_key)
            if matched is None:
                continue
            found = list(regex.finditer(key))
            if not found:  # the renamings moved the slice index: cannot write the key back
                return None
            m = found[-1]
            return StackedSlice(target, int(m.group(1)), dim, m.span(1))
        return None

    def sliceable(self, key: str) -> bool:
        """Whether a tensor-by-tensor reader can place `key` in the model: renamed only, or stacked."""
        return not self.needs_conversion(key) or self.stacked(key) is not None

    def model_shapes(self, shapes: Mapping[str, tuple[int, ...]],
                     expected: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, tuple[int, ...]]:
        """The model keys and shapes that checkpoint tensors (`shapes`, by checkpoint key) load into:
        renamed, and the slices of a stacked tensor merged into one entry. Raises
        CheckpointFormatError naming the checkpoint keys a stacked tensor lacks (gaps in its slice
        numbers, or fewer slices than `expected` has) or whose shapes disagree."""
        out: dict[str, tuple[int, ...]] = {}
        stacks: dict[str, dict[int, tuple[str, tuple[int, ...]]]] = {}
        where: dict[str, StackedSlice] = {}
        for key, shape in shapes.items():
            s = self.stacked(key)
            if s is None:
                out[self.model_key(key)] = tuple(shape)
                continue
            stacks.setdefault(s.target, {})[s.index] = (key, tuple(shape))
            where.setdefault(s.target, s)
        for target, parts in stacks.items():
            s = where[target]
            example = parts[s.index][0]
            count = max(parts) + 1
            if expected is not None and target in expected and len(expected[target]) > s.dim:
                count = max(count, expected[target][s.dim])
            missing = [f"{example[: s.span[0]]}{j}{example[s.span[1]:]}" for j in range(count) if j not in parts]
            if missing:
                more = f" ({len(missing)} in all)" if len(missing) > 3 else ""
                raise CheckpointFormatError(
                    f"the checkpoint lacks {', '.join(missing[:3])}{more}: transformers stacks these per-expert "
                    f"tensors into {target}, which needs all {count} of them. The checkpoint is incomplete; "
                    "download or export it again."
                )
            slice_shapes = {shape for _, shape in parts.values()}
            if len(slice_shapes) > 1:
                raise CheckpointFormatError(
                    f"the per-expert tensors of {target} differ in shape ({sorted(slice_shapes)}): "
                    "the checkpoint is damaged or mixes two models"
                )
            (shape,) = slice_shapes
            out[target] = shape[: s.dim] + (count,) + shape[s.dim:]
        return out
