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
    `span` is where `index` is written in the checkpoint key, so an output can renumber it.

    When several source patterns are stacked and then concatenated (`MergeModulelist` then
    `Concatenate`: LFM2-MoE's per-expert `w1` and `w3` become `experts.gate_up_proj [E, 2F, H]`), the
    tensor is part `part` of `parts` equal parts along the stacked tensor's dimension `concat_dim`."""

    target: str
    index: int
    dim: int
    span: tuple[int, int]
    part: int = 0
    parts: int = 1
    concat_dim: int | None = None

    def merged_shape(self, shape: tuple[int, ...], count: int) -> tuple[int, ...]:
        """The model tensor's shape from one slice's `shape` and the number of slices."""
        out = list(shape[: self.dim]) + [count] + list(shape[self.dim:])
        if self.concat_dim is not None:
            out[self.concat_dim] *= self.parts
        return tuple(out)

    def part_range(self, shape: tuple[int, ...]) -> tuple[int, int] | None:
        """Where this part lies along the dimension of the slice (`shape`) that is concatenated."""
        if self.concat_dim is None:
            return None
        d = self.concat_dim - (1 if self.concat_dim > self.dim else 0)
        n = shape[d]
        return self.part * n, (self.part + 1) * n


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
            Concatenate, MergeModulelist, WeightConverter, WeightRenaming, apply_renamings,
        )

        mapping = get_checkpoint_conversion_mapping(model_type) or []
        self._renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
        self._reverse = [m.reverse_transform() for m in self._renamings[::-1]]
        self._converters = [m for m in mapping if isinstance(m, WeightConverter)]
        self._apply = apply_renamings
        # Stacking converters: source patterns with one `*` each (the slice index), one MergeModulelist,
        # and with several sources a Concatenate of the stacked tensors.
        self._stacks = []
        for c in self._converters:
            ops = list(c.operations)
            sources = list(c.source_patterns)
            if not (sources and all(p.count("*") == 1 for p in sources) and ops
                    and isinstance(ops[0], MergeModulelist)):
                continue
            if len(ops) == 1 and len(sources) == 1:
                concat = None
            elif len(ops) == 2 and isinstance(ops[1], Concatenate) and len(sources) > 1:
                concat = ops[1].dim
            else:
                continue
            regexes = [re.compile(re.escape(p).replace(r"\*", r"(\d+)") + r"(?!\w)") for p in sources]
            self._stacks.append((c, regexes, ops[0].dim, concat))

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
        for converter, regexes, dim, concat in self._stacks:
            target, matched = converter.rename_source_key(model_key)
            if matched is None:
                continue
            for part, regex in enumerate(regexes):
                found = list(regex.finditer(key))
                if found:
                    m = found[-1]
                    return StackedSlice(target, int(m.group(1)), dim, m.span(1), part, len(regexes), concat)
            return None  # the renamings moved the slice index: cannot write the key back
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
        examples: dict[str, dict[int, str]] = {}  # target -> part -> a checkpoint key of that part
        for key, shape in shapes.items():
            s = self.stacked(key)
            if s is None:
                out[self.model_key(key)] = tuple(shape)
                continue
            stacks.setdefault(s.target, {})[(s.part, s.index)] = (key, tuple(shape))
            where.setdefault(s.target, s)
            examples.setdefault(s.target, {}).setdefault(s.part, key)
        for target, parts in stacks.items():
            s = where[target]
            count = max(j for _, j in parts) + 1
            if expected is not None and target in expected and len(expected[target]) > s.dim:
                count = max(count, expected[target][s.dim])
            missing = []
            for p in range(s.parts):
                if p not in examples[target]:  # a whole part is missing: name it from a sibling's key
                    sibling = self._sibling_key(examples[target], p)
                    missing += [sibling(j) for j in range(count)]
                    continue
                example = examples[target][p]
                span = self.stacked(example).span
                missing += [f"{example[: span[0]]}{j}{example[span[1]:]}" for j in range(count) if (p, j) not in parts]
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
            out[target] = s.merged_shape(shape, count)
        return out

    def _sibling_key(self, examples: dict[int, str], part: int):
        """Checkpoint keys of part `part` of a concatenated stack, from another part's key (for messages)."""
        known, key = next(iter(examples.items()))
        for converter, regexes, _, _ in self._stacks:
            if len(regexes) > part and regexes[known].search(key):
                other_prefix, other_suffix = converter.source_patterns[part].split("*")
                m = list(regexes[known].finditer(key))[-1]
                head = key[: m.start()]
                return lambda j: f"{head}{other_prefix}{j}{other_suffix}"
        return lambda j: f"{key} (part {part}, slice {j})"
