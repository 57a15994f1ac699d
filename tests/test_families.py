"""The shared battery: every supported family passes the same proofs on a tiny random model.

A new adapter is one file in `hybridprune/architectures/` plus one record in tests/families.py: its
tiny config, plans it can write, plans it must refuse with words the refusal must contain (the valid
values), and the checks here it skips, with why."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import build, measured_cache_bytes, sliced
from families import RECORDS, Family, tiny_config
from hybridprune import calibrate, prune
from hybridprune.architectures import Unrepresentable, UnsupportedArchitecture, get_adapter
from hybridprune.architectures.base import unit_kinds
from hybridprune.archsearch import Budget, SearchConfig, SearchSpace, search
from hybridprune.pruning import apply
from hybridprune.pruning.export import export
from hybridprune.pruning.plan import Plan
from hybridprune.pruning.selection import Selection
from hybridprune.pruning.slicing import slice_state_dict


@pytest.fixture(autouse=True)
def _skips(request):
    """A check the family's record skips (`Family.skips`, by the test's name) is skipped with its reason."""
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    for value in params.values():
        if isinstance(value, Family):
            reason = value.skips.get(request.node.originalname.removeprefix("test_"))
            if reason:
                pytest.skip(f"{value.name}: {reason}")


@pytest.fixture(scope="module", params=RECORDS, ids=[f.name for f in RECORDS])
def family(request):
    """(the family's record, its tiny random model, the adapter, the model's dims)."""
    fam = request.param
    model = build(fam.tiny_config())
    adapter = get_adapter(model)
    return fam, model, adapter, adapter.dims(model.config)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, 96, (4, 12), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def scored(family, ids):
    fam, model, adapter, dims = family
    return calibrate(model, ids, progress=False, depth_samples=2)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def rebuilt(model, selection):
    """Slice with a permutation selection into a fresh model of the same config."""
    adapter = get_adapter(model)
    state = slice_state_dict(model.state_dict(), adapter, adapter.dims(model.config), selection)
    other = build(model.config, seed=123)
    other.load_state_dict(state, strict=True)
    return other


def group_perm(n: int, groups: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    size = n // groups
    return torch.cat([k * size + torch.randperm(size, generator=g) for k in range(groups)])


def _same(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def _consistent(adapter, dims, sel: Selection, table: str, make) -> None:
    """Fill `sel.<table>` for every layer holding the unit, the same tensor for shared call sites."""
    kind = {"mamba_heads": "mamba", "ffn": "mlp", "attention_heads": "attention"}[table]
    owners = adapter.unit_owners(dims)
    for i in dims.layers_of(kind):
        getattr(sel, table)[i] = make(owners.get((kind, i), i))


# ---- permutations inside groups leave the logits unchanged ------------------------------------------
def test_within_group_permutations_keep_logits(family, ids):
    fam, model, adapter, dims = family
    reference = logits(model, ids)
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    if dims.has_kind("mamba"):
        _consistent(adapter, dims, sel, "mamba_heads", lambda i: group_perm(dims.mamba_num_heads, dims.mamba_n_groups, i))
        for i in dims.layers_of("mamba"):
            sel.mamba_channels[i] = torch.randperm(dims.mamba_head_dim, generator=torch.Generator().manual_seed(i))
    if dims.has_kind("mlp"):
        _consistent(adapter, dims, sel, "ffn",
                    lambda i: torch.randperm(dims.ffn_hidden_size, generator=torch.Generator().manual_seed(i)))
    if dims.has_kind("attention"):
        _consistent(adapter, dims, sel, "attention_heads",
                    lambda i: group_perm(dims.num_attention_heads, dims.num_key_value_heads, i + 7))
    if dims.has_kind("moe"):  # experts (with their router rows and bias) inside their routing group
        for i in dims.layers_of("moe"):
            sel.moe_experts[i] = group_perm(dims.num_moe_experts, dims.moe_n_group, i + 11)
            sel.moe_ffn[i] = torch.randperm(dims.moe_ffn_hidden_size, generator=torch.Generator().manual_seed(i))
            if dims.moe_shared_expert_intermediate_size:
                sel.moe_shared_ffn[i] = torch.randperm(dims.moe_shared_expert_intermediate_size,
                                                       generator=torch.Generator().manual_seed(i + 1))
    if dims.has_kind("gdn"):  # key-head groups with their value heads; value heads inside their group; channels
        for i in dims.layers_of("gdn"):
            _gdn_permutation(sel, dims, i, seed=i)
    _same(logits(rebuilt(model, sel), ids), reference)
    hidden = Selection(kept_blocks=sel.kept_blocks,
                       hidden=torch.randperm(dims.hidden_size, generator=torch.Generator().manual_seed(3)))
    _same(logits(rebuilt(model, hidden), ids), reference)


def _gdn_permutation(sel: Selection, dims, i: int, seed: int) -> None:
    """A GDN selection that keeps everything, reordered: key-head groups (each with its value heads),
    value heads inside their group, value channels and key channels."""
    g = torch.Generator().manual_seed(seed)
    hk, per = dims.linear_num_key_heads, dims.linear_num_value_heads // dims.linear_num_key_heads
    groups = torch.randperm(hk, generator=g)
    sel.gdn_key_heads[i] = groups
    sel.gdn_value_heads[i] = torch.cat([k * per + torch.randperm(per, generator=g) for k in groups.tolist()])
    sel.gdn_key_channels[i] = torch.randperm(dims.linear_key_head_dim, generator=g)
    sel.gdn_value_channels[i] = torch.randperm(dims.linear_value_head_dim, generator=g)


def _keep_all_gdn(sel: Selection, dims, i: int) -> None:
    sel.gdn_key_heads[i] = torch.arange(dims.linear_num_key_heads)
    sel.gdn_value_heads[i] = torch.arange(dims.linear_num_value_heads)
    sel.gdn_key_channels[i] = torch.arange(dims.linear_key_head_dim)
    sel.gdn_value_channels[i] = torch.arange(dims.linear_value_head_dim)


def test_gdn_value_head_moved_across_key_groups_changes_logits(family, ids):
    """Negative control of the GDN permutation: value head 0 and the first head of the next key head's
    group trade places, so each now reads the other key head's queries and keys."""
    fam, model, adapter, dims = family
    if not dims.has_kind("gdn"):
        pytest.skip("no Gated DeltaNet")
    per = dims.linear_num_value_heads // dims.linear_num_key_heads
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    for i in dims.layers_of("gdn"):
        _keep_all_gdn(sel, dims, i)
        swap = torch.arange(dims.linear_num_value_heads)
        swap[0], swap[per] = per, 0
        sel.gdn_value_heads[i] = swap
    state = model.state_dict()
    if any(k.endswith("in_proj_qkvz.weight") for k in state):  # rows fused and laid out by group: by hand
        for i in dims.layers_of("gdn"):
            _swap_fused_value_heads(state, f"model.layers.{i}.linear_attn.", dims, 0, per)
        other = build(model.config, seed=123)
        other.load_state_dict(state, strict=True)
    else:
        other = rebuilt(model, sel)
    assert (logits(other, ids) - logits(model, ids)).abs().max() > 1e-3


def _swap_fused_value_heads(state, prefix, dims, a, b):
    """Swap value heads a and b (all their rows) in Qwen3-Next's group-interleaved projections."""
    dk, dv = dims.linear_key_head_dim, dims.linear_value_head_dim
    per = dims.linear_num_value_heads // dims.linear_num_key_heads
    w = 2 * dk + 2 * per * dv

    def rows(h):
        g, j = divmod(h, per)
        v = g * w + 2 * dk + j * dv
        return list(range(v, v + dv)) + list(range(v + per * dv, v + per * dv + dv))

    qkvz = state[prefix + "in_proj_qkvz.weight"].clone()
    qkvz[rows(a) + rows(b)] = state[prefix + "in_proj_qkvz.weight"][rows(b) + rows(a)]
    state[prefix + "in_proj_qkvz.weight"] = qkvz
    ba = state[prefix + "in_proj_ba.weight"].clone()
    pos = lambda h: [divmod(h, per)[0] * 2 * per + h % per, divmod(h, per)[0] * 2 * per + per + h % per]  # noqa: E731
    ba[pos(a) + pos(b)] = state[prefix + "in_proj_ba.weight"][pos(b) + pos(a)]
    state[prefix + "in_proj_ba.weight"] = ba
    for name in ("A_log", "dt_bias"):
        t = state[prefix + name].clone()
        t[[a, b]] = state[prefix + name][[b, a]]
        state[prefix + name] = t
    conv = state[prefix + "conv1d.weight"].clone()
    base = 2 * dims.linear_num_key_heads * dk
    ca, cb = list(range(base + a * dv, base + a * dv + dv)), list(range(base + b * dv, base + b * dv + dv))
    conv[ca + cb] = state[prefix + "conv1d.weight"][cb + ca]
    state[prefix + "conv1d.weight"] = conv
    out = state[prefix + "out_proj.weight"].clone()
    oa, ob = [a * dv + d for d in range(dv)], [b * dv + d for d in range(dv)]
    out[:, oa + ob] = state[prefix + "out_proj.weight"][:, ob + oa]
    state[prefix + "out_proj.weight"] = out


def test_a_cross_group_swap_changes_logits(family, ids):
    """Negative control: the permutation test can fail."""
    fam, model, adapter, dims = family
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    if dims.has_kind("mamba") and dims.mamba_n_groups > 1:
        n, per = dims.mamba_num_heads, dims.mamba_num_heads // dims.mamba_n_groups
        swap = torch.arange(n)
        swap[0], swap[per] = per, 0
        _consistent(adapter, dims, sel, "mamba_heads", lambda i: swap)
    elif dims.num_key_value_heads in (None, 1):
        pytest.skip("every head is independent (one group): no cross-group swap; the family's own tests "
                    "(test_kimi_linear.py) hold its negative control")
    else:
        n, per = dims.num_attention_heads, dims.num_attention_heads // dims.num_key_value_heads
        swap = torch.arange(n)
        swap[0], swap[per] = per, 0
        _consistent(adapter, dims, sel, "attention_heads", lambda i: swap)
    assert (logits(rebuilt(model, sel), ids) - logits(model, ids)).abs().max() > 1e-3


# ---- removing equals zeroing ---------------------------------------------------------------------
def _zeroed_copy(model, adapter, dims, kind, columns):
    """A copy whose output projection of every `kind` unit has `columns` zeroed."""
    zeroed = build(model.config)
    zeroed.load_state_dict(model.state_dict())
    with torch.no_grad():
        for block in adapter.blocks(zeroed):
            for unit in block.units:
                if unit.kind == kind and unit.group is None:
                    unit.module.weight[:, columns] = 0.0
    return zeroed


def test_removing_ffn_neurons_equals_zeroing_them(family, ids):
    fam, model, adapter, dims = family
    if not dims.has_kind("mlp"):
        pytest.skip("no MLP")
    removed = [0, 5, 6, 17, 40, 63]
    kept = torch.tensor([j for j in range(dims.ffn_hidden_size) if j not in removed])
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    _consistent(adapter, dims, sel, "ffn", lambda i: kept)
    zeroed = _zeroed_copy(model, adapter, dims, "mlp", removed)
    _same(logits(sliced(model, sel, ffn_hidden_size=len(kept)), ids), logits(zeroed, ids))


def test_removing_attention_heads_equals_zeroing_them(family, ids):
    fam, model, adapter, dims = family
    if not dims.has_kind("attention"):
        pytest.skip("no attention")
    hd, per = dims.attention_head_dim, dims.num_attention_heads // dims.num_key_value_heads
    kept = [g * per + j for g in range(dims.num_key_value_heads) for j in range(per) if j != 1]
    removed = [h for h in range(dims.num_attention_heads) if h not in kept]
    columns = [h * hd + d for h in removed for d in range(hd)]
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    _consistent(adapter, dims, sel, "attention_heads", lambda i: torch.tensor(kept))
    zeroed = _zeroed_copy(model, adapter, dims, "attention", columns)
    _same(logits(sliced(model, sel, num_attention_heads=len(kept)), ids), logits(zeroed, ids))


def test_removing_gdn_value_heads_equals_zeroing_them(family, ids):
    """A value head has its own recurrence and its own slice of the gated norm: removing it (the second
    of every key head's group) equals zeroing its out_proj columns."""
    fam, model, adapter, dims = family
    if not dims.has_kind("gdn"):
        pytest.skip("no Gated DeltaNet")
    dv, per = dims.linear_value_head_dim, dims.linear_num_value_heads // dims.linear_num_key_heads
    removed = [h for h in range(dims.linear_num_value_heads) if h % per == 1]
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    for i in dims.layers_of("gdn"):
        _keep_all_gdn(sel, dims, i)
        sel.gdn_value_heads[i] = torch.tensor([h for h in range(dims.linear_num_value_heads) if h not in removed])
    zeroed = _zeroed_copy(model, adapter, dims, "gdn", [h * dv + d for h in removed for d in range(dv)])
    pruned = sliced(model, sel, linear_num_value_heads=dims.linear_num_value_heads - len(removed))
    _same(logits(pruned, ids), logits(zeroed, ids))


def _hand_sliced_key_channels(state: dict, dims, kept: list[int]) -> dict:
    """The state dict with only key channels `kept` of every key head, cut by hand from each layout's
    own row order (not through hybridprune's slicing): q ‖ k ‖ v rows (Qwen3.5's in_proj_qkv and every
    conv1d), per-group [q, k, v, z] rows (Qwen3-Next's in_proj_qkvz), separate q/k projections (OLMo)."""
    hk, dk = dims.linear_num_key_heads, dims.linear_key_head_dim
    per_dv = dims.linear_num_value_heads // hk * dims.linear_value_head_dim
    kk = torch.tensor(kept)
    out = {}
    for key, t in state.items():
        if ".linear_attn." not in key:
            out[key] = t
        elif key.endswith(("in_proj_qkv.weight", "conv1d.weight")):
            q, k, v = t[:hk * dk], t[hk * dk:2 * hk * dk], t[2 * hk * dk:]
            cut = lambda x: x.reshape(hk, dk, *x.shape[1:])[:, kk].reshape(-1, *x.shape[1:])  # noqa: E731
            out[key] = torch.cat([cut(q), cut(k), v])
        elif key.endswith("in_proj_qkvz.weight"):
            g = t.reshape(hk, 2 * dk + 2 * per_dv, -1)
            out[key] = torch.cat([g[:, kk], g[:, dk + kk], g[:, 2 * dk:]], dim=1).reshape(-1, t.shape[-1])
        elif key.endswith((".q_proj.weight", ".k_proj.weight")):
            out[key] = t.reshape(hk, dk, -1)[:, kk].reshape(-1, t.shape[-1])
        else:
            out[key] = t
    return out


def test_removing_gdn_key_channels_matches_an_explicit_slicing(family, ids):
    """Key channels are the delta rule's state dimension; q and k are L2-normalised per head and q is
    scaled by dk**-0.5, so removing channels is not zeroing them: the pruned model equals the source cut
    by hand, and differs from the source with those channels zeroed."""
    fam, model, adapter, dims = family
    if not dims.has_kind("gdn"):
        pytest.skip("no Gated DeltaNet")
    kept = [0, 2, 5, 7]
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    for i in dims.layers_of("gdn"):
        _keep_all_gdn(sel, dims, i)
        sel.gdn_key_channels[i] = torch.tensor(kept)
    pruned = sliced(model, sel, linear_key_head_dim=len(kept))
    by_hand = build(adapter.make_config(model.config, dims.replace(linear_key_head_dim=len(kept))), seed=5)
    by_hand.load_state_dict(_hand_sliced_key_channels(model.state_dict(), dims, kept), strict=True)
    _same(logits(pruned, ids), logits(by_hand, ids))
    zeroed = build(model.config)
    zeroed.load_state_dict(model.state_dict())
    removed = [c for c in range(dims.linear_key_head_dim) if c not in kept]
    with torch.no_grad():
        for key, p in zeroed.named_parameters():
            if ".linear_attn." in key and key.endswith(("in_proj_qkv.weight", ".q_proj.weight")):
                q_rows = dims.linear_num_key_heads * dims.linear_key_head_dim
                p[:q_rows].view(dims.linear_num_key_heads, dims.linear_key_head_dim, -1)[:, removed] = 0.0
            elif key.endswith("in_proj_qkvz.weight"):
                p.view(dims.linear_num_key_heads, -1, p.shape[-1])[:, removed] = 0.0
    assert (logits(zeroed, ids) - logits(pruned, ids)).abs().max() > 1e-4


def test_removing_expert_neurons_equals_zeroing_them(family, ids):
    """Expert neurons (one set for every expert) and shared-expert neurons: removed == zeroed columns
    of the down projections."""
    fam, model, adapter, dims = family
    if not dims.has_kind("moe"):
        pytest.skip("no MoE")
    removed = [0, 3, 4, 5, 9, 10, 12, 15]  # 8 of 16: expert widths stay multiples of 8 (grouped matmuls)
    kept = torch.tensor([j for j in range(dims.moe_ffn_hidden_size) if j not in removed])
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    changes = dict(moe_ffn_hidden_size=len(kept))
    zeroed = build(model.config)
    zeroed.load_state_dict(model.state_dict())
    shared_kept, shared_removed = None, [1, 2]
    if dims.moe_shared_expert_intermediate_size:
        width = dims.moe_shared_expert_intermediate_size
        try:
            adapter.check_representable(dims.replace(**changes, moe_shared_expert_intermediate_size=width - 2), dims)
        except Unrepresentable:  # a shared width tied to the expert width (Kimi Linear): cut as the experts
            shared_removed = [j for j in removed if j < width]
        shared_kept = torch.tensor([j for j in range(width) if j not in shared_removed])
        changes["moe_shared_expert_intermediate_size"] = len(shared_kept)
    with torch.no_grad():
        for block in adapter.blocks(zeroed):
            for unit in block.units:
                if unit.kind != "moe":
                    continue
                if unit.group == "moe_shared_ffn":
                    unit.module.weight[:, shared_removed] = 0.0
                else:  # the expert-neuron dimension as the layout says ([E, H, F], gpt-oss's transposed [E, F, H])
                    dim = unit.layout.rules["experts.down_proj"].index("moe_ffn")
                    unit.module.down_proj.index_fill_(dim, torch.tensor(removed), 0.0)
    for i in dims.layers_of("moe"):
        sel.moe_ffn[i] = kept
        if shared_kept is not None:
            sel.moe_shared_ffn[i] = shared_kept
    _same(logits(sliced(model, sel, **changes), ids), logits(zeroed, ids))


def test_removing_experts_the_router_never_selects_keeps_logits(family, ids):
    """Experts the router never selects are removed with their router rows (and bias): every token's
    routing, and so the logits, stay the same, and top-k only ever picks kept experts.

    Sigmoid routers with a correction bias (Nemotron-H): a bias of -1e4 makes the last expert of each
    group never chosen, nor among its group's best two. Softmax-over-top-k routers (Granite): on a
    short input some experts are simply never picked; removing them changes nothing on that input."""
    fam, model, adapter, dims = family
    if not dims.has_kind("moe"):
        pytest.skip("no MoE")
    probe = ids[:1, :2]  # 2 tokens x 2 experts: at most 4 of 6 picked per layer
    per = dims.num_moe_experts // dims.moe_n_group
    never = build(model.config)
    never.load_state_dict(model.state_dict())
    biases = [b for n, b in never.named_buffers() if n.endswith("e_score_correction_bias")]
    with torch.no_grad():
        for n, p in never.named_parameters():
            if n.endswith("experts.down_proj"):
                p.mul_(100.0)  # random experts barely move the logits; make them matter
        for b in biases:
            b[[g * per + per - 1 for g in range(dims.moe_n_group)]] = -1e4
    picked = [set(c.reshape(-1).tolist()) for c in _routed_experts(never, adapter, probe)]
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    for i, chosen in zip(dims.layers_of("moe"), picked):
        removed = []
        for g in range(dims.moe_n_group):
            group = range(g * per, (g + 1) * per)
            unpicked = [e for e in group if e not in chosen]
            assert unpicked, "the probe picks every expert of a group: use a shorter probe"
            removed.append(group[-1] if biases else unpicked[0])
        sel.moe_experts[i] = torch.tensor([e for e in range(dims.num_moe_experts) if e not in removed])
    pruned = sliced(never, sel, num_moe_experts=dims.num_moe_experts - dims.moe_n_group)
    _same(logits(pruned, probe), logits(never, probe))
    assert all(int(c.max()) < dims.num_moe_experts - dims.moe_n_group for c in _routed_experts(pruned, adapter, ids))
    # the negative control: removing an expert the router does pick changes the logits
    busy = Selection(kept_blocks=sel.kept_blocks)
    for i, chosen in zip(dims.layers_of("moe"), picked):
        first = min(chosen)
        busy.moe_experts[i] = torch.tensor([e for e in range(dims.num_moe_experts)
                                            if e != first and not (e // per != first // per and e % per == per - 1)])
    assert (logits(sliced(never, busy, num_moe_experts=dims.num_moe_experts - dims.moe_n_group), probe)
            - logits(never, probe)).abs().max() > 1e-4


def _routed_experts(model, adapter, ids):
    """The expert indices the routers of `model` pick on `ids`."""
    picked = []
    handles = [b.module.get_submodule(p + lay.hook).register_forward_hook(
        lambda m, args, out: picked.append(args[1]))
        for b in adapter.blocks(model) for p, lay in adapter.layer_spec(b.kind).units if lay.kind == "moe"]
    try:
        logits(model, ids)
    finally:
        for h in handles:
            h.remove()
    return picked


# ---- prune, count, export, reload, generate -------------------------------------------------------
def _depth_kld_by_full_passes(model, adapter, ids):
    """The paper's depth score the plain way: a whole forward with each block made the identity."""
    full = torch.log_softmax(logits(model, ids).float(), -1)
    out = []
    for block in adapter.blocks(model):
        h = block.module.register_forward_hook(
            lambda m, args, kwargs, o: ((args[0] if args else kwargs["hidden_states"]).to(o[0].dtype),) + o[1:]
            if isinstance(o, tuple) else (args[0] if args else kwargs["hidden_states"]).to(o.dtype),
            with_kwargs=True)
        try:
            skipped = torch.log_softmax(logits(model, ids).float(), -1)
        finally:
            h.remove()
        out.append((full.exp() * (full - skipped)).sum(-1).double().mean())
    return torch.stack(out).float()


def test_depth_scores_replaying_the_prefix_equal_full_passes(family, ids, monkeypatch):
    """`depth_importance` replays the blocks before the skipped one from the full pass instead of
    running them; its scores equal whole forwards with the block skipped, and so does its fallback
    (blocks listed out of call order: every pass run in full)."""
    from hybridprune.importance import depth

    fam, model, adapter, dims = family
    want = _depth_kld_by_full_passes(model, adapter, ids[:2])
    blocks = adapter.blocks(model)
    children = [list(b.module.children()) for b in blocks]
    ran = []  # the block whose own modules ran, once per call into them
    handles = [c.register_forward_pre_hook(lambda m, a, k=k: ran.append(k)) for k, cs in enumerate(children) for c in cs]
    handles.append(model.register_forward_pre_hook(lambda m, a: ran.append(None)))  # a new pass
    try:
        got = depth.depth_importance(model, ids[:2], batch_size=2, progress=False)
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    n = len(blocks)
    if len({id(c) for cs in children for c in cs}) == sum(map(len, children)):  # no module shared by blocks
        runs = sum(1 for i, k in enumerate(ran) if k is not None and ran[i - 1] != k)  # block executions
        assert runs == n + n * (n - 1) // 2, "the full pass runs every block, a skip pass those after the skipped one"
    real = type(adapter).blocks
    monkeypatch.setattr(type(adapter), "blocks", lambda self, m: real(self, m)[::-1])
    torch.testing.assert_close(depth.depth_importance(model, ids[:2], batch_size=2, progress=False), want,
                               rtol=1e-4, atol=1e-7)


def test_plans_prune_with_exact_parameter_counts(family, scored, ids):
    fam, model, adapter, dims = family
    assert adapter.num_parameters(dims) == sum(p.numel() for p in model.parameters())
    for plan in fam.plans:
        pruned = prune(model, scored, plan)
        new_dims = adapter.dims(pruned.config)
        assert sum(p.numel() for p in pruned.parameters()) == adapter.num_parameters(new_dims), plan
        assert adapter.num_parameters(new_dims) < adapter.num_parameters(dims)
        assert torch.isfinite(logits(pruned, ids)).all()


RELOAD = textwrap.dedent("""
    import json, sys, traceback, torch, transformers
    # one request per line: [checkpoint, ids, logits file]; one answer per line: "ok" or the traceback
    for line in sys.stdin:
        path, ids, out = json.loads(line)
        try:
            # the class the checkpoint names (a vision-language wrapper loads as itself, vision tower included)
            cls = getattr(transformers, json.load(open(path + "/config.json"))["architectures"][0])
            model = cls.from_pretrained(path).eval()
            with torch.no_grad():
                logits = model(input_ids=torch.tensor(ids), use_cache=False).logits
            assert "hybridprune" not in sys.modules
            torch.save(logits, out)
            answer = "ok"
        except Exception:
            answer = traceback.format_exc()
        print(json.dumps(answer), flush=True)
""")


@pytest.fixture(scope="module")
def plain_transformers(tmp_path_factory):
    """One Python process without hybridprune on its path, reloading exports on request (one interpreter
    start for every family instead of one each): `reload(checkpoint, ids, out)` -> "ok" or the traceback."""
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.Popen([sys.executable, "-c", RELOAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path_factory.mktemp("reload"))

    def reload(path, ids, out) -> str:
        proc.stdin.write(json.dumps([str(path), ids.tolist(), str(out)]) + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        if not ready:  # no later test may read this request's late answer as its own
            proc.kill()
            raise AssertionError("the plain-transformers process did not answer in 120 s")
        line = proc.stdout.readline()
        assert line, f"the plain-transformers process died (exit {proc.wait()})"
        return json.loads(line)

    yield reload
    proc.stdin.close()
    proc.wait(timeout=60)


def test_loading_tensor_by_tensor_equals_loading_the_whole_sliced_state(family, scored, monkeypatch):
    """The prune loads the sliced tensors into the rebuilt model in chunks (here one tensor per chunk), so
    no whole second copy of the pruned model exists; the result equals slicing the whole state dict and
    loading it strictly, and shares no memory with the source (a tensor no rule cuts is copied too)."""
    fam, model, adapter, dims = family
    selection, new_dims = apply.plan_selection(adapter, dims, scored, Plan.parse(fam.plans[-1]))
    whole = adapter.build_model(adapter.make_config(model.config, new_dims))
    whole.load_state_dict(slice_state_dict(model.state_dict(), adapter, dims, selection), strict=True)
    monkeypatch.setattr(apply, "CHUNK_BYTES", 0)
    chunked = apply.apply_selection(model, selection, new_dims)
    got, want = chunked.state_dict(), whole.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    source = {t.untyped_storage().data_ptr() for t in model.state_dict().values()}
    assert not source & {t.untyped_storage().data_ptr() for t in got.values()}


def test_export_reloads_in_plain_transformers(family, scored, ids, tmp_path, plain_transformers):
    fam, model, adapter, dims = family
    pruned = prune(model, scored, fam.plans[0])
    out = export(pruned, tmp_path / "pruned")
    assert plain_transformers(out, ids[:2], tmp_path / "l.pt") == "ok"
    _same(torch.load(tmp_path / "l.pt", weights_only=True), logits(pruned, ids[:2]))


def test_greedy_generation_with_cache_equals_without(family, scored, ids):
    fam, model, adapter, dims = family
    pruned = prune(model, scored, fam.plans[-1])
    prompt = ids[:1, :5]
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = pruned.generate(prompt, use_cache=True, **kw)
        uncached = pruned.generate(prompt, use_cache=False, **kw)
    assert torch.equal(cached, uncached)


def test_refused_plans_name_the_valid_values(family, scored):
    fam, model, adapter, dims = family
    for plan, error, words in fam.refusals:
        with pytest.raises(error) as info:
            prune(model, scored, plan)
        for w in words:
            assert w in str(info.value), (plan, str(info.value))


# ---- search and distillation ------------------------------------------------------------------------
def test_search_keeps_representable_candidates_and_its_best_plan_prunes(family, scored, ids):
    fam, model, adapter, dims = family
    space = SearchSpace(max_width_pruning=0.5, max_depth_pruning=0.34)
    # every axis keeps two values, its original and its smallest default choice: the grid still spans each
    # axis and its group constraints, in 2^axes candidates (Qwen3-Next's default grid holds 160,000)
    widest = space.axis_choices(dims, adapter.fixed_axes)
    space = SearchSpace(max_width_pruning=0.5, max_depth_pruning=0.34,
                        choices={a: {v[0], v[-1]} for a, v in widest.items() if a != "num_layers"})
    cfg = SearchConfig(space=space, band=None, measure_speed=False, progress=False, top_k=1, max_candidates=4)
    result = search(model, scored, ids, Budget(params="0.85x"), cfg)
    assert result.candidates
    for c in result.candidates:  # the plan each candidate records builds a model the family can hold
        plan = Plan.from_dict(c["plan"])
        assert c["kept_blocks"] == [i for i in range(dims.num_layers) if i not in (plan.drop_layers or ())]
        adapter.check_representable(plan.target_dims(dims, c["kept_blocks"]), original=dims)  # raises if not
    best = prune(model, scored, result.best)
    assert adapter.num_parameters(adapter.dims(best.config)) <= 0.85 * adapter.num_parameters(dims)


def test_one_distillation_step_runs(family, scored, ids):
    from hybridprune import distill

    fam, model, adapter, dims = family
    student = prune(model, scored, fam.plans[0])
    before = {k: v.clone() for k, v in student.state_dict().items()}
    student = distill(model, student, ids, steps=1, global_batch=2, micro_batch=2, lr=1e-3, warmup=0,
                      progress=False, precision="fp32", plot=False, export=False)
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())


def test_layer_types_name_the_units_each_layer_holds(family):
    fam, model, adapter, dims = family
    for t in set(dims.block_kinds):
        assert adapter.layer_spec(t).kinds == unit_kinds(t)


def test_every_skip_names_a_check_of_the_battery():
    """A misspelt skip would silently run the check it means to skip (or skip nothing): each names a test here."""
    checks = {n.removeprefix("test_") for n in globals() if n.startswith("test_")}
    for fam in RECORDS:
        assert set(fam.skips) <= checks, (fam.name, sorted(set(fam.skips) - checks))


def test_jamba_is_refused_with_the_reason():
    from transformers import AutoConfig

    config = AutoConfig.for_model("jamba", vocab_size=96, hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, num_key_value_heads=1, num_experts=1)
    with pytest.raises(UnsupportedArchitecture, match="Mamba-1 mixers have no heads.*periods and offsets"):
        get_adapter(config)


# ---- the command line accepts every family's checkpoint ------------------------------------------------
@pytest.mark.parametrize("fam", RECORDS, ids=[f.name for f in RECORDS])
def test_cli_calibrates_and_prunes_each_family(fam, tmp_path):
    from typer.testing import CliRunner

    from hybridprune.cli import app
    from hybridprune.data import tokenizer_path
    from hybridprune.pruning.export import copy_tokenizer_files

    runner = CliRunner()
    build(fam.tiny_config(vocab_size=4096)).save_pretrained(tmp_path / "model")
    copy_tokenizer_files(tokenizer_path(), tmp_path / "model")
    result = runner.invoke(app, ["calibrate", "--model", str(tmp_path / "model"), "--data", "shakespeare",
                                 "--samples", "4", "--seq-len", "16", "--batch-size", "2", "--depth-samples", "2",
                                 "--out", str(tmp_path / "scores")])
    assert result.exit_code == 0, result.output
    plan = ",".join(f"{k}={'+'.join(map(str, v)) if isinstance(v, list) else v}"
                    for k, v in fam.plans[0].items())
    result = runner.invoke(app, ["prune", "--model", str(tmp_path / "model"), "--scores", str(tmp_path / "scores"),
                                 "--plan", plan, "--out", str(tmp_path / "pruned")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pruned" / "config.json").is_file()


@pytest.mark.parametrize("dtype,dtype_name", [(torch.float32, "float32"), (torch.bfloat16, "bfloat16")])
def test_analytic_cache_matches_a_real_cache(family, scored, dtype, dtype_name):
    from hybridprune.archsearch import cache_bytes

    fam, model, adapter, dims = family
    pruned = prune(model, scored, fam.plans[-1]).to(dtype)
    new_dims = adapter.dims(pruned.config)
    measured = measured_cache_bytes(pruned, batch=2, seq_len=9)
    kw = {"batch": 2, "seq_len": 9, "dtype": dtype_name, "ssm_state_dtype": "float32"}
    assert cache_bytes(new_dims, adapter=adapter, **kw) == measured  # the units' sum


def _former_cache_bytes(d, *, batch, seq_len, dtype, ssm_state_dtype):
    """The cache model as it was before the unit layouts stated it: one formula per unit kind, with the
    Dims extras for the layouts that differ."""
    from hybridprune.architectures.base import ATTENTION, CONV, GDN, MAMBA
    from hybridprune.architectures.cache import dtype_bytes

    b, s = dtype_bytes(dtype), dtype_bytes(ssm_state_dtype)
    kv = conv = ssm = 0
    if d.count_of(ATTENTION):
        width = d.extra("kv_cache_width") or 2 * d.num_key_value_heads * d.attention_head_dim
        kv = d.count_of(ATTENTION) * batch * seq_len * width * b
    if d.count_of(MAMBA):
        inner = d.mamba_num_heads * d.mamba_head_dim
        conv_dim = d.extra("conv_streams") * inner if d.extra("conv_streams") else inner + 2 * d.mamba_n_groups * d.mamba_state_size
        conv = d.count_of(MAMBA) * batch * conv_dim * d.mamba_conv_kernel * b
        ssm = d.count_of(MAMBA) * batch * inner * d.mamba_state_size * s
    conv += d.count_of(CONV) * batch * d.hidden_size * (d.extra("conv_L_cache") or 0) * b
    if d.count_of(GDN):
        kd, vd = d.linear_num_key_heads * d.linear_key_head_dim, d.linear_num_value_heads * d.linear_value_head_dim
        conv += d.count_of(GDN) * batch * (2 * kd + vd) * d.linear_conv_kernel_dim * b
        ssm += d.count_of(GDN) * batch * d.linear_num_value_heads * d.linear_key_head_dim * d.linear_value_head_dim * s
    return {"kv": kv, "conv": conv, "ssm": ssm}


@pytest.mark.parametrize("dtype_name,state", [("bfloat16", "float32"), ("float32", "float16")])
def test_unit_caches_equal_the_former_cache_model(family, dtype_name, state):
    """Each layout states its unit's cache; their sum is what the one formula per kind gave, for the
    family's dimensions, a shallower model and narrower widths."""
    from hybridprune.architectures.cache import cache_bytes

    _, _, adapter, dims = family
    halved = {f: max(1, getattr(dims, f) // 2) for f in ("num_key_value_heads", "mamba_num_heads",
                                                            "linear_num_value_heads") if getattr(dims, f)}
    for d in (dims, dims.replace(block_kinds=dims.block_kinds[1:]), dims.replace(hidden_size=dims.hidden_size // 2, **halved)):
        kw = {"batch": 3, "seq_len": 7, "dtype": dtype_name, "ssm_state_dtype": state}
        former = _former_cache_bytes(d, **kw)
        assert cache_bytes(d, adapter=adapter, **kw) == former


def _former_logit_scale(model) -> float:
    """The logit scale as the distillation read it before the adapters stated it: any config's
    `logits_scaling` divides, any `lm_head_multiplier` multiplies."""
    scale, div = 1.0, getattr(model.config, "logits_scaling", None)
    if div not in (None, 0):
        scale /= float(div)
    mult = getattr(model.base_model, "lm_head_multiplier", None)
    mult = getattr(model.config, "lm_head_multiplier", None) if mult is None else mult
    return scale * float(mult) if mult is not None else scale


def _assert_logits_are_scaled_head(model, scale, ids):
    from hybridprune.distillation.models import final_hidden

    head = model.get_output_embeddings()
    with torch.no_grad():
        ref = model(input_ids=ids, use_cache=False).logits
        z = torch.nn.functional.linear(final_hidden(model, ids, None), head.weight, head.bias) * scale
    torch.testing.assert_close(z, ref)


def test_logit_scale_is_what_the_forward_applies(family, ids):
    from hybridprune.distillation.models import logit_scale

    _, model, adapter, _ = family
    scale = adapter.logit_scale(model.config)
    assert logit_scale(model) == scale == _former_logit_scale(model)
    _assert_logits_are_scaled_head(model, scale, ids)


@pytest.mark.parametrize("name,overrides,scale", [("granitemoehybrid", {"logits_scaling": 4.0}, 0.25),
                                                  ("falcon_h1", {"lm_head_multiplier": 0.375}, 0.375)])
def test_scaled_logits_of_granite_and_falcon_h1(name, overrides, scale, ids):
    model = build(tiny_config(name, **overrides))
    assert get_adapter(model).logit_scale(model.config) == scale == _former_logit_scale(model)
    _assert_logits_are_scaled_head(model, scale, ids)


def test_scan_chunk_and_state_dtype_are_the_configs(family):
    """One definition of the scan chunk and of the cache's state dtype, equal to what the callers read."""
    _, model, adapter, _ = family
    c = model.config
    assert adapter.scan_chunk(c) == int(getattr(c, "chunk_size", None) or getattr(c, "mamba_chunk_size", None) or 128)
    assert adapter.cache_state_dtype(c) == str(getattr(c, "mamba_ssm_cache_dtype", None) or "float32").replace("torch.", "")


def test_zamba2_shared_block_gets_one_selection_for_all_call_sites(ids):
    """Both hybrid layers call the same transformer block: calibration scores both call sites into the
    first one's entry, and every call site keeps the same FFN neurons (tied weights stay tied)."""
    from hybridprune.pruning.selection import select

    model = build(tiny_config("zamba2"))
    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    scores = calibrate(model, ids, progress=False)
    assert sorted(scores.ffn) == [1] and sorted(scores.attention) == [1]
    assert sorted(scores.mamba) == list(range(dims.num_layers))
    sel = select(scores, Plan(ffn_hidden_size=40), dims, owners=adapter.unit_owners(dims))
    assert sel.ffn[1].tolist() == sel.ffn[3].tolist()  # numpy index arrays
    state = slice_state_dict(model.state_dict(), adapter, dims, sel)
    for name in ("feed_forward.gate_up_proj.weight", "feed_forward.down_proj.weight"):
        a, b = (state[f"model.layers.{i}.shared_transformer.{name}"] for i in (1, 3))
        assert torch.equal(a, b)
    # the per-call-site adapters are cut by the same neurons, each keeping its own weights
    a0 = state["model.layers.1.shared_transformer.feed_forward.gate_up_proj_adapter_list.0.1.weight"]
    assert a0.shape == (80, 4)


@pytest.mark.parametrize("attention_adapters", [True, False])
def test_zamba2_with_two_shared_blocks_counts_and_prunes_exactly(attention_adapters, ids):
    model = build(tiny_config("zamba2", num_mem_blocks=2, use_shared_attention_adapter=attention_adapters,
                              add_bias_linear=not attention_adapters,
                              layers_block_type=["hybrid", "mamba", "hybrid", "hybrid", "mamba"]))
    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    assert adapter.unit_owners(dims) == {("mlp", 0): 0, ("attention", 0): 0, ("mlp", 2): 2, ("attention", 2): 2,
                                         ("mlp", 3): 0, ("attention", 3): 0}
    assert adapter.num_parameters(dims) == sum(p.numel() for p in model.parameters())
    pruned = prune(model, calibrate(model, ids, progress=False),
                   dict(ffn_hidden_size=40, mamba_num_heads=6, drop_layers=[1]))
    assert adapter.num_parameters(adapter.dims(pruned.config)) == sum(p.numel() for p in pruned.parameters())
    assert pruned.config.hybrid_layer_ids == [0, 1, 2]
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        assert torch.equal(pruned.generate(ids[:1, :4], use_cache=True, **kw),
                           pruned.generate(ids[:1, :4], use_cache=False, **kw))
