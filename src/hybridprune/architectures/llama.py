"""Llama-family transformers (`llama`, `mistral`, `qwen2`, `qwen3`): every layer is attention + a
gated MLP behind two RMSNorms, the classic Minitron case.

- Query heads are pruned inside their KV group (KV heads stay); `head_dim` is written explicitly so
  that hidden pruning does not re-derive it as `hidden_size // num_attention_heads`.
- `LlamaConfig` also refuses `hidden_size % num_attention_heads != 0`, even with an explicit head_dim.
- Qwen2 has q/k/v biases (none on o_proj); Qwen3 has per-head q_norm/k_norm over head_dim (never
  pruned) and a `layer_types` list (full / sliding attention) that depth pruning slices: the variant
  rides on the layer type name ("attention+mlp@sliding_attention").
- Tied embeddings (SmolLM2) are one matrix: slicing the embedding slices the LM head.
"""

from __future__ import annotations

import copy

from .base import ATTENTION, MLP, Adapter, Dims, LayerSpec, Unrepresentable, layer_type
from .layouts import GATED_MLP, qkvo_attention, outer_rules

DECODER = layer_type(ATTENTION, MLP)
_NORMS = ("input_layernorm", "post_attention_layernorm")


def _spec(attention) -> LayerSpec:
    return LayerSpec(units=(("self_attn.", attention), ("mlp.", GATED_MLP)), norms=_NORMS)


def check_hidden_multiple_of_heads(dims: Dims, original: Dims | None, config_class: str) -> None:
    """Refuse, with the representable targets, the sizes a config class that validates
    `hidden_size % num_attention_heads == 0` (even beside an explicit head_dim) cannot hold."""
    if dims.hidden_size % dims.num_attention_heads == 0:
        return
    limit = original or dims
    kv = dims.num_key_value_heads
    heads = [n for n in range(kv, limit.num_attention_heads + 1, kv) if dims.hidden_size % n == 0]
    hidden = [h for h in range(dims.num_attention_heads, limit.hidden_size + 1, dims.num_attention_heads)]
    raise Unrepresentable(
        f"{config_class} needs hidden_size to be a multiple of num_attention_heads; hidden_size="
        f"{dims.hidden_size} with {dims.num_attention_heads} query heads is not. Representable targets: "
        f"with hidden_size={dims.hidden_size}, num_attention_heads in {heads or 'none'}; with "
        f"{dims.num_attention_heads} query heads, hidden_size in the multiples of "
        f"{dims.num_attention_heads} up to {limit.hidden_size}: {hidden[-12:]}."
    )


def decoder_dims(config, variants: list[str] | None, **fields) -> Dims:
    """The Dims of an attention + MLP decoder from its config's Llama-style fields: one layer kind per layer
    (with its `variants`, e.g. sliding / full attention, where the config lists them); `fields` add to or
    override what these fields give (a family's biases, q/k norms, extras)."""
    kinds = tuple(f"{DECODER}@{v}" for v in variants) if variants else (DECODER,) * config.num_hidden_layers
    nq = config.num_attention_heads
    read = dict(
        block_kinds=kinds,
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        tied_embeddings=bool(config.tie_word_embeddings),
        ffn_hidden_size=config.intermediate_size,
        num_attention_heads=nq,
        num_key_value_heads=config.num_key_value_heads or nq,
        attention_head_dim=getattr(config, "head_dim", None) or config.hidden_size // nq,
        attention_bias=bool(getattr(config, "attention_bias", False)),
        mlp_bias=bool(getattr(config, "mlp_bias", False)),
    )
    return Dims(**{**read, **fields})


class LlamaAdapter(Adapter):
    model_types = ("llama", "mistral", "qwen2", "qwen3")
    layers_prefix = "model.layers."
    global_rules = outer_rules("model.embed_tokens", "model.norm")
    #: the attention layout of each model type (bias placement, per-head q/k norms)
    attention_of = {
        "llama": qkvo_attention(bias="all"),
        "mistral": qkvo_attention(bias="all"),
        "qwen2": qkvo_attention(bias="qkv"),
        "qwen3": qkvo_attention(bias="all", qk_norm=True),
    }

    def __init__(self, model_type: str | None = None) -> None:
        super().__init__(model_type)
        self.layer_specs = {DECODER: _spec(self.attention_of[self.model_type])}

    @staticmethod
    def _variants(config) -> list[str] | None:
        types = getattr(config, "layer_types", None)
        return list(types) if types else None

    def dims(self, config) -> Dims:
        fields = dict(attention_qk_norm=self.model_type == "qwen3")
        if self.model_type == "qwen2":
            fields["attention_bias"] = True
        return decoder_dims(config, self._variants(config), **fields)

    def check_representable(self, dims: Dims, original: Dims | None = None) -> None:
        super().check_representable(dims, original)
        if self.model_type == "llama":
            check_hidden_multiple_of_heads(dims, original, "LlamaConfig")

    def make_config(self, config, dims: Dims):
        self.check_representable(dims)
        new = copy.deepcopy(config)
        new.hidden_size = dims.hidden_size
        new.intermediate_size = dims.ffn_hidden_size
        new.num_attention_heads = dims.num_attention_heads
        new.head_dim = dims.attention_head_dim
        new.num_hidden_layers = dims.num_layers
        if self._variants(config):
            new.layer_types = [t.split("@", 1)[1] for t in dims.block_kinds]
        return type(config).from_dict(new.to_dict())
