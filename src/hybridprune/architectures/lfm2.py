"""Liquid's short-convolution hybrids: LFM2 / LFM2.5 (`lfm2`), LFM2-MoE (`lfm2_moe`) and LFM3 (`lfm3`).

- Every layer is a mixer (a gated short convolution `conv` or GQA attention `self_attn`, from
  `layer_types`), then a `feed_forward`, behind `operator_norm` and `ffn_norm`; the final norm is
  `model.embedding_norm`. LFM3 adds `post_operator_norm`/`post_ffn_norm` (sandwich norms) when
  `use_sandwich_norm`.
- The short convolution has no heads: in_proj's three segments (B, C, x), the depthwise conv's channels
  and out_proj are all `hidden_size` wide, so hidden pruning cuts them together (layouts.SHORT_CONV).
- Attention: query heads pruned inside their KV groups, per-head `q_layernorm`/`k_layernorm` (LFM3:
  Qwen3's `q_norm`/`k_norm`, biases when `attention_bias`, and a sigmoid output gate `g_proj` with one
  row per query head, stored as `self_attn.gate_proj` on the Hub). `head_dim` is written explicitly:
  LFM2's attention would re-derive it from `hidden_size // num_attention_heads`.
- LFM2's FFN width is not `intermediate_size` when `block_auto_adjust_ff_dim` is set: the model builds
  `int(2·ff/3)`, times `block_ffn_dim_multiplier`, rounded up to `block_multiple_of` (as llama.cpp's
  converter and vLLM do). A pruned width is written exactly with the adjustment switched off, so every
  reader builds the same shapes. LFM2-MoE's dense layers and LFM3 read `intermediate_size` as it is.
- LFM2-MoE: the first `num_dense_layers` layers hold a dense FFN, the others a sigmoid-routed MoE
  (`gate`, fp32 `expert_bias`, gated experts); depth pruning rewrites `num_dense_layers` (dense layers
  stay first, so the kept ones are counted).
- Depth: `layer_types` (and LFM2's `full_attn_idxs` where the config has it) rewritten for the kept
  layers, keeping at least one attention and one convolution layer.
- Hub configs also carry remote-code-era aliases of the sizes (`block_dim`, `conv_dim`, `conv_dim_out`,
  `num_heads`, `block_ff_dim`); vLLM sizes the convolution from `conv_dim`. They are rewritten with
  the sizes they alias.
"""

from __future__ import annotations

import copy

from .base import (
    ATTENTION, CONV, MLP, MOE, Adapter, Dims, LayerSpec, Unrepresentable, UnsupportedArchitecture, layer_type,
    unit_kinds,
)
from .layouts import LFM2_MOE, SHORT_CONV, gated_mlp, outer_rules, qkvo_attention

_NORMS = ("operator_norm", "ffn_norm")
_MLP = gated_mlp("w1", "w3", "w2")
#: layer-type names in configs -> the mixer's kind (attention names ride along as the variant)
_CONV_NAME = "conv"
_ATTENTION_NAMES = ("full_attention", "sliding_attention")
#: config fields that alias a size (Hub configs of the remote-code era) -> the size's field
_SIZE_ALIASES = {"block_dim": "hidden_size", "conv_dim": "hidden_size", "conv_dim_out": "hidden_size",
                 "num_heads": "num_attention_heads"}
# LFM3's sandwich norms: sliced by hidden, present when the Dims extra "sandwich_norm" is 1
_SANDWICH = {"post_operator_norm.weight": ("hidden",), "post_ffn_norm.weight": ("hidden",)}


def _sandwich_count(d: Dims) -> int:
    return 2 * d.hidden_size * d.extra("sandwich_norm", 0)


def _sandwich_shapes(d: Dims) -> dict[str, tuple[int, ...]]:
    return {name: (d.hidden_size,) for name in _SANDWICH} if d.extra("sandwich_norm", 0) else {}


def auto_ff_dim(config) -> int:
    """The FFN width an LFM2 MLP builds from its config (Lfm2MLP, llama.cpp's `_add_feed_forward_length`)."""
    ff = config.intermediate_size
    if not config.block_auto_adjust_ff_dim:
        return ff
    ff = int(2 * ff / 3)
    if config.block_ffn_dim_multiplier is not None:
        ff = int(config.block_ffn_dim_multiplier * ff)
        multiple = config.block_multiple_of
        ff = multiple * ((ff + multiple - 1) // multiple)
    return ff


def _specs(attention, *, moe: bool) -> dict[str, LayerSpec]:
    extra = dict(extra_rules=_SANDWICH, extra_count=_sandwich_count, extra_shapes=_sandwich_shapes)
    mixers = {CONV: ("conv.", SHORT_CONV), ATTENTION: ("self_attn.", attention)}
    ffns = {MLP: ("feed_forward.", _MLP), **({MOE: ("feed_forward.", LFM2_MOE)} if moe else {})}
    return {layer_type(m, f): LayerSpec(units=(mixers[m], ffns[f]), norms=_NORMS, **extra)
            for m in mixers for f in ffns}


class Lfm2Adapter(Adapter):
    model_types = ("lfm2", "lfm2_moe", "lfm3")
    layers_prefix = "model.layers."
    global_rules = outer_rules("model.embed_tokens", "model.embedding_norm")
    #: the attention layout of each model type
    attention_of = {
        "lfm2": qkvo_attention(out="out_proj", qk_norm=True, qk_norm_names=("q_layernorm", "k_layernorm")),
        "lfm2_moe": qkvo_attention(out="out_proj", qk_norm=True, qk_norm_names=("q_layernorm", "k_layernorm")),
        "lfm3": qkvo_attention(bias="all", qk_norm=True, head_gate="g_proj"),
    }
    # transformers 5.24's cache needs an attention layer (`get_seq_length` raises on a cache of
    # convolution states only, even in a plain forward with use_cache=True); a convolution layer is kept
    # too, so that the output stays the hybrid its config describes rather than a plain transformer.
    required_kinds = (ATTENTION, CONV)
    _why_required = {
        ATTENTION: "transformers' cache for these models needs one (without it even a forward with use_cache fails)",
        CONV: "hybridprune keeps the hybrid a hybrid: without its short convolutions it is a plain transformer",
    }
    moe_config_names = {"num_moe_experts": "num_experts", "moe_top_k": "num_experts_per_tok",
                        "moe_n_group": "(one routing group)", "moe_topk_group": "(one routing group)"}
    #: Hub aliases that transformers consumes when it loads a config (config_style writes them back)
    config_aliases = {"block_ff_dim": "intermediate_size"}
    config_spellings = {"num_experts": "num_moe_experts", "moe_intermediate_size": "moe_ffn_hidden_size"}

    def __init__(self, model_type: str | None = None) -> None:
        super().__init__(model_type)
        self.layer_specs = _specs(self.attention_of[self.model_type], moe=self.model_type == "lfm2_moe")

    def check_supported(self, config) -> None:
        unknown = sorted({t for t in config.layer_types if t != _CONV_NAME and t not in _ATTENTION_NAMES})
        if unknown:
            raise UnsupportedArchitecture(f"unknown {self.model_type} layer types {unknown}; known: "
                                          f"{[_CONV_NAME, *_ATTENTION_NAMES]}")

    def _block_kinds(self, config) -> tuple[str, ...]:
        dense = getattr(config, "num_dense_layers", None)
        kinds = []
        for i, name in enumerate(config.layer_types):
            ffn = MOE if dense is not None and i >= dense else MLP
            kinds.append(layer_type(CONV, ffn) if name == _CONV_NAME else f"{layer_type(ATTENTION, ffn)}@{name}")
        return tuple(kinds)

    def dims(self, config) -> Dims:
        kinds = self._block_kinds(config)
        moe = any(MOE in unit_kinds(k) for k in kinds)
        has_mlp = any(MLP in unit_kinds(k) for k in kinds)
        nq = config.num_attention_heads
        lfm3 = self.model_type == "lfm3"
        extras = [("conv_L_cache", config.conv_L_cache), ("conv_bias", int(bool(config.conv_bias)))]
        if lfm3:
            extras += [("sandwich_norm", int(bool(config.use_sandwich_norm))),
                       ("attention_gate", int(bool(config.use_attention_gate)))]
        moe_fields = dict(num_moe_experts=config.num_experts, moe_ffn_hidden_size=config.moe_intermediate_size,
                          moe_top_k=config.num_experts_per_tok) if moe else {}
        return Dims(
            block_kinds=kinds,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            tied_embeddings=bool(config.tie_word_embeddings),
            ffn_hidden_size=(auto_ff_dim(config) if self.model_type == "lfm2" else config.intermediate_size)
            if has_mlp else None,
            num_attention_heads=nq,
            num_key_value_heads=config.num_key_value_heads,
            attention_head_dim=getattr(config, "head_dim", None) or config.hidden_size // nq,
            attention_bias=bool(getattr(config, "attention_bias", False)) if lfm3 else False,
            attention_qk_norm=True,
            extras=tuple(extras),
            **moe_fields,
        )

    def check_representable(self, dims: Dims, original: Dims | None = None) -> None:
        for kind in self.required_kinds:
            if original is not None and original.has_kind(kind) and not dims.has_kind(kind):
                raise Unrepresentable(
                    f"this plan removes every {kind} layer of this {self.model_type} model; "
                    f"{self._why_required[kind]}. Keep at least one {kind} layer (layers: {original.layers_of(kind)}).")
        super().check_representable(dims, original)

    #: vLLM sizes LFM2's blocks and short convolution from the Hub's `block_dim` and `conv_dim`
    #: (vllm/model_executor/models/lfm2.py:214, 256, 265, 450; vLLM 0.32) and fails without them;
    #: transformers' `Lfm2Config` has no such fields
    engine_only_fields = ("block_dim", "conv_dim")

    def serving_config(self, raw: dict, config_class) -> dict:
        """An LFM2 config with `block_dim` and `conv_dim` (= hidden_size, as the Hub's configs have them):
        vLLM reads them."""
        missing = [f for f in self.engine_only_fields if raw.get(f) is None]
        if self.model_type != "lfm2" or not missing or "hidden_size" not in raw:
            return raw
        return {**raw, **{f: raw["hidden_size"] for f in missing}}

    def make_config(self, config, dims: Dims):
        self.check_representable(dims)
        new = copy.deepcopy(config)
        new.hidden_size = dims.hidden_size
        new.num_attention_heads = dims.num_attention_heads
        derived = dims.hidden_size == dims.num_attention_heads * dims.attention_head_dim
        if getattr(config, "head_dim", None) is not None or not derived:
            new.head_dim = dims.attention_head_dim  # LFM2 would re-derive it as hidden_size // num_attention_heads
        new.num_hidden_layers = dims.num_layers
        names = [_CONV_NAME if CONV in unit_kinds(k) else k.split("@", 1)[1] for k in dims.block_kinds]
        new.layer_types = names
        if getattr(config, "full_attn_idxs", None) is not None:
            new.full_attn_idxs = [i for i, n in enumerate(names) if n != _CONV_NAME]
        if dims.ffn_hidden_size is not None and dims.ffn_hidden_size != self.dims(config).ffn_hidden_size:
            new.intermediate_size = dims.ffn_hidden_size
            if self.model_type == "lfm2":  # the exact width, not one the auto-adjust formula would change
                new.block_auto_adjust_ff_dim = False
        if self.model_type == "lfm2_moe":
            new.num_dense_layers = sum(MLP in unit_kinds(k) for k in dims.block_kinds)
            if dims.num_moe_experts is not None:
                new.num_experts = dims.num_moe_experts
                new.moe_intermediate_size = dims.moe_ffn_hidden_size
        for alias, size in _SIZE_ALIASES.items():
            if getattr(config, alias, None) is not None:
                setattr(new, alias, getattr(new, size))
        return type(config).from_dict(new.to_dict())
