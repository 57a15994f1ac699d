"""Nemotron-H (`nemotron_h`): one mixer per block (Mamba2, attention, a non-gated relu² MLP, or MoE).

Mamba width (`mamba_num_heads × mamba_head_dim`), attention head_dim, MLP and expert widths are all
independent of `hidden_size`, so every uniform plan is representable. `lm_head` is always untied.
MoE blocks (Nemotron 3 Nano): `n_routed_experts` experts under a grouped sigmoid router
(`n_group`, `topk_group`, `num_experts_per_tok`), a shared expert and optional latent projections.
"""

from __future__ import annotations

import copy

from .base import (
    ATTENTION, MAMBA, MLP, MOE, Adapter, Dims, DroppedPart, LayerSpec, Unrepresentable, UnsupportedArchitecture,
)
from .config_view import ViewRules, legacy_layer_type
from .layouts import MAMBA2_MIXER, NEMOTRON_MOE, QKVO_ATTENTION, UP_DOWN_MLP, outer_rules

# Layer-type names in configs (new and legacy spellings) -> block kinds.
_KIND_OF_TYPE = {
    "linear_attention": MAMBA,
    "mamba": MAMBA,
    "full_attention": ATTENTION,
    "attention": ATTENTION,
    "mlp": MLP,
    "moe": MOE,
}
_TYPE_OF_KIND = {MAMBA: "linear_attention", ATTENTION: "full_attention", MLP: "mlp", MOE: "moe"}
#: the Hub's `hybrid_override_pattern` characters of the block kinds
_PATTERN = {MAMBA: "M", ATTENTION: "*", MLP: "-", MOE: "E"}
#: config fields that only MoE blocks read: llama.cpp's converter takes a config holding
#: `num_experts_per_tok` for a MoE model (conversion/nemotron.py:222)
_MOE_FIELDS = ("n_routed_experts", "num_experts_per_tok", "moe_intermediate_size", "moe_shared_expert_intermediate_size",
               "n_shared_experts", "n_group", "topk_group", "routed_scaling_factor", "norm_topk_prob", "moe_latent_size")


#: the Hub's remote-code-era field names that NemotronHConfig reads as its own (`__post_init__`)
_LEGACY_NAMES = {"mamba_n_groups": "n_groups", "mamba_d_conv": "conv_kernel", "mamba_expand": "expand",
                 "mamba_dt_min": "time_step_min", "mamba_dt_max": "time_step_max", "mamba_dt_limit": "time_step_limit",
                 "mamba_dt_init_floor": "time_step_floor", "mamba_conv_bias": "use_conv_bias",
                 "mamba_chunk_size": "chunk_size"}
_FROM_PATTERN = {char: t for t, char in {"linear_attention": "M", "moe": "E", "full_attention": "*", "mlp": "-"}.items()}


def _post_init(attrs: dict, extra: dict) -> None:
    """NemotronHConfig.__post_init__ (transformers 5.24) on plain data: legacy names, the layer pattern."""
    for old, new in _LEGACY_NAMES.items():
        if old in extra:
            attrs[new] = extra.pop(old)
    pattern = extra.pop("hybrid_override_pattern", None)
    if attrs["layers_block_type"] is None:
        attrs["layers_block_type"] = ([_FROM_PATTERN[c] for c in pattern] if pattern is not None
                                      else ["linear_attention", "moe", "full_attention", "mlp"])
    mtp = attrs["mtp_layers_block_type"]
    mtp = ["full_attention", "moe"] if mtp is None else [legacy_layer_type(t) for t in mtp]
    if "mtp_hybrid_override_pattern" in extra:
        mtp_pattern = extra.pop("mtp_hybrid_override_pattern")
        if mtp == ["full_attention", "moe"]:
            mtp = [_FROM_PATTERN[c] for c in mtp_pattern]
    attrs["mtp_layers_block_type"] = mtp
    if attrs["num_key_value_heads"] is None:
        attrs["num_key_value_heads"] = attrs["num_attention_heads"]
    extra.pop("num_hidden_layers", None)  # a property whose setter ignores the value


def _valid(attrs: dict) -> bool:
    """NemotronHConfig.validate_layer_type: known layer types (and MTP ones where MTP layers exist)."""
    known = set(_FROM_PATTERN.values())
    return (isinstance(attrs["layers_block_type"], list) and set(attrs["layers_block_type"]) <= known
            and (attrs["num_nextn_predict_layers"] <= 0
                 or isinstance(attrs["mtp_layers_block_type"], list) and set(attrs["mtp_layers_block_type"]) <= known))


_PATTERN_OF = {t: char for char, t in _FROM_PATTERN.items()}
_VIEW_RULES = ViewRules(_post_init, {
    "num_hidden_layers": lambda a: len(a["layers_block_type"]),
    "hybrid_override_pattern": lambda a: "".join(_PATTERN_OF[t] for t in a["layers_block_type"]),
    "mtp_hybrid_override_pattern": lambda a: "".join(_PATTERN_OF[t] for t in a["mtp_layers_block_type"]),
}, _valid)


def _block(mixer) -> LayerSpec:
    return LayerSpec(units=(("mixer.", mixer),), norms=("norm",))


class NemotronHAdapter(Adapter):
    model_types = ("nemotron_h",)
    config_spellings = {"n_routed_experts": "num_moe_experts", "moe_intermediate_size": "moe_ffn_hidden_size"}
    layers_prefix = "model.layers."
    global_rules = outer_rules("model.embeddings", "model.norm_f")
    layer_specs = {MAMBA: _block(MAMBA2_MIXER), ATTENTION: _block(QKVO_ATTENTION), MLP: _block(UP_DOWN_MLP),
                   MOE: _block(NEMOTRON_MOE)}
    # transformers 5.24's NemotronH cache needs an attention layer: without one, even a plain
    # forward with use_cache=True raises in `get_seq_length`.
    required_kinds = (ATTENTION,)
    config_view_rules = _VIEW_RULES

    def check_supported(self, config) -> None:
        self._kinds(config)

    def cache_state_dtype(self, config) -> str:
        """`mamba_ssm_cache_dtype`: the SSM state's dtype in the generation cache (float32 when unset)."""
        return str(getattr(config, "mamba_ssm_cache_dtype", None) or "float32").replace("torch.", "")

    def dropped_parts(self, config) -> tuple[DroppedPart, ...]:
        # Multi-token-prediction layers (`mtp.*`): transformers never loads them, so they are neither
        # scored nor pruned; the output has none (`make_config` sets num_nextn_predict_layers = 0).
        n = getattr(config, "num_nextn_predict_layers", 0) or 0
        if not n:
            return ()
        return (DroppedPart(("mtp.",), f"the multi-token-prediction layers (num_nextn_predict_layers={n}, mtp.* "
                                       "tensors), which transformers does not load, so they are neither scored nor "
                                       "pruned; the output has num_nextn_predict_layers=0"),)

    @staticmethod
    def _kinds(config) -> tuple[str, ...]:
        types = list(config.layers_block_type)
        unknown = sorted({t for t in types if t not in _KIND_OF_TYPE})
        if unknown:
            raise UnsupportedArchitecture(f"unknown Nemotron-H layer types {unknown}")
        return tuple(_KIND_OF_TYPE[t] for t in types)

    def dims(self, config) -> Dims:
        kinds = self._kinds(config)
        return Dims(
            block_kinds=kinds,
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            tied_embeddings=False,  # NemotronH ignores tie_word_embeddings
            ffn_hidden_size=config.intermediate_size if MLP in kinds else None,
            mamba_num_heads=config.mamba_num_heads if MAMBA in kinds else None,
            mamba_head_dim=config.mamba_head_dim if MAMBA in kinds else None,
            mamba_n_groups=config.n_groups if MAMBA in kinds else None,
            mamba_state_size=config.ssm_state_size if MAMBA in kinds else None,
            mamba_conv_kernel=config.conv_kernel if MAMBA in kinds else None,
            mamba_proj_bias=bool(config.use_bias),
            mamba_conv_bias=bool(config.use_conv_bias),
            num_attention_heads=config.num_attention_heads if ATTENTION in kinds else None,
            num_key_value_heads=config.num_key_value_heads if ATTENTION in kinds else None,
            attention_head_dim=config.head_dim if ATTENTION in kinds else None,
            attention_bias=False,  # NemotronH attention projections never have a bias
            mlp_bias=bool(config.mlp_bias),
            **(self._moe_fields(config) if MOE in kinds else {}),
        )

    moe_config_names = {"num_moe_experts": "n_routed_experts", "moe_top_k": "num_experts_per_tok",
                        "moe_n_group": "n_group", "moe_topk_group": "topk_group"}
    moe_group_top = 2  # the router scores a group by the sum of its best two experts

    @staticmethod
    def _moe_fields(config) -> dict:
        return dict(
            num_moe_experts=config.n_routed_experts,
            moe_ffn_hidden_size=config.moe_intermediate_size,
            moe_shared_expert_intermediate_size=config.moe_shared_expert_intermediate_size,
            moe_latent_size=config.moe_latent_size,
            moe_top_k=config.num_experts_per_tok,
            moe_n_group=config.n_group,
            moe_topk_group=config.topk_group,
        )

    def check_representable(self, dims: Dims, original: Dims | None = None) -> None:
        super().check_representable(dims, original)
        if dims.has_kind(MOE) and dims.num_moe_experts // dims.moe_n_group < 2:
            valid = list(range(2 * dims.moe_n_group, (original or dims).num_moe_experts + 1, dims.moe_n_group))
            raise Unrepresentable(
                f"num_moe_experts={dims.num_moe_experts} leaves fewer than 2 experts in each of the "
                f"{dims.moe_n_group} routing groups; the Nemotron-H router scores a group by its best two "
                f"experts. Valid values: {valid}")

    def serving_config(self, raw: dict, config_class) -> dict:
        """The Hub's spelling of a transformers-5-style config: llama.cpp's converter reads the layers
        from `hybrid_override_pattern` (conversion/nemotron.py:243) and takes any config holding
        `num_experts_per_tok` for a MoE model (:222), which transformers 5 writes for dense ones too.
        So: the pattern string and `num_hidden_layers` instead of the layer-type list, and, without MoE
        blocks, no MoE fields left at their defaults (the writer checks that it loads the same)."""
        types = raw.get("layers_block_type")
        if raw.get("hybrid_override_pattern") or not isinstance(types, list) or any(t not in _KIND_OF_TYPE for t in types):
            return raw
        kinds = [_KIND_OF_TYPE[t] for t in types]
        out = {k: v for k, v in raw.items() if k != "layers_block_type"}
        out.update(hybrid_override_pattern="".join(_PATTERN[k] for k in kinds), num_hidden_layers=len(kinds))
        if MOE not in kinds:
            defaults = config_class().to_dict()
            out = {k: v for k, v in out.items() if k not in _MOE_FIELDS or v != defaults.get(k)}
        return out

    def make_config(self, config, dims: Dims):
        new = copy.deepcopy(config)
        new.hidden_size = dims.hidden_size
        new.layers_block_type = [_TYPE_OF_KIND[k] for k in dims.block_kinds]
        new.num_nextn_predict_layers = 0  # multi-token-prediction layers are left out (dropped_parts)
        for field, value in (
            ("intermediate_size", dims.ffn_hidden_size),
            ("mamba_num_heads", dims.mamba_num_heads),
            ("mamba_head_dim", dims.mamba_head_dim),
            ("num_attention_heads", dims.num_attention_heads),
            ("n_routed_experts", dims.num_moe_experts),
            ("moe_intermediate_size", dims.moe_ffn_hidden_size),
            ("moe_shared_expert_intermediate_size", dims.moe_shared_expert_intermediate_size),
        ):
            if value is not None:
                setattr(new, field, value)
        # `expand` (an int) is read by no one: transformers, vLLM (nemotron_h.py:395) and llama.cpp
        # (conversion/nemotron.py:236, "Don't use expand") all size the mixer as mamba_num_heads ×
        # mamba_head_dim. It is kept equal to that width / hidden_size where that is a whole number; a
        # fractional ratio cannot be written, and the source's value stays (harmless for every reader).
        if dims.mamba_num_heads is not None and (dims.mamba_num_heads * dims.mamba_head_dim) % dims.hidden_size == 0:
            new.expand = dims.mamba_num_heads * dims.mamba_head_dim // dims.hidden_size
        # Re-validate through the config class: catches anything the strict dataclass rejects.
        return type(config).from_dict(new.to_dict())
