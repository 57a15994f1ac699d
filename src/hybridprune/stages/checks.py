"""Options that only mean something on some models, refused on the others rather than silently ignored:
checked by every stage that takes them (prune, search), whichever door it was asked through."""

from __future__ import annotations

from ..options import SettingError


def check_moe_options(dims, model_type: str, *, active_params: str | None = None,
                      expert_importance: str = "output_norm") -> None:
    """Options that only mean something on a MoE model are refused on a dense one, rather than
    silently ignored (`--expert-importance`) or silently becoming the whole budget (`--active-params`,
    which equals the total count when every parameter is active)."""
    from ..architectures import MOE

    if dims.has_kind(MOE):
        return
    if active_params is not None:
        raise SettingError(f"--active-params limits the parameters one token uses, which differ from the total only on "
                           f"MoE models; this {model_type} model has no MoE blocks, so use --params")
    if expert_importance != "output_norm":
        raise SettingError(f"--expert-importance ranks routed experts; this {model_type} model has no MoE blocks, "
                           "so leave it out")


def check_gdn_options(dims, model_type: str, gdn_importance: str = "out_proj") -> None:
    """`--gdn-importance` ranks Gated DeltaNet value heads: refused on a model without GDN mixers rather
    than silently ignored."""
    if gdn_importance != "out_proj" and dims.linear_num_key_heads is None:
        raise SettingError(f"--gdn-importance ranks Gated DeltaNet value heads; this {model_type} model has no GDN "
                           "mixers, so leave it out")
