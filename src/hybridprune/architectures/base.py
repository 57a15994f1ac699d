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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from .errors import Unrepresentable  # noqa: F401  (re-exported)
from .moe import check_expert_alignment, check_routing
from .dims import (  # noqa: F401  (re-exported: the interface's vocabulary)
    ATTENTION, CONV, GDN, KIND_SEPARATOR, MAMBA, MLP, MOE, VARIANT_SEPARATOR, Dims, layer_type, unit_kinds,
)

if TYPE_CHECKING:  # the adapters describe models without torch: the command line checks plans before loading it
    import torch.nn as nn


class UnsupportedArchitecture(ValueError):
    """The model's architecture has no adapter, or uses a feature the adapter cannot prune yet."""


#: the scan chunk of a config that names none (`Adapter.scan_chunk`)
DEFAULT_SCAN_CHUNK = 128

#: tensor name -> shape
Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class UnitCache:
    """What one unit keeps for one sequence between generation steps, in elements: `per_token` grows with
    every token (attention keys and values, at the cache dtype), `conv` is a fixed convolution window (at
    the cache dtype) and `state` a fixed recurrent state (at the state dtype, float32 by default)."""

    per_token: int = 0
    conv: int = 0
    state: int = 0

    def __add__(self, other: UnitCache) -> UnitCache:
        return UnitCache(self.per_token + other.per_token, self.conv + other.conv, self.state + other.state)


@dataclass(frozen=True)
class UnitLayout:
    """One prunable sub-module shape, as data.

    - `kind`: the unit kind (MAMBA, ATTENTION, MLP); also the Scores group it is scored into;
    - `rules`: parameter name inside the unit -> the axis slicing each tensor dimension;
    - `hook`: module path inside the unit whose activation scores the unit (None: a unit with no axis
      of its own, which nothing scores), and `hook_on`: "input"
      (the module's input: down-projection or o_proj input) or "mamba_x" (the x slice of the
      Mamba in_proj output);
    - `count`: the exact number of parameters of one unit for given `Dims`;
    - `inactive`: how many of them a token does not use (the routed experts it is not sent to), so
      that active parameters per token are `count - inactive`;
    - `more_hooks`: further scored sites, (module path, hook_on, Scores group), e.g. a MoE block's
      shared expert;
    - `expert_forward`: for a unit hooked on "moe_experts", `(experts module, expert, x) ->
      (down-projection input, expert output)`, the one computation calibration repeats per expert;
    - `outputs`: hook_on names that score a slice of a module's output, `(output, Dims) -> [.., C]`
      (e.g. the value rows of a fused GDN input projection); sites sharing a Scores group add up;
    - `shapes`: the shape of every tensor of one unit (parameters and saved buffers) for given `Dims`,
      by name inside the unit: what a checkpoint of a config with these sizes must hold, so a written
      checkpoint is checked without building the model (`Adapter.expected_shapes`);
    - `cache`: what one unit keeps for generation for given `Dims` (`UnitCache`), as `count` states its
      parameters: the search's cost model and the memory forecasts sum it over the layers
      (`architectures.cache.cache_bytes`); None: the unit keeps nothing (an MLP, experts).
    """

    kind: str
    rules: Mapping[str, tuple]
    hook: str | None
    hook_on: str
    count: Callable[[Dims], int]
    inactive: Callable[[Dims], int] | None = None
    more_hooks: tuple[tuple[str, str, str], ...] = ()
    expert_forward: Callable | None = None
    outputs: Mapping[str, Callable] = field(default_factory=dict)
    shapes: Callable[[Dims], Shapes] | None = None
    cache: Callable[[Dims], UnitCache] | None = None


@dataclass(frozen=True)
class LayerSpec:
    """One decoder-layer type: its units (path prefix inside the layer + layout), its RMSNorms over
    the hidden size (they all feed hidden-channel scores and are sliced by "hidden"), and any other
    per-layer tensors with their rules, parameter count and shapes (`extra_rules`, `extra_count`,
    `extra_shapes`)."""

    units: tuple[tuple[str, UnitLayout], ...]
    norms: tuple[str, ...]
    extra_rules: Mapping[str, tuple] = field(default_factory=dict)
    extra_count: Callable[[Dims], int] | None = None
    extra_shapes: Callable[[Dims], Shapes] | None = None

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

    def shapes(self, dims: Dims) -> Shapes:
        """Every tensor of one layer of this type and its shape, by name inside the layer."""
        out = {f"{norm}.weight": (dims.hidden_size,) for norm in self.norms}
        for prefix, layout in self.units:
            if layout.shapes is None:
                raise NotImplementedError(f"the {layout.kind} layout under {prefix!r} gives no shapes")
            out.update({f"{prefix}{name}": shape for name, shape in layout.shapes(dims).items()})
        return {**out, **(self.extra_shapes(dims) if self.extra_shapes else {})}

    def cache(self, dims: Dims) -> UnitCache:
        """What one layer of this type keeps for generation: its units' caches."""
        total = UnitCache()
        for _, layout in self.units:
            if layout.cache is not None:
                total += layout.cache(dims)
        return total

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

    Axis names: "hidden" (global), "hidden3" (three hidden-wide segments, LFM2's in_proj); per layer `layer`: "mamba_in_proj", "mamba_conv", "mamba_heads",
    "mamba_channels", "ffn", "ffn_gate_up" (fused gate‖up rows), "attn_q" (query-head channels), "attn_heads" (one entry per query head),
    "attn_qkv" (a fused q ‖ k ‖ v projection's rows: query-head channels, then every K and V row kept whole),
    "attn_q_gate" (a gated attention's q_proj rows: query ‖ gate per head), the GDN axes of
    `pruning.slicing` ("gdn_qkv", "gdn_q", "gdn_k", "gdn_v", "gdn_heads", "gdn_channels", "gdn_qkvz", "gdn_ba"),
    "moe_experts" (routed experts: router rows, the leading axis of 3-D expert tensors), "moe_ffn",
    "moe_ffn_gate_up" (expert neurons, shared by every expert), "moe_shared_ffn" (the shared expert's
    neurons), "moe_input" (the experts' input: "hidden", or nothing when they work in a latent space).
    Stacked and per-head tensors are spelled in the grammar of `pruning.slicing` rather than given a
    name of their own: "a+b" (concatenated), "a*3" (three stacked copies), "attn_heads/head_width"
    (W rows per kept head; W a Dims field or extra), e.g. "hidden*3", "mamba_channels*2+mamba_bc+mamba_heads".
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
    #: the transformers Auto class that builds and loads this family's checkpoints (`build_model`)
    auto_class: ClassVar[str] = "AutoModelForCausalLM"
    #: the prefix of the layer list in state-dict keys, e.g. "model.layers."
    layers_prefix: ClassVar[str] = ""
    #: rules for keys outside the layers (embeddings, final norm, LM head)
    global_rules: ClassVar[dict[str, tuple]] = {}
    #: per layer type (see `unit_kinds`), the units and norms it holds
    layer_specs: ClassVar[dict[str, LayerSpec]] = {}
    #: unit kinds of which at least one must survive depth pruning (when the model has any)
    required_kinds: ClassVar[tuple[str, ...]] = ()
    #: model keys of parts the causal LM does not load but the output carries (a vision tower)
    carried_prefixes: ClassVar[tuple[str, ...]] = ()
    #: `Dims` axes this family cannot prune at all (`check_representable` refuses any change of them):
    #: the search space keeps them at their original size instead of proposing refused candidates
    fixed_axes: ClassVar[tuple[str, ...]] = ()
    #: the config field holding the chunk length of the mixers' chunked scan (`scan_chunk`)
    scan_chunk_field: ClassVar[str] = "chunk_size"

    def scan_chunk(self, config) -> int:
        """Positions per chunk of the Mamba2 chunked scan (the memory forecasts size its tensors with it):
        the config's `scan_chunk_field`, else 128."""
        return int(getattr(config, self.scan_chunk_field, None) or DEFAULT_SCAN_CHUNK)

    def logit_scale(self, config) -> float:
        """The factor the model's forward applies to the LM head's output (1: none). The chunked
        distillation loss applies the head itself, so it multiplies by this (`check_head` verifies it)."""
        return 1.0

    def cache_state_dtype(self, config) -> str:
        """The dtype of the recurrent (SSM) states in the generation cache: float32 unless the family's
        config sets another."""
        return "float32"

    def text_config(self, config):
        """The config `AutoModelForCausalLM` loads this checkpoint as: the config itself, or a
        vision-language wrapper's `text_config` (its scores and fingerprint are the language model's)."""
        return config

    def __init__(self, model_type: str | None = None) -> None:
        self.model_type = model_type or self.model_types[0]

    def check_supported(self, config) -> None:
        """Raise UnsupportedArchitecture for features of the family this adapter cannot prune yet."""

    #: the config's names of the MoE routing sizes (Dims field -> config field), for messages
    moe_config_names: dict[str, str] = {}
    #: experts of a routing group the router reads to score the group
    moe_group_top: int = 1

    def check_config(self, config) -> None:
        """Raise UnroutableConfig for a source config the model cannot run: a MoE router that cannot
        route (the checkpoint loader calls this once for every command, before building the model)."""
        if not self.moe_config_names:
            return

        check_routing(self.dims(config), self.moe_config_names, group_top=self.moe_group_top)

    def dropped_parts(self, config) -> tuple["DroppedPart", ...]:
        """Parts of this checkpoint that a pruned output leaves out (none by default); see DroppedPart."""
        return ()

    #: what the family's config class computes, for reading config.json without transformers
    #: (`config_view.ViewRules`); None: such configs are read by transformers
    config_view_rules: ClassVar = None

    #: config.json fields that transformers consumes on load as another field's value (alias -> field,
    #: e.g. LFM2's Hub `block_ff_dim` for `intermediate_size`); the config writer keeps them equal
    config_aliases: ClassVar[dict[str, str]] = {}

    def dims(self, config) -> Dims:
        raise NotImplementedError

    def checkpoint_renames(self, config) -> dict[str, str]:
        """Keys that transformers' `save_pretrained` writes under another name than the family's Hub
        checkpoints (its reverse renamings apply to every key they match), and the Hub's name; the
        exporter renames them. None by default."""
        return {}

    #: this family's config.json spellings of sizes, where they differ from Hugging Face's common names ->
    #: the plan field that sets the size, or the common name it stands for (`ssm_state_size`): a plan
    #: field spelled so is answered with the plan field (`pruning.plan_fields`); `config_aliases` count too
    config_spellings: ClassVar[dict[str, str]] = {}

    #: config.json fields only serving engines read (transformers keeps them as inert attributes), which
    #: `serving_config` may add: the writer compares the configs without them
    engine_only_fields: ClassVar[tuple[str, ...]] = ()

    def serving_config(self, raw: dict, config_class) -> dict:
        """`raw` (a config.json dict) spelled as the family's serving engines read it; as it is by
        default. The writer keeps the result only if it loads as the same config (checkpoint/config_style.py)."""
        return raw

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

    def expected_shapes(self, config) -> tuple[Shapes, set[str]]:
        """The model keys and shapes `from_pretrained` loads for `config` (parameters and saved buffers,
        from the layouts: no model is built), and the tied keys it fills from another (a tied LM head),
        which a checkpoint may hold or not. Equal to a model built from `config` (tests/test_stream_shapes.py)."""
        dims = self.dims(config)
        tied = {"lm_head.weight"} if dims.tied_embeddings else set()
        return self.layout_shapes(dims), tied

    def layout_shapes(self, dims: Dims) -> Shapes:
        """The model keys and shapes of a model with these sizes, less a tied LM head: the embedding, the
        final norm and the LM head (`global_rules`, as `outer_rules` writes them), then every layer's tensors."""
        h = dims.hidden_size
        out = {}
        for key, axes in self.global_rules.items():
            if key == "lm_head.weight":
                if not dims.tied_embeddings:
                    out[key] = (dims.vocab_size, h)
            elif axes == (None, "hidden"):
                out[key] = (dims.vocab_size, h)
            elif axes == ("hidden",):
                out[key] = (h,)
        for i, t in enumerate(dims.block_kinds):
            out.update({f"{self.layers_prefix}{i}.{name}": s for name, s in self.layer_spec(t).shapes(dims).items()})
        return out

    def build_model(self, config, dtype=None, *, init_weights: bool = True) -> nn.Module:
        """A fresh model for `config`, rebuilt so no derived attribute goes stale.

        `init_weights=False` skips the random initialisation (its tensors are left as allocated), for a
        model whose every weight is loaded next: on large models that initialisation is most of the
        cost of building. Buffers computed in the modules' constructors are built either way."""
        import transformers

        auto = getattr(transformers, self.auto_class)
        if init_weights:
            return auto.from_config(config, dtype=dtype)
        from transformers.initialization import no_init_weights

        with no_init_weights():
            model = auto.from_config(config, dtype=dtype)
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
                if layout.hook is None:
                    continue
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


def mamba_inner(dims: Dims) -> int:
    return dims.mamba_num_heads * dims.mamba_head_dim


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
