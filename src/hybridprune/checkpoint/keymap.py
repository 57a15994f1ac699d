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
    """A checkpoint tensor that transformers merges with its siblings into one model tensor on load.

    Stacked (a `MergeModulelist` conversion: Nemotron-H's per-expert `experts.{j}.up_proj.weight` become
    `experts.up_proj [E, F, H]`): it is slice `index` of the model tensor `target` along `dim`; `span` is
    where `index` is written in the checkpoint key, so an output can renumber it. Concatenated (a
    `Concatenate` conversion of several source names: Kimi Linear's `q_conv1d`/`k_conv1d`/`v_conv1d` into
    `conv1d`, its per-expert `w1`/`w3` into `gate_up_proj`; OLMo Hybrid's `q/k/v_conv1d`, stored at their own,
    unequal sizes): it is part `segment` of `segments` parts along `segment_dim` of the target (in the
    target's dimensions). A tensor can be both, or only one (`index`, `dim` and `span` None when it is not
    stacked)."""

    target: str
    index: int | None
    dim: int | None
    span: tuple[int, int] | None
    segment: int = 0
    segments: int = 1
    segment_dim: int | None = None

    def region(self, part_shape: tuple[int, ...], start: int | None = None) -> list[tuple[int, int] | None]:
        """Per dimension of the target: the range this tensor fills (None: the whole dimension). `start`:
        where this part begins along `segment_dim` (`KeyMap.segment_starts`); None: all parts are as wide."""
        rank = len(part_shape) + (self.dim is not None)
        out: list[tuple[int, int] | None] = [None] * rank
        if self.dim is not None:
            out[self.dim] = (self.index, self.index + 1)
        if self.segment_dim is not None:
            width = part_shape[self.part_dim(self.segment_dim)]
            lo = self.segment * width if start is None else start
            out[self.segment_dim] = (lo, lo + width)
        return out

    def part_dim(self, target_dim: int) -> int:
        """The dimension of this tensor that is `target_dim` of the target (not the stacking one)."""
        return target_dim - (self.dim is not None and target_dim > self.dim)

    def target_shape(self, part_shape: tuple[int, ...], count: int | None,
                     joined: int | None = None) -> tuple[int, ...]:
        """The target's shape from one part's: `count` slices stacked, `segments` parts concatenated (to
        `joined` along `segment_dim` when given, the parts' summed widths; else as many equal parts)."""
        shape = list(part_shape)
        if self.segment_dim is not None:
            d = self.part_dim(self.segment_dim)
            shape[d] = shape[d] * self.segments if joined is None else joined
        if self.dim is not None:
            shape.insert(self.dim, count)
        return tuple(shape)


def _key_regex(pattern: str) -> re.Pattern:
    """A source pattern of transformers' conversion mapping (regex escapes, `*` for the slice number)
    as a regex whose group 1 is the slice number."""
    plain = pattern.replace("\\.", ".")
    return re.compile(re.escape(plain).replace(r"\*", r"(\d+)") + r"(?!\w)")


def _across(shape: tuple[int, ...], s: StackedSlice) -> tuple[int, ...]:
    """`shape` without the concatenation axis: what every part of a merged tensor must share."""
    if s.segment_dim is None:
        return tuple(shape)
    d = s.part_dim(s.segment_dim)
    return tuple(shape[:d]) + tuple(shape[d + 1:])


class KeyMap:
    """Checkpoint key -> model key, with the renamings transformers applies on load for this model type.

    Conversions that stack per-expert tensors into one (`MergeModulelist`, read from transformers'
    own conversion mapping, as pinned data in `conversions`) or concatenate named parts (`Concatenate`) are understood too (`stacked`),
    so a checkpoint in the Hub's layout can be checked, fingerprinted and sliced tensor by tensor; any
    other conversion is reported by `needs_conversion` and refused by the streaming prune.
    """

    def __init__(self, model_type: str, converters_from: str | None = None) -> None:
        """`converters_from`: a model type whose merging conversions apply too, without its renamings (a
        vision-language wrapper's checkpoint merges its language model's per-expert tensors on load)."""
        from .conversions import conversions

        own = conversions(model_type)
        self._renamings = own.renamings
        self._reverse = own.reverse
        self._converters = list(own.converters)
        if converters_from not in (None, model_type):
            self._converters += conversions(converters_from).converters
        # Merging converters: each source pattern with at most one `*` (the slice number), a MergeModulelist
        # (stacking the slices) and/or a Concatenate of the source patterns' tensors (one part each).
        self._stacks = []
        for c in self._converters:
            ops = [name for name, _ in c.operations]
            merge = [dim for name, dim in c.operations if name == "MergeModulelist"]
            concat = [dim for name, dim in c.operations if name == "Concatenate"]
            stars = [p.count("*") for p in c.source_patterns]
            if (len(ops) != len(merge) + len(concat) or len(merge) > 1 or len(concat) > 1
                    or any(n != (1 if merge else 0) for n in stars) or (len(c.source_patterns) > 1) != bool(concat)
                    or (concat and merge and ops.index("MergeModulelist") > ops.index("Concatenate"))):
                continue
            regexes = {p: _key_regex(p) for p in c.source_patterns}
            self._stacks.append((c, regexes, merge[0] if merge else None, concat[0] if concat else None))
        # `stacked` of each key asked: a streaming prune asks it of every key several times (a large MoE
        # checkpoint has tens of thousands of per-expert keys)
        self._stacked: dict[str, StackedSlice | None] = {}

    def model_key(self, key: str) -> str:
        for renaming in self._renamings:  # transformers' `apply_renamings`: every renaming in turn
            key, _ = renaming.rename_source_key(key)
        return key

    def checkpoint_key(self, model_key: str) -> str:
        """The name `save_pretrained` gives a model key in this model type's checkpoints."""
        for renaming in self._reverse:
            model_key, _ = renaming.rename_source_key(model_key)
        return model_key

    def needs_conversion(self, key: str) -> bool:
        """True for keys that transformers merges or splits on load (e.g. per-expert MoE weights)."""
        model_key = self.model_key(key)
        return any(c.rename_source_key(model_key)[1] is not None for c in self._converters)

    def stacked(self, key: str) -> StackedSlice | None:
        """Where checkpoint tensor `key` lands in the model if transformers stacks or concatenates it with
        its siblings on load, else None."""
        if key not in self._stacked:
            self._stacked[key] = self._find_stacked(key)
        return self._stacked[key]

    def _find_stacked(self, key: str) -> StackedSlice | None:
        model_key = self.model_key(key)
        for converter, regexes, dim, concat_dim in self._stacks:
            target, matched = converter.rename_source_key(model_key)
            if matched is None or matched not in regexes:
                continue
            index = span = None
            if dim is not None:
                found = list(regexes[matched].finditer(key))
                if not found:  # the renamings moved the slice index: cannot write the key back
                    return None
                m = found[-1]
                index, span = int(m.group(1)), m.span(1)
            patterns = list(converter.source_patterns)
            return StackedSlice(target, index, dim, span, segment=patterns.index(matched), segments=len(patterns),
                                segment_dim=concat_dim)
        return None

    def sliceable(self, key: str) -> bool:
        """Whether a tensor-by-tensor reader can place `key` in the model: renamed only, or stacked."""
        return not self.needs_conversion(key) or self.stacked(key) is not None

    def model_shapes(self, shapes: Mapping[str, tuple[int, ...]],
                     expected: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, tuple[int, ...]]:
        """The model keys and shapes that checkpoint tensors (`shapes`, by checkpoint key) load into:
        renamed, and the slices of a stacked tensor merged into one entry. Raises
        CheckpointFormatError naming the checkpoint keys a stacked tensor lacks (gaps in its slice
        numbers, or fewer slices than `expected` has) or whose shapes disagree (concatenated parts may
        differ along the concatenation axis only)."""
        out: dict[str, tuple[int, ...]] = {}
        stacks: dict[str, dict[tuple[int | None, int], tuple[str, tuple[int, ...]]]] = {}
        where: dict[str, StackedSlice] = {}
        for key, shape in shapes.items():
            s = self.stacked(key)
            if s is None:
                out[self.model_key(key)] = tuple(shape)
                continue
            stacks.setdefault(s.target, {})[s.index, s.segment] = (key, tuple(shape))
            where.setdefault(s.target, s)
        for target, parts in stacks.items():
            s = where[target]
            example = parts[s.index, s.segment][0]
            count = None
            if s.dim is not None:
                count = max(j for j, _ in parts) + 1
                if expected is not None and target in expected and len(expected[target]) > s.dim:
                    count = max(count, expected[target][s.dim])
            missing = [self._sibling(example, s, j, part) for j in (range(count) if count is not None else [None])
                       for part in range(s.segments) if (j, part) not in parts]
            if missing:
                more = f" ({len(missing)} in all)" if len(missing) > 3 else ""
                raise CheckpointFormatError(
                    f"the checkpoint lacks {', '.join(missing[:3])}{more}: transformers "
                    f"{'stacks these per-expert tensors' if s.segments == 1 else 'merges these tensors'} into "
                    f"{target}, which needs all {len(parts) + len(missing)} of them. The checkpoint is incomplete; "
                    "download or export it again."
                )
            d = s.part_dim(s.segment_dim) if s.segment_dim is not None else None
            widths: dict[int, set[int]] = {}  # segment -> its widths along the concatenation axis
            for (_, segment), (_, shape) in parts.items():
                widths.setdefault(segment, set()).add(shape[d] if d is not None else 0)
            stored = sorted({shape for _, shape in parts.values()})
            if len({_across(shape, s) for shape in stored}) > 1 or any(len(w) > 1 for w in widths.values()):
                raise CheckpointFormatError(
                    f"the tensors merged into {target} differ in shape ({stored}): "
                    "the checkpoint is damaged or mixes two models"
                )
            joined = sum(w for (w,) in widths.values()) if d is not None else None
            out[target] = s.target_shape(parts[s.index, s.segment][1], count, joined)
        return out

    def segment_starts(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
        """For each checkpoint tensor (`shapes`, by checkpoint key) that transformers concatenates with its
        siblings: where it begins along the target's concatenation axis, from the stored widths of the parts
        before it (OLMo Hybrid's q/k/v convs are unequal; transformers' own save splits into equal parts)."""
        parts: dict[tuple[str, int | None], dict[int, str]] = {}
        where = {}
        for key in shapes:
            s = self.stacked(key)
            if s is not None and s.segment_dim is not None:
                parts.setdefault((s.target, s.index), {})[s.segment] = key
                where[key] = s
        out = {}
        for pieces in parts.values():
            start = 0
            for segment in sorted(pieces):
                key = pieces[segment]
                out[key] = start
                start += shapes[key][where[key].part_dim(where[key].segment_dim)]
        return out

    def _sibling(self, example: str, s: StackedSlice, index: int | None, segment: int) -> str:
        """The checkpoint key of part (`index`, `segment`) of the tensor that `example` (part of `s`) is merged into."""
        model_key = self.model_key(example)
        converter, regexes = next((c, r) for c, r, *_ in self._stacks if c.rename_source_key(model_key)[1] in r)
        patterns = list(converter.source_patterns)
        m = list(regexes[patterns[s.segment]].finditer(example))[-1]
        text = patterns[segment].replace("\\.", ".").replace("*", str(index))
        return f"{example[:m.start()]}{text}{example[m.end():]}"
