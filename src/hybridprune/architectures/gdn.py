"""The Gated DeltaNet (GDN) mixer as data: Qwen3.5 / Qwen3.6, Qwen3-Next and OLMo Hybrid.

A GDN layer has `linear_num_key_heads` (Hk) query/key heads of `linear_key_head_dim` (dk) channels and
`linear_num_value_heads` (Hv) value heads of `linear_value_head_dim` (dv) channels. Value head j reads
key head `j // (Hv / Hk)` (`repeat_interleave` in the delta rule): the value heads under one key head
are its group, as Mamba2 heads are under their B/C group. Per value head: a row of the decay input (a)
and of beta (b), `A_log`, `dt_bias`, dv rows of the output gate (z), and dv columns of the output
projection; the gated RMSNorm over dv channels is shared by every value head. The short convolution
runs over the q ‖ k ‖ v channels.

The three families store the same tensors three ways, so there are three rule sets over the same axes
(resolved in `pruning.slicing`):
- Qwen3.5: `in_proj_qkv` rows q ‖ k ‖ v, `in_proj_z`, `in_proj_b`, `in_proj_a`;
- Qwen3-Next: `in_proj_qkvz` rows interleaved per key-head group g: [q_g, k_g, v_g (Hv/Hk heads),
  z_g], and `in_proj_ba` per g: [b_g, a_g] (transformers' `fix_query_key_value_ordering`);
- OLMo Hybrid: separate q/k/v/a/b projections, `g_proj` for the gate, `o_proj`, `o_norm`.

Scored (calibration): the input of the output projection (after the gated norm) per value head and
channel (Scores "gdn"), the value branch of the input projection (Scores "gdn_value") and the q and k
branches, summed into one key-channel table (Scores "gdn_key").
"""

from __future__ import annotations

from .base import Shapes, Unrepresentable, UnitCache, UnitLayout
from .dims import GDN, Dims


def key_dim(d: Dims) -> int:
    return d.linear_num_key_heads * d.linear_key_head_dim


def value_dim(d: Dims) -> int:
    return d.linear_num_value_heads * d.linear_value_head_dim


def _count(d: Dims) -> int:
    h, kd, vd, hv = d.hidden_size, key_dim(d), value_dim(d), d.linear_num_value_heads
    conv = 2 * kd + vd
    total = conv * h + vd * h + 2 * hv * h  # q, k, v; z; b, a
    total += conv * d.linear_conv_kernel_dim  # depthwise conv, no bias
    total += 2 * hv + d.linear_value_head_dim  # A_log, dt_bias; gated norm
    return total + vd * h  # out_proj


def _shared_shapes(d: Dims) -> Shapes:
    """The tensors every GDN layout has: the q ‖ k ‖ v short convolution and the per-value-head decay."""
    hv = d.linear_num_value_heads
    return {"conv1d.weight": (2 * key_dim(d) + value_dim(d), 1, d.linear_conv_kernel_dim), "A_log": (hv,),
            "dt_bias": (hv,)}


def _qwen3_5_shapes(d: Dims) -> Shapes:
    h, kd, vd, hv = d.hidden_size, key_dim(d), value_dim(d), d.linear_num_value_heads
    return {"in_proj_qkv.weight": (2 * kd + vd, h), "in_proj_z.weight": (vd, h), "in_proj_b.weight": (hv, h),
            "in_proj_a.weight": (hv, h), "norm.weight": (d.linear_value_head_dim,), "out_proj.weight": (h, vd),
            **_shared_shapes(d)}


def _qwen3_next_shapes(d: Dims) -> Shapes:
    h, kd, vd, hv = d.hidden_size, key_dim(d), value_dim(d), d.linear_num_value_heads
    return {"in_proj_qkvz.weight": (2 * kd + 2 * vd, h), "in_proj_ba.weight": (2 * hv, h),
            "norm.weight": (d.linear_value_head_dim,), "out_proj.weight": (h, vd), **_shared_shapes(d)}


def _olmo_hybrid_shapes(d: Dims) -> Shapes:
    h, kd, vd, hv = d.hidden_size, key_dim(d), value_dim(d), d.linear_num_value_heads
    return {"q_proj.weight": (kd, h), "k_proj.weight": (kd, h), "v_proj.weight": (vd, h), "g_proj.weight": (vd, h),
            "a_proj.weight": (hv, h), "b_proj.weight": (hv, h), "o_norm.weight": (d.linear_value_head_dim,),
            "o_proj.weight": (h, vd), **_shared_shapes(d)}


def _split(out, d: Dims):
    """q, k, v of the q ‖ k ‖ v rows (Qwen3.5's in_proj_qkv)."""
    kd = key_dim(d)
    return out[..., :kd], out[..., kd:2 * kd], out[..., 2 * kd:]


def _fused(out, d: Dims):
    """q, k, v of Qwen3-Next's in_proj_qkvz output, interleaved per key-head group."""
    hk, dk, dv = d.linear_num_key_heads, d.linear_key_head_dim, d.linear_value_head_dim
    per = d.linear_num_value_heads // hk
    x = out.reshape(*out.shape[:-1], hk, 2 * dk + 2 * per * dv)
    flat = lambda t: t.reshape(*out.shape[:-1], -1)  # noqa: E731
    return flat(x[..., :dk]), flat(x[..., dk:2 * dk]), flat(x[..., 2 * dk:2 * dk + per * dv])


def _outputs(split) -> dict:
    return {"gdn_query": lambda out, d: split(out, d)[0], "gdn_key": lambda out, d: split(out, d)[1],
            "gdn_value": lambda out, d: split(out, d)[2]}


def gdn_cache(d: Dims) -> UnitCache:
    """One GDN mixer's cache: the conv window over q ‖ k ‖ v channels and the recurrent state
    [Hv, dk, dv] (transformers keeps it float32)."""
    return UnitCache(conv=(2 * key_dim(d) + value_dim(d)) * d.linear_conv_kernel_dim,
                     state=d.linear_num_value_heads * d.linear_key_head_dim * d.linear_value_head_dim)


def _layout(rules: dict, out_proj: str, projection: str, split, shapes) -> UnitLayout:
    return UnitLayout(
        GDN, rules, hook=out_proj, hook_on="input", count=_count, shapes=shapes, cache=gdn_cache,
        more_hooks=((projection, "gdn_value", "gdn_value"), (projection, "gdn_query", "gdn_key"),
                    (projection, "gdn_key", "gdn_key")),
        outputs=_outputs(split))


_SHARED = {
    "conv1d.weight": ("gdn_qkv", None, None),
    "A_log": ("gdn_heads",),
    "dt_bias": ("gdn_heads",),
}

QWEN3_5_GDN = _layout({
    "in_proj_qkv.weight": ("gdn_qkv", "hidden"),
    "in_proj_z.weight": ("gdn_v", "hidden"),
    "in_proj_b.weight": ("gdn_heads", "hidden"),
    "in_proj_a.weight": ("gdn_heads", "hidden"),
    "norm.weight": ("gdn_channels",),
    "out_proj.weight": ("hidden", "gdn_v"),
    **_SHARED,
}, "out_proj", "in_proj_qkv", _split, _qwen3_5_shapes)

QWEN3_NEXT_GDN = _layout({
    "in_proj_qkvz.weight": ("gdn_qkvz", "hidden"),
    "in_proj_ba.weight": ("gdn_ba", "hidden"),
    "norm.weight": ("gdn_channels",),
    "out_proj.weight": ("hidden", "gdn_v"),
    **_SHARED,
}, "out_proj", "in_proj_qkvz", _fused, _qwen3_next_shapes)

OLMO_HYBRID_GDN = UnitLayout(
    GDN, {
        "q_proj.weight": ("gdn_q", "hidden"),
        "k_proj.weight": ("gdn_k", "hidden"),
        "v_proj.weight": ("gdn_v", "hidden"),
        "g_proj.weight": ("gdn_v", "hidden"),
        "a_proj.weight": ("gdn_heads", "hidden"),
        "b_proj.weight": ("gdn_heads", "hidden"),
        "o_norm.weight": ("gdn_channels",),
        "o_proj.weight": ("hidden", "gdn_v"),
        **_SHARED,
    }, hook="o_proj", hook_on="input", count=_count, shapes=_olmo_hybrid_shapes, cache=gdn_cache,
    more_hooks=(("v_proj", "output", "gdn_value"), ("q_proj", "output", "gdn_key"), ("k_proj", "output", "gdn_key")),
    outputs={"output": lambda out, d: out})


def gdn_fields(config) -> dict:
    """The Dims fields of a config's GDN mixers (in the config's own names)."""
    return {name: getattr(config, name) for name in (
        "linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim",
        "linear_conv_kernel_dim")}




def check_gdn(dims: Dims, original: Dims | None = None) -> None:
    """Raise Unrepresentable unless every key head keeps the same whole number of value heads (the
    delta rule repeats each key head over `Hv / Hk` consecutive value heads)."""
    if not dims.has_kind(GDN):
        return
    hk, hv = dims.linear_num_key_heads, dims.linear_num_value_heads
    if hv % hk:
        top = (original or dims).linear_num_value_heads
        valid = [v for v in range(hk, top + 1, hk)]
        raise Unrepresentable(
            f"linear_num_value_heads={hv} is not a multiple of linear_num_key_heads={hk}: every key head serves the "
            f"same number of value heads. Valid values with {hk} key heads: {valid or 'none'}")
