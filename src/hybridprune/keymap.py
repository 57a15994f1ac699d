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

    A `Concatenate` conversion joins several sources into one tensor (Qwen's per-expert `gate_proj` and
    `up_proj` into `gate_up_proj`, OLMo Hybrid's `q_conv1d`, `k_conv1d`, `v_conv1d` into `conv1d`): the
    tensor is then piece `part` of `parts` along the model tensor's dim `concat_dim`. A piece that is
    only concatenated, not stacked, has `index`, `dim` and `span` None."""

    target: str
    index: int | None
    dim: int | None
    span: tuple[int, int] | None
    part: int = 0
    parts: int = 1
    concat_dim: int | None = None

    @property
    def piece_concat_dim(self) -> int | None:
        """The dim of this checkpoint tensor along which it is concatenated with its siblings."""
        if self.concat_dim is None:
            return None
        return self.concat_dim - (1 if self.dim is not None and self.dim < self.concat_dim else 0)


class KeyMap:
    """Checkpoint key -> model key, with the renamings transformers applies on load for this model type.

    Conversions that stack per-expert tensors into one (`MergeModulelist`, read from transformers'
    own conversion mapping) are understood too (`stacked`), so a checkpoint in the Hub's per-expert
    layout can be checked, fingerprinted and sliced tensor by tensor; any other conversion is
    reported by `needs_conversion` and refused by the streaming prune.
    """

    def __init__(self, model_type: str, converters_from: str | None = None) -> None:
        """`converters_from`: a model type whose merging conversions apply too, without its renamings (a
        vision-language wrapper's checkpoint merges its language model's per-expert tensors on load)."""
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
        from transformers.core_model_loading import (
            Concatenate, MergeModulelist, WeightConverter, WeightRenaming, apply_renamings,
        )

        mapping = get_checkpoint_conversion_mapping(model_type) or []
        self._renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
        self._reverse = [m.reverse_transform() for m in self._renamings[::-1]]
        self._converters = [m for m in mapping if isinstance(m, WeightConverter)]
        if converters_from not in (None, model_type):
            self._converters += [m for m in get_checkpoint_conversion_mapping(converters_from) or []
                                 if isinstance(m, WeightConverter) and not isinstance(m, WeightRenaming)]
        self._apply = apply_renamings
        # Stacking and concatenating converters: a MergeModulelist over sources with one `*` (the slice
        # index) each, a Concatenate of several sources, or the one followed by the other.
        self._stacks = []
        for c in self._converters:
            ops = list(c.operations)
            kinds = [type(op) for op in ops]
            if kinds not in ([MergeModulelist], [MergeModulelist, Concatenate], [Concatenate]):
                continue
            stack = ops[0].dim if kinds[0] is MergeModulelist else None
            concat = ops[-1].dim if kinds[-1] is Concatenate else None
            if any(p.count("*") != (1 if stack is not None else 0) for p in c.source_patterns):
                continue
            if concat is None and len(c.source_patterns) != 1:
                continue
            for part, source in enumerate(c.source_patterns):
                pattern = re.escape(source).replace(r"\*", r"(\d+)") + r"(?!\w)"
                self._stacks.append((c, re.compile(pattern), stack, part, len(c.source_patterns), concat))

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
        for converter, regex, dim, part, parts, concat in self._stacks:
            target, matched = converter.rename_source_key(model_key)
            if matched is None:
                continue
            found = list(regex.finditer(key))
            if not found:  # another source of this converter, or the renamings moved the slice index
                continue
            m = found[-1]
            if dim is None:
                return StackedSlice(target, None, None, None, part, parts, concat)
            return StackedSlice(target, int(m.group(1)), dim, m.span(1), part, parts, concat)
        return None

    def sliceable(self, key: str) -> bool:
        """Whether a tensor-by-tensor reader can place `key` in the model: renamed only, or stacked."""
        return not self.needs_conversion(key) or self.stacked(key) is not None

    @staticmethod
    def _stacked_shape(target: str, s: StackedSlice, parts: dict, expected) -> tuple[int, ...]:
        """The shape of one concatenation part of `target`: its slices (index -> (key, shape)) stacked."""
        if s.dim is None:
            return next(iter(parts.values()))[1]
        example = parts[min(parts)][0]
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
        return shape[: s.dim] + (count,) + shape[s.dim:]

    def model_shapes(self, shapes: Mapping[str, tuple[int, ...]],
                     expected: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, tuple[int, ...]]:
        """The model keys and shapes that checkpoint tensors (`shapes`, by checkpoint key) load into:
        renamed, and the slices of a stacked tensor merged into one entry. Raises
        CheckpointFormatError naming the checkpoint keys a stacked tensor lacks (gaps in its slice
        numbers, or fewer slices than `expected` has) or whose shapes disagree."""
        out: dict[str, tuple[int, ...]] = {}
        stacks: dict[str, dict[int, tuple[str, tuple[int, ...]]]] = {}
        pieces: dict[str, dict[int, dict]] = {}  # target -> part -> slice index (None) -> (key, shape)
        where: dict[str, StackedSlice] = {}
        for key, shape in shapes.items():
            s = self.stacked(key)
            if s is None:
                out[self.model_key(key)] = tuple(shape)
                continue
            pieces.setdefault(s.target, {}).setdefault(s.part, {})[s.index] = (key, tuple(shape))
            where.setdefault(s.target, s)
        for target, by_part in pieces.items():
            s = where[target]
            merged = {part: self._stacked_shape(target, s, parts, expected) for part, parts in sorted(by_part.items())}
            if len(merged) < s.parts:
                example = next(iter(next(iter(by_part.values())).values()))[0]
                raise CheckpointFormatError(
                    f"the checkpoint has only {len(merged)} of the {s.parts} tensors transformers concatenates "
                    f"into {target} (e.g. {example}); it is incomplete: download or export it again")
            first = merged[min(merged)]
            if s.concat_dim is None:
                out[target] = first
                continue
            if any(len(m) != len(first) or any(a != b for d, (a, b) in enumerate(zip(m, first)) if d != s.concat_dim)
                   for m in merged.values()):
                raise CheckpointFormatError(f"the tensors concatenated into {target} do not fit together "
                                            f"({list(merged.values())}): the checkpoint is damaged")
            joined = sum(m[s.concat_dim] for m in merged.values())
            out[target] = first[: s.concat_dim] + (joined,) + first[s.concat_dim + 1:]
        return out
