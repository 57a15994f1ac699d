"""The `mamba_expand` coupling shared by Bamba, GraniteMoeHybrid and Zamba2 configs.

Their mixers compute the inner width as `int(mamba_expand * hidden_size)` and the strict configs
type `mamba_expand` as an integer, so a pruned model is representable only when
`heads × head_dim` is a whole multiple of `hidden_size`; the written `mamba_expand` is that ratio.
"""

from __future__ import annotations

from .base import MOE, Dims, Unrepresentable
from .moe import EXPERT_ALIGNMENT, expert_widths


def expand_of(dims: Dims) -> int:
    return dims.mamba_num_heads * dims.mamba_head_dim // dims.hidden_size


def check_expand(dims: Dims, original: Dims | None, family: str,
                 names: tuple[str, str, str] = ("mamba_expand", "mamba_n_heads", "mamba_d_head")) -> None:
    """Raise Unrepresentable listing the representable targets when heads × head_dim is not an
    integer multiple of hidden_size. `names`: the family's config fields for expand, heads, head dim."""
    if dims.mamba_num_heads is None:
        return
    inner = dims.mamba_num_heads * dims.mamba_head_dim
    if inner % dims.hidden_size == 0:
        return
    g = dims.mamba_n_groups
    limit = original or dims
    heads = [n for n in range(g, limit.mamba_num_heads + 1, g) if (n * dims.mamba_head_dim) % dims.hidden_size == 0]
    hidden = [h for h in range(1, min(inner, limit.hidden_size) + 1) if inner % h == 0]
    if "hidden_size" in expert_widths(dims) and dims.has_kind(MOE):  # the experts' grouped matmuls too
        hidden = [h for h in hidden if h % EXPERT_ALIGNMENT == 0]
    expand, n_heads, d_head = names
    raise Unrepresentable(
        f"{family} configs need {expand} * hidden_size == {n_heads} * {d_head} with an integer "
        f"{expand} (the strict config rejects a fractional one); hidden_size={dims.hidden_size} with "
        f"{dims.mamba_num_heads} heads x {dims.mamba_head_dim} = {inner} is not a multiple. Representable "
        f"targets: with hidden_size={dims.hidden_size} and mamba_head_dim={dims.mamba_head_dim}, "
        f"mamba_num_heads in {heads or 'none'}; with {dims.mamba_num_heads} heads x {dims.mamba_head_dim}, "
        f"hidden_size in the divisors of {inner}{' (multiples of 8: MoE experts)' if dims.has_kind(MOE) else ''}: "
        f"{hidden[-12:]}."
    )


def mamba_fields(config, *, heads: str = "mamba_n_heads", head_dim: str = "mamba_d_head",
                 groups: str = "mamba_n_groups", state: str = "mamba_d_state", conv: str = "mamba_d_conv",
                 proj_bias: str = "mamba_proj_bias", conv_bias: str = "mamba_conv_bias") -> dict:
    """The Mamba fields of `Dims` from a config that spells them the Bamba way (or as given)."""
    return dict(
        mamba_num_heads=getattr(config, heads),
        mamba_head_dim=getattr(config, head_dim),
        mamba_n_groups=getattr(config, groups),
        mamba_state_size=getattr(config, state),
        mamba_conv_kernel=getattr(config, conv),
        mamba_proj_bias=bool(getattr(config, proj_bias)),
        mamba_conv_bias=bool(getattr(config, conv_bias)),
    )
