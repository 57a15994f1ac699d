"""`search`: the best architecture under a budget (Minitron-SSM §5).

1. build the candidate grid; 2. keep the candidates whose analytic cost fits the budget; 3. drop those
the config cannot represent; 4. prune every survivor from the one saved Scores and measure its zero-shot
validation loss; 5. give the top-K a short distillation from the unpruned model and measure again;
6. pick the lowest loss. Losses within a tolerance tie; the tie is broken by the analytic cost (fewer
parameters, then less inference memory, then the key), which is the same on every run, or, only when
asked (`tie_break="speed"`), by the measured throughput, which varies with the machine's load. What
decided is recorded in `summary.json`. Every finished evaluation is appended to `candidates.jsonl` at
once, so an interrupted search resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from ..architectures import get_adapter
from ..architectures.serving import check_tensor_parallel, parse_engines
from ..evaluate.perplexity import NonFiniteLoss, evaluate_loss
from ..evaluate.speed import measure_throughput
from ..importance.scores import EXPERT_IMPORTANCE, GDN_IMPORTANCE, Scores, model_fingerprint
from ..pruning.apply import prune
from ..pruning.plan import Plan
from .cost import Budget
from .filtering import FilterReport, filter_candidates
from .space import SearchSpace, build_grid
from .shared_topk import shared_topk
from .store import FINAL, ZERO_SHOT, SearchStore


class SearchError(ValueError):
    """The search cannot run as asked; the message says what to change."""


Finetune = Callable[[torch.nn.Module, torch.nn.Module, Any, Mapping[str, Any]], torch.nn.Module]


@dataclass
class SearchConfig:
    """Settings of a search besides the model, scores, data and budget.

    - `kd`: the short distillation of the top-K, as `DistillConfig` fields (`{"steps": 50}` or
      `{"tokens": 2e7, "lr": 1e-4, "global_batch": 8}`); None ranks by zero-shot loss alone.
    - `band`, `max_candidates`: which of the candidates that fit are evaluated (see `filter_candidates`).
    - `tie_tolerance`: losses within this of the best count as a tie.
    - `tie_break`: what breaks a tie: "cost" (default: fewer parameters, then less inference memory,
      then the key; reproducible) or "speed" (the highest measured throughput; needs `measure_speed`,
      and may pick another winner on a busier machine).
    - `measure_speed`, `speed_batch`, `speed_seq_len`: forward throughput of the top-K (tokens/s),
      shown in the results; `speed_seq_len` defaults to the evaluation data's sequence length.
    - `expert_importance`: how a MoE model's routed experts are ranked when candidates are pruned
      (see `hybridprune.prune`); `gdn_importance`: which activation ranks Gated DeltaNet value heads.
    - `serve_with`, `tensor_parallel`: serving engines ("vllm", "llama.cpp") every candidate must run
      on, at this many GPUs for vLLM; others are left out of the search (`architectures.serving`).
    """

    space: SearchSpace = field(default_factory=SearchSpace)
    top_k: int = 10
    kd: dict[str, Any] | None = None
    band: float | None = 0.1
    max_candidates: int | None = None
    batch_size: int = 8
    tie_tolerance: float = 0.005
    tie_break: str = "cost"
    measure_speed: bool = True
    speed_batch: int = 1
    speed_seq_len: int | None = None
    progress: bool = True
    expert_importance: str = "output_norm"
    gdn_importance: str = "out_proj"
    serve_with: tuple[str, ...] | str = ()
    tensor_parallel: int = 1

    def validate(self) -> None:
        """Every setting, before anything is computed: a bad short-KD setting would otherwise surface
        only after every candidate's zero-shot loss."""
        for name in ("top_k", "batch_size", "speed_batch", "max_candidates", "speed_seq_len"):
            value = getattr(self, name)
            if value is None and name in ("max_candidates", "speed_seq_len"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SearchError(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.tie_tolerance, (int, float)) and math.isfinite(self.tie_tolerance)
                and self.tie_tolerance >= 0):
            raise SearchError(f"tie_tolerance must be a number >= 0, got {self.tie_tolerance!r}")
        if self.band is not None and not (isinstance(self.band, (int, float)) and 0 <= self.band <= 1):
            raise SearchError(f"band must be a fraction in [0, 1] or None, got {self.band!r}")
        if self.tie_break not in TIE_BREAKS:
            raise SearchError(f"tie_break must be one of {', '.join(TIE_BREAKS)}, got {self.tie_break!r}")
        if self.tie_break == "speed" and not self.measure_speed:
            raise SearchError("tie_break='speed' needs the throughput: set measure_speed=True (or tie_break='cost')")
        if self.expert_importance not in EXPERT_IMPORTANCE:
            raise SearchError(f"expert_importance must be one of {', '.join(EXPERT_IMPORTANCE)}, "
                              f"got {self.expert_importance!r}")
        if self.gdn_importance not in GDN_IMPORTANCE:
            raise SearchError(f"gdn_importance must be one of {', '.join(GDN_IMPORTANCE)}, got {self.gdn_importance!r}")
        if self.kd is not None:
            kd_config(self.kd, device=None, seq_len=None)
        try:
            self.serve_with = parse_engines(self.serve_with)
            check_tensor_parallel(self.tensor_parallel, self.serve_with)
        except ValueError as exc:
            raise SearchError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["space"] = self.space.to_dict()
        d.pop("progress")
        if not self.serve_with and self.tensor_parallel == 1:  # settings of searches started before these existed
            d.pop("serve_with")
            d.pop("tensor_parallel")
        else:
            d["serve_with"] = list(parse_engines(self.serve_with))
        return d


#: How a tie within `tie_tolerance` is broken, and how `summary.json` names it.
TIE_BREAKS = {"cost": "tie: analytic cost", "speed": "tie: measured speed"}


@dataclass
class SearchResult:
    """The winner and every evaluated candidate (merged records, best first)."""

    best: Plan
    best_key: str
    candidates: list[dict[str, Any]]
    report: FilterReport
    axis_choices: dict[str, list[int]]
    out_dir: Path | None = None
    #: what chose the winner: {"decided_by": "loss" | "tie: analytic cost" | "tie: measured speed",
    #: "tied": [keys within the tolerance, in tie-break order], "tie_break", "tie_tolerance"}
    decision: dict[str, Any] = field(default_factory=dict)

    @property
    def best_candidate(self) -> dict[str, Any]:
        return next(c for c in self.candidates if c["key"] == self.best_key)

    def top(self, n: int) -> list[dict[str, Any]]:
        return self.candidates[:n]


def kd_config(kd: Mapping[str, Any], *, device: str | None, seq_len: int | None):
    """The `DistillConfig` of the short KD: quiet and file-less, checked. A warmup not given explicitly
    is capped at a tenth of the run (when `seq_len` is known), so a short run reaches its learning rate."""
    from ..distillation import DistillConfig

    if not isinstance(kd, Mapping):
        raise SearchError(f"kd must be a mapping of DistillConfig fields (e.g. {{'steps': 50}}), got {kd!r}")
    settings = {"progress": False, "export": False, "plot": False, "out_dir": None, "device": device, **dict(kd)}
    unknown = sorted(set(settings) - set(DistillConfig.field_names()))
    if unknown:
        raise SearchError(f"kd: unknown distillation setting(s) {unknown}; valid: {DistillConfig.field_names()}")
    cfg = DistillConfig(**settings)
    try:
        cfg.validate()
    except (TypeError, ValueError) as exc:
        raise SearchError(f"kd (the short distillation of the top-K): {exc}") from None
    if "warmup" not in kd and seq_len is not None:
        cfg.warmup = min(cfg.warmup, cfg.total_steps(seq_len) // 10)
    return cfg


def distill_finetune(teacher, student, data, kd: Mapping[str, Any]):
    """The default short KD: `hybridprune.distillation.distill` with the settings of `kd_config`."""
    from ..distillation import distill

    device = str(next(student.parameters()).device)  # train where the search runs
    cfg = kd_config(kd, device=device, seq_len=_seq_len(data))
    flags = [p.requires_grad for p in teacher.parameters()]
    cached = shared_topk(teacher, data, cfg) if cfg.kd_topk else None
    try:
        return distill(teacher, student, data, cfg, teacher_logits=cached)
    finally:
        for p, flag in zip(teacher.parameters(), flags):
            p.requires_grad_(flag)


def _seq_len(data) -> int:
    if hasattr(data, "seq_len"):
        return int(data.seq_len)
    if isinstance(data, torch.Tensor) and data.dim() == 2:
        return int(data.shape[1])
    raise SearchError("give the data as a TokenSamples or a LongTensor [N, T] (or set speed_seq_len)")


def _fingerprint_tensors(*tensors: torch.Tensor | None) -> str:
    h = hashlib.sha256()
    for t in tensors:
        if t is not None:
            t = t.detach().cpu().contiguous()
            h.update(str((tuple(t.shape), str(t.dtype))).encode())
            h.update(t.float().numpy().tobytes() if t.is_floating_point() else t.numpy().tobytes())
    return h.hexdigest()[:16]


def data_fingerprint(data) -> str | None:
    if data is None:
        return None
    if hasattr(data, "input_ids"):
        return _fingerprint_tensors(data.input_ids, getattr(data, "attention_mask", None))
    if isinstance(data, torch.Tensor):
        return _fingerprint_tensors(data)
    return type(data).__name__


def scores_fingerprint(scores: Scores) -> str:
    tensors = scores.tensors()
    return _fingerprint_tensors(*(tensors[k] for k in sorted(tensors)))


def search(model: torch.nn.Module, scores: Scores, data, budget: Budget, config: SearchConfig | None = None, *,
           train_data=None, teacher: torch.nn.Module | None = None, finetune: Finetune | None = None,
           out_dir: str | Path | None = None, overwrite: bool = False, console=None, checkpoint_config=None,
           **overrides) -> SearchResult:
    """Search the architecture of lowest validation loss under `budget`; see the module docstring.

    `data`: validation samples for the losses (a `TokenSamples` or LongTensor `[N, T]`); `train_data`:
    samples for the short KD (needed when `config.kd` is set); `teacher`: defaults to `model`;
    `finetune(teacher, student, train_data, kd) -> student` replaces the default `distill_finetune`.
    `checkpoint_config`: the config of the checkpoint the plan is for, when `model` is only part of it (a
    vision-language wrapper's language model): the budget then counts the whole checkpoint.
    With `out_dir`, results go to `candidates.jsonl` as they finish, and the winner to `best.yaml`, a
    table-ready `summary.json` and a size-loss plot `search.png`; re-running resumes.
    Keyword `overrides` set `SearchConfig` fields, e.g. `search(m, s, d, b, top_k=3)`.
    """
    from . import report as show

    unknown = sorted(set(overrides) - {f.name for f in fields(SearchConfig)})
    if unknown:
        raise TypeError(f"unknown search settings {unknown}; valid: {[f.name for f in fields(SearchConfig)]}")
    cfg = replace(config or SearchConfig(), **overrides)
    cfg.validate()
    if cfg.kd and train_data is None:
        raise SearchError("the short distillation of the top-K (kd) needs train_data")
    say = show.Printer(console if console is not None else (show.default_console() if cfg.progress else None))
    adapter = get_adapter(model)
    original = adapter.dims(model.config)
    # the budget counts what the checkpoint `prune` writes holds: a vision-language wrapper's vision tower
    # too, though the model searched on is its language model (`checkpoint_config`: the wrapper's config)
    costed = get_adapter(checkpoint_config) if checkpoint_config is not None else adapter
    if costed is not adapter:
        original = original.replace(extras=costed.dims(checkpoint_config).extras)
    # before the grid: depth candidates are ranked by these scores
    scores.check_against(original, owners=adapter.unit_owners(original))
    grid, choices = build_grid(original, cfg.space, scores, adapter.required_kinds, adapter.fixed_axes)
    candidates, report = filter_candidates(costed, original, grid, budget, band=cfg.band,
                                           max_candidates=cfg.max_candidates, serve_with=cfg.serve_with,
                                           tensor_parallel=cfg.tensor_parallel)
    say.axes(choices, original)
    say.lines(report.lines())
    finetune = finetune or distill_finetune
    fingerprint = model_fingerprint(model)  # once: every candidate is pruned from this same model
    measured = {k: v for k, v in cfg.to_dict().items() if k != "tie_break"}  # re-deciding needs no re-measuring
    settings = {
        "budget": budget.to_dict(), "config": measured, "model": fingerprint,
        "scores": scores_fingerprint(scores), "data": data_fingerprint(data),
        "train_data": data_fingerprint(train_data) if cfg.kd else None,
        "finetune": getattr(finetune, "__qualname__", type(finetune).__name__) if cfg.kd else None,
    }
    store = SearchStore(out_dir)
    found = store.open(settings, overwrite=overwrite)
    if found:
        say.lines([f"resuming: {found} evaluations already in {store.path('candidates.jsonl')}"])
    teacher = teacher if teacher is not None else model
    by_key = {c.key: (c, cost) for c, cost in candidates}

    def pruned(key: str) -> torch.nn.Module:
        return prune(model, scores, by_key[key][0].plan(original), fingerprint=fingerprint,
                     expert_importance=cfg.expert_importance, gdn_importance=cfg.gdn_importance)

    # zero-shot loss of every candidate
    todo = [k for k in by_key if store.get(ZERO_SHOT, k) is None]
    with say.progress("zero-shot loss", len(todo)) as advance:
        for key in todo:
            c, cost = by_key[key]
            start = time.perf_counter()
            student = pruned(key)
            ev = _loss(student, data, cfg.batch_size)
            del student
            store.add({"stage": ZERO_SHOT, "key": key, "values": dict(c.values), "plan": c.plan(original).to_dict(),
                       "kept_blocks": list(c.kept_blocks), "cost": cost.to_dict(), "loss": ev["loss"],
                       "perplexity": ev["perplexity"], "tokens": ev["tokens"],
                       "seconds": time.perf_counter() - start})
            advance(f"{key}: loss {ev['loss']:.4f} ({time.perf_counter() - start:.1f}s)")

    ranked = sorted(by_key, key=lambda k: (store.get(ZERO_SHOT, k)["loss"], k))
    top = ranked[: cfg.top_k]
    speed_len = cfg.speed_seq_len or (_seq_len(data) if cfg.measure_speed else 0)
    todo = [k for k in top if store.get(FINAL, k) is None]
    what = "short distillation + loss" if cfg.kd else "throughput of the top-K"
    with say.progress(what, len(todo)) as advance:
        for key in todo:
            start = time.perf_counter()
            student = pruned(key)
            if cfg.kd:
                student = finetune(teacher, student, train_data, dict(cfg.kd))
                loss = _loss(student, data, cfg.batch_size)
            else:
                loss = {k: store.get(ZERO_SHOT, key)[k] for k in ("loss", "perplexity", "tokens")}
            tps = measure_throughput(student, cfg.speed_batch, speed_len) if cfg.measure_speed else None
            del student
            store.add({"stage": FINAL, "key": key, "loss": loss["loss"], "perplexity": loss["perplexity"],
                       "tokens": loss["tokens"], "kd": cfg.kd, "throughput": tps,
                       "seconds": time.perf_counter() - start})
            advance(f"{key}: loss {loss['loss']:.4f}" + (f", {tps:,.0f} tokens/s" if tps else ""))

    merged = _merge(store, ranked, top)
    decision = decide(merged[: len(top)], cfg.tie_tolerance, cfg.tie_break)
    best_key = decision["best"]
    merged.sort(key=lambda c: c["key"] != best_key)  # stable: the winner first, the order otherwise kept
    best_plan = by_key[best_key][0].plan(original)
    result = SearchResult(best=best_plan, best_key=best_key, candidates=merged, report=report,
                          axis_choices=choices, out_dir=store.dir,
                          decision={k: v for k, v in decision.items() if k != "best"})
    show.write_outputs(result, store, budget, original, scores.origin)
    return result


def _loss(model, data, batch_size: int) -> dict[str, Any]:
    """The validation loss; a candidate whose loss is not finite ranks last instead of stopping the search."""
    try:
        return evaluate_loss(model, data, batch_size=batch_size)
    except NonFiniteLoss:
        return {"loss": float("inf"), "perplexity": float("inf"), "tokens": 0}


def _merge(store: SearchStore, ranked: list[str], top: list[str]) -> list[dict[str, Any]]:
    """One dict per candidate: the top-K by final loss first, then the rest by zero-shot loss."""
    out = []
    for key in ranked:
        z = store.get(ZERO_SHOT, key)
        f = store.get(FINAL, key) if key in top else None
        cost = z["cost"]
        out.append({
            "key": key, "values": z["values"], "plan": z["plan"], "kept_blocks": z["kept_blocks"],
            "params": cost["params"], "params_non_embedding": cost["params_non_embedding"],
            "memory_mb": cost["memory_mb"], "active_params": cost.get("active_params", cost["params"]),
            "zero_shot_loss": z["loss"],
            "loss": f["loss"] if f else None, "throughput": f["throughput"] if f else None,
            "kd": f["kd"] if f else None,
        })
    finals = sorted((c for c in out if c["loss"] is not None), key=lambda c: (c["loss"], c["key"]))
    rest = [c for c in out if c["loss"] is None]
    return finals + rest


def _cost_order(c: dict[str, Any]) -> tuple:
    return (c["params"], c["memory_mb"], c["loss"], c["key"])


def _speed_order(c: dict[str, Any]) -> tuple:
    tps = c.get("throughput")
    return (-(tps if tps is not None else float("-inf")), c["loss"], c["key"])


def decide(finals: list[dict[str, Any]], tolerance: float, tie_break: str = "cost") -> dict[str, Any]:
    """The winner and what decided it. The lowest final loss wins; candidates within `tolerance` of it
    tie, and `tie_break` orders the tied: "cost" by (parameters, inference memory, loss, key), known
    exactly from the dimensions and so the same on every run; "speed" by measured throughput."""
    if tie_break not in TIE_BREAKS:
        raise SearchError(f"tie_break must be one of {', '.join(TIE_BREAKS)}, got {tie_break!r}")
    best_loss = min(c["loss"] for c in finals)
    tied = [c for c in finals if c["loss"] <= best_loss + tolerance]
    tied.sort(key=_cost_order if tie_break == "cost" else _speed_order)
    return {"best": tied[0]["key"], "decided_by": "loss" if len(tied) == 1 else TIE_BREAKS[tie_break],
            "tied": [c["key"] for c in tied] if len(tied) > 1 else [], "tie_break": tie_break,
            "tie_tolerance": tolerance}


def choose_best(finals: list[dict[str, Any]], tolerance: float, tie_break: str = "cost") -> str:
    """The key of the winner (see `decide`)."""
    return decide(finals, tolerance, tie_break)["best"]
