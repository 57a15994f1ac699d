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
