"""The adapter interface: a uniform view of a Hugging Face model for the pruning algorithms.

Only adapters know module paths, parameter names and config fields. Everything else works on
`Dims` (the current sizes in the Minitron vocabulary), `Block`s (where to hook) and `ParamRule`s
(which axis each tensor dimension is sliced by).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch.nn as nn

# Block kinds the algorithms understand.
MAMBA, ATTENTION, MLP, MOE = "mamba", "attention", "mlp", "moe"


class UnsupportedArchitecture(ValueError):
    """The model's architecture has no adapter, or uses a feature the adapter cannot prune yet."""


class Unrepresentable(ValueError):
    """The target dimensions cannot be written as a config of this architecture."""


@dataclass(frozen=True)
class Dims:
    """Every size the pruning can change, plus the fixed ones the parameter count needs.

    Widths are global per block kind (stock HF configs cannot express per-layer widths).
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
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    attention_head_dim: int | None = None
    attention_bias: bool = False
    mlp_bias: bool = False

    @property
    def num_layers(self) -> int:
        return len(self.block_kinds)

    def layers_of(self, kind: str) -> list[int]:
        return [i for i, k in enumerate(self.block_kinds) if k == kind]

    def replace(self, **changes: Any) -> "Dims":
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["block_kinds"] = list(self.block_kinds)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Dims":
        d = dict(d)
        d["block_kinds"] = tuple(d["block_kinds"])
        return cls(**d)


@dataclass(frozen=True)
class Block:
    """One residual block: where its mixer's activations live, for hooks and depth scoring."""

    index: int
    kind: str
    module: nn.Module  # the whole residual block (skipping it = identity)
    pre_norm: nn.Module  # its output is the hidden-channel activation
    slots: dict[str, nn.Module] = field(default_factory=dict)
    # slots by kind: mamba -> in_proj; mlp -> down_proj; attention -> o_proj


@dataclass(frozen=True)
class ParamRule:
    """How one tensor is sliced: for each tensor dimension, the axis name that indexes it (or None).

    Axis names: "hidden" (global); per layer `layer`: "mamba_in_proj", "mamba_conv", "mamba_heads",
    "mamba_channels", "ffn", "attn_q" (query-head channels).
    """

    layer: int | None
    axes: tuple[str | None, ...]


class Adapter:
    """Base class of the architecture adapters.

    A subclass declares its layout in class attributes (state-dict prefixes, per-kind slicing rules,
    hook slots) and implements `dims`, `make_config` and, where needed, `check_representable`.
    """

    model_types: ClassVar[tuple[str, ...]] = ()
    #: the prefix of the block list in state-dict keys, e.g. "model.layers."
    layers_prefix: ClassVar[str] = ""
    #: rules for keys outside the blocks (embeddings, final norm, LM head)
    global_rules: ClassVar[dict[str, tuple]] = {}
    #: per block kind, rules keyed by the parameter name inside the block
    block_rules: ClassVar[dict[str, dict[str, tuple]]] = {}
    #: attribute name of a block's pre-norm, and per kind the module path of the hooked slot
    #: block kinds of which at least one must survive depth pruning (when the model has any)
    required_kinds: ClassVar[tuple[str, ...]] = ()
    pre_norm_name: ClassVar[str] = "norm"
    slot_paths: ClassVar[dict[str, str]] = {}

    def check_supported(self, config) -> None:
        """Raise UnsupportedArchitecture for features of the family this adapter cannot prune yet."""

    def dims(self, config) -> Dims:
        raise NotImplementedError

    def make_config(self, config, dims: Dims):
        """A new config for `dims` (block_kinds defines depth); raises Unrepresentable."""
        raise NotImplementedError

    def check_representable(self, dims: Dims, original: Dims | None = None) -> None:
        """Raise Unrepresentable if `dims` cannot be written as a config or would not run.

        `original` (the unpruned sizes) bounds the alternatives the error message suggests."""
        for kind in self.required_kinds:
            if original is not None and kind in original.block_kinds and kind not in dims.block_kinds:
                raise Unrepresentable(
                    f"this plan removes every {kind} block; {self.model_types[0]} models cannot run "
                    f"without one in the pinned transformers version. Keep at least one {kind} block."
                )

    def num_parameters(self, dims: Dims, *, embeddings: bool = True) -> int:
        """Exact number of distinct parameters of a model with these dimensions."""
        return count_parameters(dims, embeddings=embeddings)

    def build_model(self, config, dtype=None) -> nn.Module:
        """A fresh model for `config` (random weights), rebuilt so no derived attribute goes stale."""
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_config(config, dtype=dtype)

    def blocks(self, model: nn.Module) -> list[Block]:
        kinds = self.dims(model.config).block_kinds
        out = []
        for i, (module, kind) in enumerate(zip(model.base_model.layers, kinds)):
            slots = {}
            if kind in self.slot_paths:
                slots["slot"] = module.get_submodule(self.slot_paths[kind])
            out.append(Block(i, kind, module, getattr(module, self.pre_norm_name), slots))
        return out

    def param_rules(self, keys: list[str], dims: Dims) -> dict[str, ParamRule]:
        """The slicing rule of every key that an axis touches; other keys are copied unchanged."""
        rules = {}
        for key in keys:
            if key in self.global_rules:
                rules[key] = ParamRule(None, self.global_rules[key])
            elif key.startswith(self.layers_prefix):
                index, name = key[len(self.layers_prefix):].split(".", 1)
                axes = self.block_rules[dims.block_kinds[int(index)]].get(name)
                if axes is not None:
                    rules[key] = ParamRule(int(index), axes)
        return rules


def mamba_inner(dims: Dims) -> int:
    return dims.mamba_num_heads * dims.mamba_head_dim


def count_parameters(dims: Dims, *, embeddings: bool = True) -> int:
    """Analytic parameter count of a block-structured decoder, from dimensions alone.

    Covers the block kinds every adapter shares: pre-norm residual blocks with one mixer each
    (Mamba2 mixer, GQA attention, non-gated MLP), an embedding, a final norm and an LM head.
    `embeddings=False` leaves out the input embedding and the LM head.
    """
    h = dims.hidden_size
    total = h  # final norm
    if embeddings:
        total += dims.vocab_size * h * (1 if dims.tied_embeddings else 2)
    for kind in dims.block_kinds:
        total += h  # block pre-norm
        if kind == MAMBA:
            nh, inner = dims.mamba_num_heads, mamba_inner(dims)
            gn = dims.mamba_n_groups * dims.mamba_state_size
            proj_out = 2 * inner + 2 * gn + nh
            conv_dim = inner + 2 * gn
            total += proj_out * h + (proj_out if dims.mamba_proj_bias else 0)
            total += conv_dim * dims.mamba_conv_kernel + (conv_dim if dims.mamba_conv_bias else 0)
            total += 3 * nh  # dt_bias, A_log, D
            total += inner if dims.mamba_has_norm else 0
            total += inner * h + (h if dims.mamba_proj_bias else 0)
        elif kind == ATTENTION:
            hd = dims.attention_head_dim
            q, kv = dims.num_attention_heads * hd, dims.num_key_value_heads * hd
            total += (q + 2 * kv) * h + q * h
            if dims.attention_bias:
                total += q + 2 * kv + h
        elif kind == MLP:
            f = dims.ffn_hidden_size
            total += 2 * f * h + ((f + h) if dims.mlp_bias else 0)
        else:
            raise UnsupportedArchitecture(f"cannot count parameters of block kind {kind!r}")
    return total
