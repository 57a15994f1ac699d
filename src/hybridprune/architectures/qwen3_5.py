"""Qwen3.5 / Qwen3.6 (`qwen3_5_text`, `qwen3_5_moe_text`) and Qwen3-Next (`qwen3_next`): Gated DeltaNet
layers and gated full-attention layers (`layer_types`), each followed by a gated MLP or a sparse MoE
block, behind two zero-centred RMSNorms.

- GDN mixers: the four GDN axes (architectures/gdn.py); Qwen3-Next's fused, per-group interleaved
  `in_proj_qkvz` / `in_proj_ba` are cut by the same selection.
- Gated attention: query heads pruned inside their KV group with their gate rows; q_norm/k_norm over
  `head_dim`, which is never pruned (partial rotary covers a fixed share of it).
- MoE (Qwen3.5-MoE: every layer; Qwen3-Next: the layers `decoder_sparse_step` / `mlp_only_layers`
  pick, written back as an explicit `mlp_only_layers` list after depth pruning): routed experts with
  their router rows, expert neurons, the shared expert and its `shared_expert_gate`.
- Depth keeps at least one GDN and one full-attention layer; `layer_types` is rewritten.
- Multi-token-prediction weights (`mtp.*`), which transformers does not load, are left out.
"""

from __future__ import annotations

import copy
import functools
import json

from .base import ATTENTION, GDN, MLP, MOE, Adapter, Dims, DroppedPart, LayerSpec, UnsupportedArchitecture, layer_type
from .gdn import QWEN3_5_GDN, QWEN3_NEXT_GDN, check_gdn, gdn_fields
from .layouts import GATED_ATTENTION, GATED_MLP, QWEN_MOE, outer_rules

_MIXER = {"linear_attention": GDN, "full_attention": ATTENTION}
_TYPE = {GDN: "linear_attention", ATTENTION: "full_attention"}
_NORMS = ("input_layernorm", "post_attention_layernorm")
_MIXER_PREFIX = {GDN: "linear_attn.", ATTENTION: "self_attn."}


def _specs(gdn) -> dict[str, LayerSpec]:
    mixers = {GDN: gdn, ATTENTION: GATED_ATTENTION}
    ffns = {MLP: GATED_MLP, MOE: QWEN_MOE}
    return {layer_type(m, f): LayerSpec(units=((_MIXER_PREFIX[m], mixers[m]), ("mlp.", ffns[f])), norms=_NORMS)
            for m in mixers for f in ffns}


class Qwen3_5Adapter(Adapter):
    model_types = ("qwen3_5_text", "qwen3_5_moe_text", "qwen3_next")
    layers_prefix = "model.layers."
    global_rules = outer_rules("model.embed_tokens", "model.norm")
    required_kinds = (GDN, ATTENTION)
    moe_config_names = {"num_moe_experts": "num_experts", "moe_top_k": "num_experts_per_tok"}
    config_spellings = {"num_experts": "num_moe_experts", "moe_intermediate_size": "moe_ffn_hidden_size",
                        "shared_expert_intermediate_size": "moe_shared_expert_intermediate_size"}

    def __init__(self, model_type: str | None = None) -> None:
        super().__init__(model_type)
        self.layer_specs = _specs(QWEN3_NEXT_GDN if self.model_type == "qwen3_next" else QWEN3_5_GDN)

    def check_supported(self, config) -> None:
        self._kinds(config)

    def _ffn_kinds(self, config) -> list[str]:
        n = len(config.layer_types)
        if self.model_type == "qwen3_5_text":
            return [MLP] * n
        if self.model_type == "qwen3_5_moe_text":
            return [MOE] * n
        only = set(config.mlp_only_layers or ())
        step = config.decoder_sparse_step
        return [MOE if i not in only and config.num_experts > 0 and (i + 1) % step == 0 else MLP for i in range(n)]

    def _kinds(self, config) -> tuple[str, ...]:
        types = list(config.layer_types)
        unknown = sorted({t for t in types if t not in _MIXER})
        if unknown:
            raise UnsupportedArchitecture(f"unknown {self.model_type} layer types {unknown}; known: {sorted(_MIXER)}")
        return tuple(layer_type(_MIXER[t], f) for t, f in zip(types, self._ffn_kinds(config)))

    def dropped_parts(self, config) -> tuple[DroppedPart, ...]:
        n = getattr(config, "mtp_num_hidden_layers", 0) or 0
        if not n:
            return ()
        return (DroppedPart(("mtp.",), f"the multi-token-prediction layers (mtp_num_hidden_layers={n}, mtp.* tensors), "
                                       "which transformers does not load, so they are neither scored nor pruned; "
                                       "the output has mtp_num_hidden_layers=0"),)

    def dims(self, config) -> Dims:
        kinds = self._kinds(config)
        probe = Dims(block_kinds=kinds, vocab_size=0, hidden_size=0)
        moe = probe.has_kind(MOE)
        return Dims(
            block_kinds=kinds,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            tied_embeddings=bool(config.tie_word_embeddings),
            ffn_hidden_size=config.intermediate_size if probe.has_kind(MLP) else None,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_key_value_heads,
            attention_head_dim=config.head_dim,
            attention_bias=bool(config.attention_bias),
            attention_qk_norm=True,
            attention_gated=True,
            num_moe_experts=config.num_experts if moe else None,
            moe_ffn_hidden_size=config.moe_intermediate_size if moe else None,
            moe_shared_expert_intermediate_size=config.shared_expert_intermediate_size if moe else None,
            moe_top_k=config.num_experts_per_tok if moe else None,
            **gdn_fields(config),
        )

    def check_representable(self, dims: Dims, original: Dims | None = None) -> None:
        super().check_representable(dims, original)
        check_gdn(dims, original)

    def make_config(self, config, dims: Dims):
        new = copy.deepcopy(config)
        new.hidden_size = dims.hidden_size
        new.num_hidden_layers = dims.num_layers
        new.layer_types = [_TYPE[k.split("+")[0]] for k in dims.block_kinds]
        for field in ("num_attention_heads", "linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim",
                      "linear_value_head_dim"):
            setattr(new, field, getattr(dims, field))
        if dims.ffn_hidden_size is not None:
            new.intermediate_size = dims.ffn_hidden_size
        if dims.num_moe_experts is not None:
            new.num_experts = dims.num_moe_experts
            new.moe_intermediate_size = dims.moe_ffn_hidden_size
            new.shared_expert_intermediate_size = dims.moe_shared_expert_intermediate_size
        if self.model_type == "qwen3_next":  # which layers are MoE, by index after depth pruning
            new.decoder_sparse_step = 1
            new.mlp_only_layers = [i for i, k in enumerate(dims.block_kinds) if k.endswith(MLP)]
        if getattr(new, "mtp_num_hidden_layers", None):
            new.mtp_num_hidden_layers = 0  # the MTP layers are left out (dropped_parts)
        return type(config).from_dict(new.to_dict())


class Qwen3_5VLAdapter(Adapter):
    """The vision-language wrappers `qwen3_5` / `qwen3_5_moe` (`Qwen3_5ForConditionalGeneration`): a
    `text_config` language model under `model.language_model.*` beside a vision tower `model.visual.*`.

    The language model is pruned exactly as the text-only family (`Qwen3_5Adapter`); the vision tower
    is carried unchanged, except that its merger's last projection writes the language model's hidden
    channels, so its output rows are cut with them (`vision_config.out_hidden_size` follows). The output
    is again the wrapper and loads with the same class. `AutoModelForCausalLM` loads such a checkpoint as
    the text-only model (transformers drops the vision tower), so calibration, search and distillation
    run on the language model and their scores apply to the wrapper's checkpoint.
    """

    model_types = ("qwen3_5", "qwen3_5_moe")
    auto_class = "AutoModelForImageTextToText"
    layers_prefix = "model.language_model.layers."
    global_rules = {**outer_rules("model.language_model.embed_tokens", "model.language_model.norm"),
                    "model.visual.merger.linear_fc2.weight": ("hidden", None),
                    "model.visual.merger.linear_fc2.bias": ("hidden",)}
    required_kinds = Qwen3_5Adapter.required_kinds
    moe_config_names = Qwen3_5Adapter.moe_config_names
    #: model keys that the causal LM does not load: carried to the output (cut only by `global_rules`)
    carried_prefixes = ("model.visual.",)

    def __init__(self, model_type: str | None = None) -> None:
        super().__init__(model_type)
        self.text = Qwen3_5Adapter(f"{self.model_type}_text")
        self.layer_specs = self.text.layer_specs

    def text_config(self, config):
        return config.text_config

    def check_supported(self, config) -> None:
        self.text.check_supported(config.text_config)

    def dropped_parts(self, config) -> tuple[DroppedPart, ...]:
        return self.text.dropped_parts(config.text_config)

    def dims(self, config) -> Dims:
        """The language model's sizes; `extras` count the vision tower (its merger's last projection
        scales with `hidden_size`)."""
        fixed, merger_in = _vision_counts(config.vision_config)
        return self.text.dims(config.text_config).replace(
            extras=(("vision_fixed_parameters", fixed), ("vision_merger_width", merger_in)))

    def num_parameters(self, dims: Dims, *, embeddings: bool = True) -> int:
        merger = (dims.extra("vision_merger_width", 0) + 1) * dims.hidden_size  # the merger's last projection
        vision = dims.extra("vision_fixed_parameters", 0) + merger
        return self.text.num_parameters(dims, embeddings=embeddings) + vision

    def num_active_parameters(self, dims: Dims, *, embeddings: bool = True) -> int:
        inactive = (self.text.num_parameters(dims, embeddings=embeddings)
                    - self.text.num_active_parameters(dims, embeddings=embeddings))
        return self.num_parameters(dims, embeddings=embeddings) - inactive

    def check_representable(self, dims: Dims, original: Dims | None = None) -> None:
        self.text.check_representable(dims, original)

    def make_config(self, config, dims: Dims):
        new = copy.deepcopy(config)
        new.text_config = self.text.make_config(config.text_config, dims)
        new.vision_config.out_hidden_size = dims.hidden_size
        return type(config).from_dict(new.to_dict())

    def layers(self, model):
        return model.model.language_model.layers

    def expected_shapes(self, config) -> tuple[dict[str, tuple[int, ...]], set[str]]:
        """The language model's tensors (the text family's layouts under `model.language_model.`) and the
        vision tower's, from a tower built on the meta device (its shapes are the vision config's)."""
        text, tied = self.text.expected_shapes(config.text_config)
        shapes = {(f"model.language_model.{k[len('model.'):]}" if k.startswith("model.") else k): s
                  for k, s in text.items()}
        shapes.update({f"model.visual.{k}": s for k, s in _vision_shapes(config.vision_config).items()})
        return shapes, tied



@functools.lru_cache(maxsize=8)
def _vision_counts_of(text: str) -> tuple[int, int]:
    import torch
    from transformers import AutoConfig, AutoModel

    raw = json.loads(text)
    config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    with torch.device("meta"):
        tower = AutoModel.from_config(config)
    total = sum(p.numel() for p in tower.parameters())
    fc2 = tower.merger.linear_fc2
    return total - fc2.weight.numel() - fc2.bias.numel(), fc2.in_features


@functools.lru_cache(maxsize=8)
def _vision_shapes_of(text: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    import torch
    from transformers import AutoConfig, AutoModel

    raw = json.loads(text)
    config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    with torch.device("meta"):
        tower = AutoModel.from_config(config)
    return tuple((k, tuple(v.shape)) for k, v in tower.state_dict().items())


def _vision_shapes(vision_config) -> dict[str, tuple[int, ...]]:
    """The vision tower's tensors and their shapes, from a tower built on the meta device."""
    return dict(_vision_shapes_of(json.dumps(vision_config.to_dict(), sort_keys=True, default=str)))


def _vision_counts(vision_config) -> tuple[int, int]:
    """(parameters of the vision tower that do not depend on the language model's hidden size, input width
    of the merger's last projection), from a tower built on the meta device (no memory)."""
    return _vision_counts_of(json.dumps(vision_config.to_dict(), sort_keys=True, default=str))
