"""The adapter interface: a uniform view of a Hugging Face model for the pruning algorithms.

Only adapters know module paths, parameter names and config fields. Everything else works on
`Dims` (the current sizes in the Minitron vocabulary), `Block`s (where to hook) and `ParamRule`s
(which axis each tensor dimension is sliced by).

Shapes are data. A `UnitLayout` (layouts.py) describes one prunable sub-module shape: its slicing
rules, the activation that scores it and its exact parameter count. A `LayerSpec` says which units a
decoder layer type holds (path prefix + layout) and which RMSNorms over the hidden size it has. A
layer type is named by the unit kinds it holds joined with "+" ("mamba", "attention+mlp",
"mamba+attention+mlp"), so `Dims.block_kinds` alone tells the algorithms which units every layer
has, and depth pruning removes whole layers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch.nn as nn

# Unit kinds the algorithms understand (a unit kind is also a Scores group).
MAMBA, ATTENTION, MLP, MOE = "mamba", "attention", "mlp", "moe"
#: joins unit kinds into a layer-type name: "mamba+mlp" holds a Mamba mixer and an MLP
KIND_SEPARATOR = "+"


#: separates a family's variant of a layer type, which depth pruning carries along
#: ("attention+mlp@sliding_attention": a Qwen3 layer with sliding-window attention)
VARIANT_SEPARATOR = "@"


def unit_kinds(layer_type: str) -> tuple[str, ...]:
    """The unit kinds a layer type holds, from its name ("attention+mlp" -> ("attention", "mlp"))."""
    return tuple(layer_type.split(VARIANT_SEPARATOR, 1)[0].split(KIND_SEPARATOR))


def layer_type(*kinds: str) -> str:
    return KIND_SEPARATOR.join(kinds)


class UnsupportedArchitecture(ValueError):
    """The model's architecture has no adapter, or uses a feature the adapter cannot prune yet."""


class Unrepresentable(ValueError):
    """The target dimensions cannot be written as a config of this architecture."""


@dataclass(frozen=True)
class Dims:
    """Every size the pruning can change, plus the fixed ones the parameter count needs.

    Widths are global per unit kind (stock HF configs cannot express per-layer widths).
    `block_kinds` is the per-layer type sequence (see `unit_kinds`); depth pruning removes entries.
    `fixed_layer_types`: layer types that depth pruning never removes (e.g. Zamba2's layers that call
    a shared block); `attention_qk_norm`: per-head q/k RMSNorms (Qwen3), which pruning never touches.
    """

    block_kinds: tuple[str, ...]
    vocab_size: int
    hidden_size: int
    tied_embeddings: bool = False
    ffn_hidden_size: int | None = None
    mamba_num_heads: int | None = None
    mamba_head_dim: int | None = None
    mamba_n_groups: int | None = None
    mamba_state_size: int | None = None
    mamba_conv_kernel: int | None = None
    mamba_proj_bias: bool = False
    mamba_conv_bias: bool = True
    mamba_has_norm: bool = True
    mamba_out_proj_bias: bool | None = None  # None: the same as mamba_proj_bias
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    attention_head_dim: int | None = None
    attention_bias: bool = False
    mlp_bias: bool = False
    attention_qk_norm: bool = False
    #: MoE blocks: routed experts, their FFN width (one for every expert), the shared expert's width
    #: (None: no shared expert) and the latent size the experts work in (None: they read `hidden_size`)
    num_moe_experts: int | None = None
    moe_ffn_hidden_size: int | None = None
    moe_shared_expert_intermediate_size: int | None = None
    moe_latent_size: int | None = None
    #: routing: experts per token, routing groups (kept experts stay in their group, every group the
    #: same size) and how many groups each token may use
    moe_top_k: int | None = None
    moe_n_group: int = 1
    moe_topk_group: int = 1
    fixed_layer_types: tuple[str, ...] = ()
    #: family-specific fixed quantities the adapter needs to count parameters (name, value) pairs
    extras: tuple[tuple[str, int], ...] = ()

    def extra(self, name: str, default: int | None = None) -> int | None:
        return dict(self.extras).get(name, default)

    @property
    def num_layers(self) -> int:
        return len(self.block_kinds)

    def has_kind(self, kind: str) -> bool:
        """Whether any layer holds a unit of `kind`."""
        return any(kind in unit_kinds(t) for t in self.block_kinds)

    def layers_of(self, kind: str) -> list[int]:
        """The layers holding a unit of `kind` (a Bamba layer holds both a mixer and an MLP)."""
        return [i for i, t in enumerate(self.block_kinds) if kind in unit_kinds(t)]

    def count_of(self, kind: str) -> int:
        return len(self.layers_of(kind))

    def replace(self, **changes: Any) -> "Dims":
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["block_kinds"] = list(self.block_kinds)
        d["fixed_layer_types"] = list(self.fixed_layer_types)
        d["extras"] = [list(pair) for pair in self.extras]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Dims":
        d = dict(d)
        d["block_kinds"] = tuple(d["block_kinds"])
        d["fixed_layer_types"] = tuple(d.get("fixed_layer_types", ()))
        d["extras"] = tuple(tuple(pair) for pair in d.get("extras", ()))
        return cls(**d)


@dataclass(frozen=True)
class UnitLayout:
    """One prunable sub-module shape, as data.

    - `kind`: the unit kind (MAMBA, ATTENTION, MLP); also the Scores group it is scored into;
    - `rules`: parameter name inside the unit -> the axis slicing each tensor dimension;
    - `hook`: module path inside the unit whose activation scores the unit, and `hook_on`: "input"
      (the module's input: down-projection or o_proj input) or "mamba_x" (the x slice of the
      Mamba in_proj output);
    - `count`: the exact number of parameters of one unit for given `Dims`;
    - `inactive`: how many of them a token does not use (the routed experts it is not sent to), so
      that active parameters per token are `count - inactive`;
    - `more_hooks`: further scored sites, (module path, hook_on, Scores group), e.g. a MoE block's
      shared expert;
    - `expert_forward`: for a unit hooked on "moe_experts", `(experts module, expert, x) ->
      (down-projection input, expert output)`, the one computation calibration repeats per expert.
    """

    kind: str
    rules: Mapping[str, tuple]
    hook: str
    hook_on: str
    count: Callable[[Dims], int]
    inactive: Callable[[Dims], int] | None = None
    more_hooks: tuple[tuple[str, str, str], ...] = ()
    expert_forward: Callable | None = None


@dataclass(frozen=True)
class LayerSpec:
    """One decoder-layer type: its units (path prefix inside the layer + layout), its RMSNorms over
    the hidden size (they all feed hidden-channel scores and are sliced by "hidden"), and any other
    per-layer tensors with their rules and parameter count (`extra_rules`, `extra_count`)."""

    units: tuple[tuple[str, UnitLayout], ...]
    norms: tuple[str, ...]
    extra_rules: Mapping[str, tuple] = field(default_factory=dict)
    extra_count: Callable[[Dims], int] | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(layout.kind for _, layout in self.units)

    def rules(self) -> dict[str, tuple]:
        out = {f"{norm}.weight": ("hidden",) for norm in self.norms}
        for prefix, layout in self.units:
            out.update({f"{prefix}{name}": axes for name, axes in layout.rules.items()})
        out.update(self.extra_rules)
        return out

    def num_parameters(self, dims: Dims) -> int:
        total = len(self.norms) * dims.hidden_size
        total += sum(layout.count(dims) for _, layout in self.units)
        return total + (self.extra_count(dims) if self.extra_count else 0)

    def num_inactive(self, dims: Dims) -> int:
        """Parameters of this layer that one token does not use (unselected routed experts)."""
        return sum(layout.inactive(dims) for _, layout in self.units if layout.inactive is not None)


@dataclass(frozen=True)
class UnitSite:
    """Where one unit of a live model is hooked: `module`'s input, Mamba x slice or routed experts
    (`hook_on`); `group` is the Scores group it feeds (None: the unit kind's own group)."""

    kind: str
    module: nn.Module
    hook_on: str
    group: str | None = None
    layout: "UnitLayout | None" = None


@dataclass(frozen=True)
class Block:
    """One decoder layer of a live model, for hooks and depth scoring.

    `module` is the whole residual layer (skipping it = identity); `norms` its RMSNorms over the hidden
    size (their outputs are the hidden-channel activations); `units` its prunable units."""

    index: int
    kind: str
    module: nn.Module
    norms: tuple[nn.Module, ...]
    units: tuple[UnitSite, ...] = ()

    @property
    def pre_norm(self) -> nn.Module:
        return self.norms[0]


@dataclass(frozen=True)
class ParamRule:
    """How one tensor is sliced: for each tensor dimension, the axis name that indexes it (or None).

    Axis names: "hidden" (global); per layer `layer`: "mamba_in_proj", "mamba_conv", "mamba_heads",
    "mamba_channels", "ffn", "ffn_gate_up" (fused gate‖up rows), "attn_q" (query-head channels),
    "moe_experts" (routed experts: router rows, the leading axis of 3-D expert tensors), "moe_ffn",
    "moe_ffn_gate_up" (expert neurons, shared by every expert), "moe_shared_ffn" (the shared expert's
    neurons), "moe_input" (the experts' input: "hidden", or nothing when they work in a latent space).
    """

    layer: int | None
    axes: tuple[str | None, ...]


class Adapter:
    """Base class of the architecture adapters.

    A subclass declares its layout in class attributes (state-dict prefixes, global slicing rules,
    one `LayerSpec` per layer type) and implements `dims`, `make_config` and, where needed,
    `check_representable`.
    """

    model_types: ClassVar[tuple[str, ...]] = ()
    #: the prefix of the layer list in state-dict keys, e.g. "model.layers."
    layers_prefix: ClassVar[str] = ""
    #: rules for keys outside the layers (embeddings, final norm, LM head)
    global_rules: ClassVar[dict[str, tuple]] = {}
    #: per layer type (see `unit_kinds`), the units and norms it holds
    layer_specs: ClassVar[dict[str, LayerSpec]] = {}
    #: unit kinds of which at least one must survive depth pruning (when the model has any)
    required_kinds: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model_type: str | None = None) -> None:
        self.model_type = model_type or self.model_types[0]

    def check_supported(self, config) -> None:
        """Raise UnsupportedArchitecture for features of the family this adapter cannot prune yet."""

    def dropped_parts(self, config) -> tuple["DroppedPart", ...]:
        """Parts of this checkpoint that a pruned output leaves out (none by default); see DroppedPart."""
        return ()

    def dims(self, config) -> Dims:
        raise NotImplementedError

    def make_config(self, config, dims: Dims):
        """A new config for `dims` (block_kinds defines depth); raises Unrepresentable."""
        raise NotImplementedError

    def check_representable(self, dims: Dims, original: Dims | None = None) -> None:
        """Raise Unrepresentable if `dims` cannot be written as a config or would not run.

        `original` (the unpruned sizes) bounds the alternatives the error message suggests."""
        for kind in self.required_kinds:
            if original is not None and original.has_kind(kind) and not dims.has_kind(kind):
                raise Unrepresentable(
                    f"this plan removes every {kind} block; {self.model_types[0]} models cannot run "
                    f"without one in the pinned transformers version. Keep at least one {kind} block."
                )
        check_expert_alignment(dims, original)
        if original is not None:
            for t in original.fixed_layer_types:
                if dims.block_kinds.count(t) != original.block_kinds.count(t):
                    droppable = [i for i, k in enumerate(original.block_kinds) if k not in original.fixed_layer_types]
                    raise Unrepresentable(
                        f"{self.model_types[0]} layers of type {t!r} call shared blocks whose weights and "
                        f"per-call-site adapters are laid out by call order, so depth pruning cannot remove "
                        f"them. Layers that can be dropped: {droppable or 'none'}."
                    )

    def num_parameters(self, dims: Dims, *, embeddings: bool = True) -> int:
        """Exact number of distinct parameters of a model with these dimensions."""
        total = dims.hidden_size  # final norm
        if embeddings:
            total += dims.vocab_size * dims.hidden_size * (1 if dims.tied_embeddings else 2)
        return total + sum(self.layer_spec(t).num_parameters(dims) for t in dims.block_kinds)

    def num_active_parameters(self, dims: Dims, *, embeddings: bool = True) -> int:
        """Parameters one token uses: all of them but the routed experts it is not sent to
        (`num_experts_per_tok` of `num_moe_experts` in every MoE layer). Equals `num_parameters` for a
        dense model."""
        inactive = sum(self.layer_spec(t).num_inactive(dims) for t in dims.block_kinds)
        return self.num_parameters(dims, embeddings=embeddings) - inactive

    def build_model(self, config, dtype=None, *, init_weights: bool = True) -> nn.Module:
        """A fresh model for `config`, rebuilt so no derived attribute goes stale.

        `init_weights=False` skips the random initialisation (its tensors are left as allocated), for a
        model whose every weight is loaded next: on large models that initialisation is most of the
        cost of building. Buffers computed in the modules' constructors are built either way."""
        from transformers import AutoModelForCausalLM

        if init_weights:
            return AutoModelForCausalLM.from_config(config, dtype=dtype)
        from transformers.initialization import no_init_weights

        with no_init_weights():
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        model.tie_weights()
        return model

    def layer_spec(self, layer_type: str) -> LayerSpec:
        """The spec of a layer type (a variant after "@" shares its base type's spec)."""
        try:
            return self.layer_specs[layer_type.split(VARIANT_SEPARATOR, 1)[0]]
        except KeyError:
            raise UnsupportedArchitecture(
                f"{self.model_types[0]} has no layer type {layer_type!r}; known: {sorted(self.layer_specs)}"
            ) from None

    def unit_owners(self, dims: Dims) -> dict[tuple[str, int], int]:
        """Units shared between layers: (unit kind, layer) -> the layer that owns the shared weights.

        Calibration scores every call site into the owner's entry, and selection gives every layer
        of a shared unit the owner's kept indices, so the sharing stays consistent."""
        return {}

    def layers(self, model: nn.Module):
        """The decoder layers of a live model, in order."""
        return model.base_model.layers

    def blocks(self, model: nn.Module) -> list[Block]:
        kinds = self.dims(model.config).block_kinds
        out = []
        for i, (module, t) in enumerate(zip(self.layers(model), kinds)):
            spec = self.layer_spec(t)
            norms = tuple(module.get_submodule(n) for n in spec.norms)
            units = []
            for prefix, layout in spec.units:
                units.append(UnitSite(layout.kind, module.get_submodule(f"{prefix}{layout.hook}"), layout.hook_on,
                                      layout=layout))
                units += [UnitSite(layout.kind, module.get_submodule(f"{prefix}{path}"), hook_on, group, layout)
                          for path, hook_on, group in layout.more_hooks]
            units = tuple(units)
            out.append(Block(i, t, module, norms, units))
        return out

    def param_rules(self, keys: list[str], dims: Dims) -> dict[str, ParamRule]:
        """The slicing rule of every key that an axis touches; other keys are copied unchanged."""
        rules = {}
        by_type = {t: self.layer_spec(t).rules() for t in set(dims.block_kinds)}
        for key in keys:
            if key in self.global_rules:
                rules[key] = ParamRule(None, self.global_rules[key])
            elif key.startswith(self.layers_prefix):
                index, name = key[len(self.layers_prefix):].split(".", 1)
                axes = by_type[dims.block_kinds[int(index)]].get(name)
                if axes is not None:
                    rules[key] = ParamRule(int(index), axes)
        return rules


#: transformers runs routed experts with grouped matrix multiplies (`torch._grouped_mm`, on CPU and
#: GPU), which need 16-byte aligned rows: widths the experts read or write must be multiples of 8
#: (bf16) elements.
EXPERT_ALIGNMENT = 8


def expert_widths(dims: Dims) -> dict[str, int]:
    """The widths that lay out the rows of the 3-D expert tensors: the expert FFN, and the hidden size
    unless the experts work in a latent space."""
    widths = {"moe_ffn_hidden_size": dims.moe_ffn_hidden_size}
    if dims.moe_latent_size is None:
        widths["hidden_size"] = dims.hidden_size
    return widths


def check_expert_alignment(dims: Dims, original: Dims | None = None) -> None:
    if not dims.has_kind(MOE):
        return
    for name, value in expert_widths(dims).items():
        if value % EXPERT_ALIGNMENT:
            top = getattr(original or dims, name)
            valid = list(range(EXPERT_ALIGNMENT, top + 1, EXPERT_ALIGNMENT))
            shown = valid if len(valid) <= 8 else [*valid[:3], "...", *valid[-3:]]
            raise Unrepresentable(
                f"{name}={value} is not a multiple of {EXPERT_ALIGNMENT}: transformers runs MoE experts with "
                f"grouped matrix multiplies that need 16-byte aligned rows, so the pruned model would not run. "
                f"Valid values: multiples of {EXPERT_ALIGNMENT} ({', '.join(map(str, shown))})")


def mamba_inner(dims: Dims) -> int:
    return dims.mamba_num_heads * dims.mamba_head_dim


def count_parameters(dims: Dims, *, embeddings: bool = True, model_type: str | None = None) -> int:
    """Analytic parameter count of a model from its dimensions alone.

    `model_type` picks the family's layer layouts (default: Nemotron-H's one-mixer-per-layer blocks).
    `embeddings=False` leaves out the input embedding and the LM head.
    """
    from . import ADAPTERS

    for cls in ADAPTERS:
        if (model_type or "nemotron_h") in cls.model_types:
            return cls().num_parameters(dims, embeddings=embeddings)
    raise UnsupportedArchitecture(f"no adapter for model type {model_type!r}")


@dataclass(frozen=True)
class DroppedPart:
    """A part of a checkpoint that pruning leaves out of its output rather than refusing the checkpoint,
    e.g. Nemotron-H's multi-token-prediction layers: transformers never loads them, so they are not
    scored, and no pruned config could describe them at the new sizes.

    `key_prefixes`: model keys (after transformers' renamings) of its tensors, dropped by the streaming
    prune and left out of fingerprints; `description`: what it is, for the warning and
    `hybridprune.json`. The adapter's `make_config` writes the output config without it.
    """

    key_prefixes: tuple[str, ...]
    description: str

    def holds(self, model_key: str) -> bool:
        return model_key.startswith(self.key_prefixes)
