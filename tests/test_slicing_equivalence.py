"""Slicing is proven against independent truths: permutations inside groups change nothing,
removing a unit equals zeroing it where the maths says so, and cross-group moves do change the output."""

from __future__ import annotations

import torch

from conftest import build, tiny_mamba2_config, tiny_nemotron_config
from hybridprune.architectures import get_adapter
from hybridprune.pruning.selection import Selection
from hybridprune.pruning.slicing import slice_state_dict


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def rebuilt(model, selection):
    """Slice `model` with `selection` into a model of the same config (permutation selections)."""
    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    state = slice_state_dict(model.state_dict(), adapter, dims, selection)
    other = build(model.config, seed=123)
    other.load_state_dict(state, strict=True)
    return other


def within_group_permutation(n: int, groups: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    size = n // groups
    return torch.cat([k * size + torch.randperm(size, generator=g) for k in range(groups)])


def test_permuting_mamba_heads_within_groups_keeps_logits(nemotron, tokens):
    dims = get_adapter(nemotron).dims(nemotron.config)
    perm = within_group_permutation(dims.mamba_num_heads, dims.mamba_n_groups, seed=0)
    channels = torch.randperm(dims.mamba_head_dim, generator=torch.Generator().manual_seed(1))
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    for i in dims.layers_of("mamba"):
        sel.mamba_heads[i], sel.mamba_channels[i] = perm, channels
    assert not torch.equal(perm, torch.arange(dims.mamba_num_heads))
    torch.testing.assert_close(logits(rebuilt(nemotron, sel), tokens), logits(nemotron, tokens), atol=1e-5, rtol=1e-5)


def test_permuting_mamba_heads_across_groups_changes_logits(nemotron, tokens):
    """Negative control: the equivalence test above can fail. Swapping a head of group 0 with one of
    group 1 pairs it with the wrong B/C and changes the output."""
    dims = get_adapter(nemotron).dims(nemotron.config)
    perm = torch.arange(dims.mamba_num_heads)
    per_group = dims.mamba_num_heads // dims.mamba_n_groups
    perm[0], perm[per_group] = per_group, 0
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    for i in dims.layers_of("mamba"):
        sel.mamba_heads[i] = perm
    diff = (logits(rebuilt(nemotron, sel), tokens) - logits(nemotron, tokens)).abs().max()
    assert diff > 1e-3


def test_permuting_mamba2_heads_within_groups_keeps_logits(mamba2, tokens):
    dims = get_adapter(mamba2).dims(mamba2.config)
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    for i in dims.layers_of("mamba"):
        sel.mamba_heads[i] = within_group_permutation(dims.mamba_num_heads, dims.mamba_n_groups, seed=i)
    torch.testing.assert_close(logits(rebuilt(mamba2, sel), tokens), logits(mamba2, tokens), atol=1e-5, rtol=1e-5)


def test_permuting_ffn_neurons_keeps_logits(nemotron, tokens):
    dims = get_adapter(nemotron).dims(nemotron.config)
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    for i in dims.layers_of("mlp"):
        sel.ffn[i] = torch.randperm(dims.ffn_hidden_size, generator=torch.Generator().manual_seed(i))
    torch.testing.assert_close(logits(rebuilt(nemotron, sel), tokens), logits(nemotron, tokens), atol=1e-5, rtol=1e-5)


def test_permuting_attention_heads_within_kv_groups_keeps_logits(nemotron, tokens):
    dims = get_adapter(nemotron).dims(nemotron.config)
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    for i in dims.layers_of("attention"):
        sel.attention_heads[i] = within_group_permutation(dims.num_attention_heads, dims.num_key_value_heads, seed=5)
    torch.testing.assert_close(logits(rebuilt(nemotron, sel), tokens), logits(nemotron, tokens), atol=1e-5, rtol=1e-5)


def test_permuting_hidden_channels_keeps_logits(nemotron, tokens):
    dims = get_adapter(nemotron).dims(nemotron.config)
    sel = Selection(kept_blocks=list(range(dims.num_layers)),
                    hidden=torch.randperm(dims.hidden_size, generator=torch.Generator().manual_seed(3)))
    torch.testing.assert_close(logits(rebuilt(nemotron, sel), tokens), logits(nemotron, tokens), atol=1e-5, rtol=1e-5)


def _pruned_with_selection(model, selection, **config_changes):
    adapter = get_adapter(model)
    dims = adapter.dims(model.config)
    new_dims = dims.replace(**config_changes)
    config = adapter.make_config(model.config, new_dims)
    state = slice_state_dict(model.state_dict(), adapter, dims, selection)
    pruned = build(config, seed=7)
    pruned.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in pruned.parameters()) == adapter.num_parameters(new_dims)
    return pruned


def test_removing_ffn_neurons_equals_zeroing_them(nemotron, tokens):
    dims = get_adapter(nemotron).dims(nemotron.config)
    removed = torch.tensor([0, 5, 6, 17, 40, 63])
    kept = torch.tensor([j for j in range(dims.ffn_hidden_size) if j not in removed.tolist()])
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    zeroed = build(nemotron.config)
    zeroed.load_state_dict(nemotron.state_dict())
    with torch.no_grad():
        for i in dims.layers_of("mlp"):
            sel.ffn[i] = kept
            zeroed.model.layers[i].mixer.down_proj.weight[:, removed] = 0.0
    pruned = _pruned_with_selection(nemotron, sel, ffn_hidden_size=len(kept))
    torch.testing.assert_close(logits(pruned, tokens), logits(zeroed, tokens), atol=1e-5, rtol=1e-5)
    assert (logits(pruned, tokens) - logits(nemotron, tokens)).abs().max() > 1e-4


def test_removing_attention_heads_equals_zeroing_them(nemotron, tokens):
    dims = get_adapter(nemotron).dims(nemotron.config)
    hd = dims.attention_head_dim
    kept = torch.tensor([0, 2, 5, 7])  # two query heads from each of the two KV groups (4 heads each)
    removed = [h for h in range(dims.num_attention_heads) if h not in kept.tolist()]
    sel = Selection(kept_blocks=list(range(dims.num_layers)))
    zeroed = build(nemotron.config)
    zeroed.load_state_dict(nemotron.state_dict())
    with torch.no_grad():
        for i in dims.layers_of("attention"):
            sel.attention_heads[i] = kept
            for h in removed:
                zeroed.model.layers[i].mixer.o_proj.weight[:, h * hd:(h + 1) * hd] = 0.0
    pruned = _pruned_with_selection(nemotron, sel, num_attention_heads=len(kept))
    torch.testing.assert_close(logits(pruned, tokens), logits(zeroed, tokens), atol=1e-5, rtol=1e-5)


def test_dropping_a_block_equals_zeroing_its_output(nemotron, tokens):
    """A residual block whose output projection is zero is the identity, so removing it is exact."""
    dims = get_adapter(nemotron).dims(nemotron.config)
    drop = [1, 4]  # an MLP block and a Mamba block
    zeroed = build(nemotron.config)
    zeroed.load_state_dict(nemotron.state_dict())
    with torch.no_grad():
        zeroed.model.layers[1].mixer.down_proj.weight.zero_()
        zeroed.model.layers[4].mixer.out_proj.weight.zero_()
    sel = Selection(kept_blocks=[i for i in range(dims.num_layers) if i not in drop])
    pruned = _pruned_with_selection(zeroed, sel, block_kinds=tuple(dims.block_kinds[i] for i in sel.kept_blocks))
    assert pruned.config.layers_block_type == ["linear_attention", "full_attention", "mlp", "mlp"]
    torch.testing.assert_close(logits(pruned, tokens), logits(zeroed, tokens), atol=1e-5, rtol=1e-5)


def test_identity_selection_reproduces_the_model(nemotron, mamba2, tokens):
    for model in (nemotron, mamba2):
        dims = get_adapter(model).dims(model.config)
        out = rebuilt(model, Selection(kept_blocks=list(range(dims.num_layers))))
        assert torch.equal(logits(out, tokens), logits(model, tokens))


def test_gated_norm_is_grouped_per_ssm_group(nemotron):
    """Pin the transformers behaviour the slicing relies on: the gated norm normalises each SSM group
    separately, so keeping equal heads per group keeps norm groups aligned with SSM groups."""
    mixer = nemotron.model.layers[0].mixer
    n, g = mixer.norm.weight.numel(), nemotron.config.n_groups
    x, z = torch.randn(2, 3, n), torch.randn(2, 3, n)
    y = (x * torch.nn.functional.silu(z)).view(2, 3, g, n // g)
    expected = (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + mixer.norm.variance_epsilon)).view(2, 3, n)
    torch.testing.assert_close(mixer.norm(x, z), mixer.norm.weight * expected)


def test_mamba2_tied_embeddings_slice_consistently(tokens):
    model = build(tiny_mamba2_config(tie_word_embeddings=True))
    dims = get_adapter(model).dims(model.config)
    kept = torch.sort(torch.randperm(48, generator=torch.Generator().manual_seed(0))[:24]).values
    sel = Selection(kept_blocks=list(range(dims.num_layers)), hidden=kept)
    pruned = _pruned_with_selection(model, sel, hidden_size=24)  # 12 heads x 8 = 96 = 24 x expand 4
    assert pruned.config.expand == 4
    assert pruned.lm_head.weight.data_ptr() == pruned.backbone.embeddings.weight.data_ptr()
