"""The MoE calibration statistics computed by hand, token by token, from the routing the experts module saw:
the independent truth the families' expert-score tests compare `calibrate` against."""

from __future__ import annotations

import torch


def check_expert_scores(scores, layer: int, x, index, weights, expert, *, num_experts: int, width: int,
                        samples: int, close: dict) -> None:
    """Assert `scores`' expert statistics of `layer` equal a direct computation.

    `x` [tokens, hidden], `index` / `weights` [tokens, top-k]: the experts module's inputs; `expert(e, token)`
    gives expert e's FFN activation [width] and output [hidden] for one token's hidden state. Tokens are
    `samples` equal runs in order (a [samples, seq] batch flattened). Output norm and router-weighted norm are
    means over the tokens routed to each expert, the frequency is each expert's share of the routings, and
    the expert-neuron statistic is the L2 over samples of the per-sample mean |activation| (Minitron)."""
    norm_sum, weighted, count = torch.zeros(num_experts), torch.zeros(num_experts), torch.zeros(num_experts)
    per_sample, pairs = torch.zeros(samples, width), torch.zeros(samples)
    seq = x.shape[0] // samples
    for token in range(x.shape[0]):
        for slot in range(index.shape[1]):
            e = int(index[token, slot])
            a, out = expert(e, x[token])
            norm_sum[e] += out.norm()
            weighted[e] += weights[token, slot] * out.norm()
            count[e] += 1
            per_sample[token // seq] += a.abs()
            pairs[token // seq] += 1
    torch.testing.assert_close(scores.moe_experts[layer], norm_sum / count.clamp(min=1), **close)
    torch.testing.assert_close(scores.moe_router_weighted[layer], weighted / count.clamp(min=1), **close)
    torch.testing.assert_close(scores.moe_frequency[layer], count / count.sum())
    torch.testing.assert_close(scores.moe_ffn[layer], (per_sample / pairs[:, None]).pow(2).sum(0).sqrt(), **close)


def routed_inputs(model, ids, shared: str | None = None):
    """One forward of `ids`: for each layer holding experts, `(layer, (x, index, weights), shared_in)`: the
    experts module's inputs and, where `shared` names the shared expert's module, its down projection's input."""
    layers = [i for i, layer in enumerate(model.model.layers) if hasattr(layer.mlp, "experts")]
    seen, shared_in = [], []
    hooks = [model.model.layers[i].mlp.experts.register_forward_hook(lambda m, args, out: seen.append(args))
             for i in layers]
    if shared:
        hooks += [getattr(model.model.layers[i].mlp, shared).down_proj.register_forward_hook(
            lambda m, args, out: shared_in.append(args[0])) for i in layers]
    try:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return [(i, s, shared_in[n] if shared else None) for n, (i, s) in enumerate(zip(layers, seen))]


def silu_gated(experts):
    """`expert(e, h)` for `check_expert_scores`: SiLU-gated experts stored as gate ‖ up rows [E, 2F, H] and
    down [E, H, F]."""
    def expert(e, h):
        gate, up = (h @ experts.gate_up_proj[e].T).chunk(2)
        a = torch.nn.functional.silu(gate) * up
        return a, a @ experts.down_proj[e].T
    return expert
