"""Dense transformer families shaped like Llama (attention + MLP in every layer), as data: one
`DenseFamily` per model type says its attention and MLP layouts, its hidden-size norms, where its
config keeps `head_dim` and which per-layer lists depth pruning slices.

- `gemma3_text` (Gemma 3 1B and the text model of 4B/12B/27B): four norms per layer (`input_layernorm`,
  `post_attention_layernorm`, `pre_feedforward_layernorm`, `post_feedforward_layernorm`; RMSNorms whose
  scale is 1 + weight), per-head q/k norms over `head_dim`, `head_dim` ≠ hidden / heads (a config field;
  Gemma3TextConfig still refuses `hidden_size % num_attention_heads != 0`),
  a gated GELU MLP, tied embeddings, 5:1 sliding:full attention by `layer_types`. The embeddings are
  scaled by √hidden_size, which transformers derives from the config: a pruned hidden size scales them
  by √(new hidden_size), not compensated.
- `olmo2` (OLMo 2), `olmo3` (OLMo 3): post-norm layers (`post_attention_layernorm`,
  `post_feedforward_layernorm`), `q_norm` over all query heads' channels and `k_norm` over all KV heads'
  (cut with the heads: removing a head changes the others' normalisation), OLMo 3's sliding / full
  attention by `layer_types`. `head_dim` is read with the fallback, so heads and hidden prune apart.
- `smollm3` (SmolLM3): Llama layers, every fourth without RoPE (`no_rope_layers`, 1 = RoPE, 0 = NoPE);
  depth pruning slices `no_rope_layers` with `layer_types`, so each kept layer keeps its position encoding.
- `granite` (Granite 3.x dense): Llama layers with µP multipliers, kept as they are; the forward divides the
  head's output by `logits_scaling`, which `logit_scale` says to the distillation.
- `seed_oss` (Seed-OSS): q/k/v biases (`attention_bias`) and an o_proj bias of its own (`attention_out_bias`).
- `nemotron` (Minitron 4B/8B): LayerNorm1P norms with biases (the final norm's too), a squared-ReLU up/down MLP,
  partial rotary (a share of `head_dim`, kept).
- `phi3` (Phi-3, Phi-4-mini): one fused `qkv_proj` (query heads, K, V rows: axis "attn_qkv") and a fused
  `gate_up_proj`; with LongRoPE factors, Phi3Config checks their length against hidden_size // heads, so
  that quotient must stay `head_dim`.
- `gemma3_text` with `final_logit_softcapping` set is refused: the chunked distillation loss rebuilds the logits
  as head · scale and cannot apply the tanh cap.

Query heads are pruned inside their KV group (KV heads stay); `head_dim` is kept. Where the config has
a `head_dim` field it is written; where the attention reads it with a fallback to
`hidden_size // num_attention_heads`, it is written only when that quotient no longer gives it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from .base import Adapter, Dims, LayerSpec, UnitLayout, Unrepresentable, UnsupportedArchitecture
from .layouts import GATED_MLP, UP_DOWN_MLP, fused_gated_mlp, fused_qkv_attention, outer_rules, qkvo_attention
from .llama import DECODER, check_hidden_multiple_of_heads, decoder_dims
from .olmo_hybrid import olmo_attention

PRE_NORMS = ("input_layernorm", "post_attention_layernorm")
#: OLMo 2 / 3: the norms sit after the attention and the MLP, on their outputs
POST_NORMS = ("post_attention_layernorm", "post_feedforward_layernorm")


@dataclass(frozen=True)
class DenseFamily:
    """What one dense model type is made of (see the module docstring)."""

    attention: UnitLayout
    #: the layer's norms over the hidden size (the first one's output scores the hidden channels)
    norms: tuple[str, ...] = PRE_NORMS
    mlp: UnitLayout = GATED_MLP
    #: per-head q/k norms over head_dim (`Dims.attention_qk_norm`)
    qk_norm: bool = False
    #: the config has a `head_dim` field (always written); else the attention falls back to
    #: hidden_size // num_attention_heads (written only when that no longer gives it)
    head_dim_field: bool = False
    #: the config class validates hidden_size % num_attention_heads == 0 even with head_dim given
    hidden_multiple_of_heads: bool = False
    #: config lists with one entry per layer, which depth pruning slices (carried in the layer type's
    #: variant, "attention+mlp@full_attention,0")
    layer_lists: tuple[str, ...] = ("layer_types",)
    #: the config field the forward divides the LM head's output by (Granite's µP `logits_scaling`)
    logit_divisor: str | None = None
    #: boolean config fields the layouts read as `Dims` extras (Seed-OSS's `attention_out_bias`)
    extras: tuple[str, ...] = ()
    #: the norms are LayerNorms with a bias over the hidden size, the final norm's too (Nemotron)
    norm_bias: bool = False
    #: the config may set `final_logit_softcapping`, which the chunked distillation loss does not apply
    final_softcap: bool = False


FAMILIES: dict[str, DenseFamily] = {
    "gemma3_text": DenseFamily(
        qkvo_attention(bias="all", qk_norm=True),
        norms=("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
               "post_feedforward_layernorm"),
        qk_norm=True, head_dim_field=True, hidden_multiple_of_heads=True, final_softcap=True),
    "olmo2": DenseFamily(olmo_attention(), norms=POST_NORMS),
    "olmo3": DenseFamily(olmo_attention(), norms=POST_NORMS),
    "smollm3": DenseFamily(qkvo_attention(bias="all"), layer_lists=("layer_types", "no_rope_layers")),
    "granite": DenseFamily(qkvo_attention(bias="all"), logit_divisor="logits_scaling"),
    "seed_oss": DenseFamily(qkvo_attention(bias="qkv", out_bias="attention_out_bias"), head_dim_field=True,
                            extras=("attention_out_bias",)),
    "nemotron": DenseFamily(qkvo_attention(bias="all"), mlp=UP_DOWN_MLP, head_dim_field=True, norm_bias=True),
    "phi3": DenseFamily(fused_qkv_attention(), mlp=fused_gated_mlp("gate_up_proj", "down_proj")),
}

#: the config class named in refusals
_CONFIG_CLASS = {"gemma3_text": "Gemma3TextConfig"}


class DenseAdapter(Adapter):
    model_types = tuple(FAMILIES)
    layers_prefix = "model.layers."
    global_rules = outer_rules("model.embed_tokens", "model.norm")

    def __init__(self, model_type: str | None = None) -> None:
        super().__init__(model_type)
        self.family = FAMILIES[self.model_type]
        f = self.family
        bias = {}
        if f.norm_bias:
            n = len(f.norms)
            bias = dict(extra_rules={f"{norm}.bias": ("hidden",) for norm in f.norms},
                        extra_count=lambda d: n * d.hidden_size,
                        extra_shapes=lambda d: {f"{norm}.bias": (d.hidden_size,) for norm in f.norms})
            self.global_rules = {**self.global_rules, "model.norm.bias": ("hidden",)}
        self.layer_specs = {DECODER: LayerSpec(units=(("self_attn.", f.attention), ("mlp.", f.mlp)), norms=f.norms,
                                               **bias)}

    def check_supported(self, config) -> None:
        cap = getattr(config, "final_logit_softcapping", None) if self.family.final_softcap else None
        if cap is not None:
            raise UnsupportedArchitecture(
                f"{self.model_type} with final_logit_softcapping={cap} is not supported: the forward caps the logits "
                "(cap · tanh(logits / cap)), but hybridprune's distillation and search rebuild the logits from the "
                "final hidden states through the LM head in chunks (head · logit_scale, a linear factor) and would "
                "not apply the cap, so the teacher's and student's distributions would be wrong. The units would "
                "need the LM head's logit transform to carry the softcap. Gemma 3's Hub checkpoints set it to null."
            )

    def logit_scale(self, config) -> float:
        """The forward divides the head's output by the family's `logit_divisor` field (Granite's µP)."""
        div = getattr(config, self.family.logit_divisor, None) if self.family.logit_divisor else None
        return 1.0 if div in (None, 0) else 1.0 / float(div)

    def num_parameters(self, dims: Dims, *, embeddings: bool = True) -> int:
        """The base count, plus the final LayerNorm's bias where the norms have one."""
        return super().num_parameters(dims, embeddings=embeddings) + (dims.hidden_size if self.family.norm_bias else 0)

    def _variants(self, config) -> list[str] | None:
        """Each layer's entries of the family's per-layer lists, joined ("full_attention,0"); None: no list."""
        lists = [list(v) for v in (getattr(config, f, None) for f in self.family.layer_lists) if v]
        return [",".join(map(str, entries)) for entries in zip(*lists)] if lists else None

    def _longrope(self, config) -> tuple:
        """("longrope", 1) where the config's rope parameters carry LongRoPE factors, whose length Phi3Config
        checks against hidden_size // num_attention_heads (`check_representable`)."""
        rope = (getattr(config, "rope_parameters", None) or {}) if self.model_type == "phi3" else {}
        return (("longrope", 1),) if isinstance(rope, dict) and rope.get("short_factor") else ()

    def dims(self, config) -> Dims:
        extras = tuple((f, int(bool(getattr(config, f, False)))) for f in self.family.extras) + self._longrope(config)
        return decoder_dims(config, self._variants(config), attention_qk_norm=self.family.qk_norm, extras=extras)

    def check_representable(self, dims: Dims, original: Dims | None = None) -> None:
        super().check_representable(dims, original)
        if self.family.hidden_multiple_of_heads:
            check_hidden_multiple_of_heads(dims, original, _CONFIG_CLASS[self.model_type])
        if dims.extra("longrope", 0) and dims.hidden_size // dims.num_attention_heads != dims.attention_head_dim:
            limit, hd = original or dims, dims.attention_head_dim
            heads = [n for n in range(dims.num_key_value_heads, limit.num_attention_heads + 1, dims.num_key_value_heads)
                     if dims.hidden_size // n == hd]
            hidden = list(range(dims.num_attention_heads * hd, min(limit.hidden_size, dims.num_attention_heads * (hd + 1) - 1) + 1))
            raise Unrepresentable(
                f"Phi3Config checks the length of the LongRoPE factors (rope_parameters short_factor / long_factor) "
                f"against hidden_size // num_attention_heads × partial_rotary_factor / 2, not head_dim: hidden_size="
                f"{dims.hidden_size} with {dims.num_attention_heads} query heads gives "
                f"{dims.hidden_size // dims.num_attention_heads}, not head_dim={hd}. Representable targets: with "
                f"hidden_size={dims.hidden_size}, num_attention_heads in {heads or 'none'}; with "
                f"{dims.num_attention_heads} query heads, hidden_size in {hidden[:12] or 'none'}."
            )

    def make_config(self, config, dims: Dims):
        self.check_representable(dims)
        new = copy.deepcopy(config)
        new.hidden_size = dims.hidden_size
        new.intermediate_size = dims.ffn_hidden_size
        new.num_attention_heads = dims.num_attention_heads
        new.num_hidden_layers = dims.num_layers
        derived = dims.hidden_size == dims.num_attention_heads * dims.attention_head_dim
        if self.family.head_dim_field or getattr(config, "head_dim", None) is not None or not derived:
            new.head_dim = dims.attention_head_dim
        if self._variants(config):
            entries = [t.split("@", 1)[1].split(",") for t in dims.block_kinds]
            present = [f for f in self.family.layer_lists if getattr(config, f, None)]
            for n, field in enumerate(present):
                kind = type(getattr(config, field)[0])
                setattr(new, field, [kind(e[n]) for e in entries])
        return type(config).from_dict(new.to_dict())


class Gemma3WrapperAdapter(Adapter):
    """The `gemma3` vision-language wrapper (`Gemma3ForConditionalGeneration`, Gemma 3 4B/12B/27B): refused,
    with the reason and what to prune instead."""

    model_types = ("gemma3",)

    def check_supported(self, config) -> None:
        raise UnsupportedArchitecture(
            "the gemma3 vision-language wrapper (Gemma3ForConditionalGeneration) is not supported yet: its "
            "language model (model.language_model.*) is a gemma3_text model, which hybridprune prunes, but the "
            "wrapper's multi_modal_projector.mm_input_projection_weight [vision hidden, text hidden] would need "
            "its columns cut with the kept hidden channels and the SigLIP tower carried and counted, which no "
            "adapter does for Gemma 3 yet. Prune a text-only gemma3_text checkpoint (Gemma 3 1B, or the "
            "language model saved alone with Gemma3ForCausalLM)."
        )
