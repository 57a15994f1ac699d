"""The search stage: its settings (`hybridprune search`'s options, a recipe's `search:` section) and
`run`, everything between those settings and a finished search directory.

`run` reuses saved scores when they are of this model (else calibrates once, on demand, and saves
them), reports an impossible budget before any weights are loaded when it can, checks the memory
forecast, and resumes an interrupted search from its candidate log (`archsearch.store`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Union

from .common import SILENT, Loader, LoadSettings, Voice, say_forecast

Size = Union[int, float, str]  # 4.5e9, 350M, or "0.5x" of the model searched


@dataclass
class SearchSettings:
    """Every option of the search; the command's flag of `kd_steps` is `--kd-steps`.

    `calib_samples` and `depth_samples` are used when the search calibrates on demand (no scores yet);
    a recipe's search reads its calibrate stage's scores, whose section sets them (`calibrate.samples`,
    `calibrate.depth_samples`). `skip` and `divisors` take the axes' Plan names or their short names
    (`hidden`, `ffn`, `heads`, `head_dim`, `attention_heads`, `depth`).
    """

    params: Size | None = None
    params_kind: str = "total"
    memory_mb: float | None = None
    active_params: Size | None = None
    expert_importance: str = "output_norm"
    gdn_importance: str = "out_proj"
    seq_len: int = 4096
    batch: int = 1
    memory_dtype: str = "bfloat16"
    top_k: int = 10
    kd_tokens: float | None = None
    kd_steps: int | None = None
    kd_lr: float = 1e-4
    kd_min_lr: float | None = None
    kd_batch: int = 8
    kd_micro_batch: int = 2
    kd_topk: int | None = None
    skip: list[str] = field(default_factory=list)
    divisors: str | dict | None = None
    max_width_pruning: float = 0.4
    max_depth_pruning: float = 0.2
    band: float = 0.1
    max_candidates: int | None = None
    eval_samples: int = 256
    eval_seq_len: int = 512
    batch_size: int = 8
    calib_samples: int = 256
    depth_samples: int = 16
    tie_tolerance: float = 0.005
    tie_break: str = "cost"
    speed: bool = True
    speed_batch: int = 1
    show: int = 10
    serve_with: str | None = None
    tensor_parallel: int = 1

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def values(self) -> dict:
        return asdict(self)

    def kd(self, seed: int) -> dict | None:
        """The short distillation of the top-K as `DistillConfig` fields; None: rank by zero-shot loss."""
        if self.kd_steps is None and self.kd_tokens is None:
            return None
        kd = {"steps": self.kd_steps} if self.kd_steps is not None else {"tokens": float(self.kd_tokens)}
        kd.update(lr=self.kd_lr, global_batch=self.kd_batch, micro_batch=min(self.kd_micro_batch, self.kd_batch))
        if self.kd_min_lr is not None:
            kd["min_lr"] = self.kd_min_lr
        if self.kd_topk:
            kd["kd_topk"] = self.kd_topk
        kd["seed"] = seed
        return kd

    def kd_steps_needed(self) -> int:
        return self.kd_steps or math.ceil(float(self.kd_tokens) / (self.kd_batch * self.eval_seq_len))

    def space(self):
        from ..archsearch.space import SearchSpace, axis_name, parse_divisors

        return SearchSpace(max_width_pruning=self.max_width_pruning, max_depth_pruning=self.max_depth_pruning,
                           divisors=parse_divisors(self.divisors),
                           skip=tuple(sorted({axis_name(s) for s in self.skip})))

    def budget(self):
        from ..archsearch import Budget

        return Budget(params=self.params, memory_mb=self.memory_mb, params_kind=self.params_kind,
                      batch=self.batch, seq_len=self.seq_len, dtype=self.memory_dtype, active_params=self.active_params)

    def config(self, seed: int):
        from ..archsearch import SearchConfig

        cfg = SearchConfig(space=self.space(), top_k=self.top_k, kd=self.kd(seed), band=self.band,
                           max_candidates=self.max_candidates, batch_size=self.batch_size,
                           tie_tolerance=self.tie_tolerance, tie_break=self.tie_break, measure_speed=self.speed,
                           speed_batch=self.speed_batch, expert_importance=self.expert_importance,
                           gdn_importance=self.gdn_importance, serve_with=self.serve_with or (),
                           tensor_parallel=self.tensor_parallel)
        cfg.validate()
        return cfg


def run(settings: SearchSettings, model: Path, data: str, out: Path, *, loading: LoadSettings | None = None,
        scores: Path | None = None, overwrite: bool = False, force: bool = False, check_memory: bool = True,
        original=None, voice: Voice = SILENT, loader: Loader | None = None):
    """Search the checkpoint `model` under the settings' budget, measuring on `data` (loaded as `loading`
    says, default `LoadSettings()`, through `loader`), writing `out` (candidates.jsonl, best.yaml, ...).

    `scores`: saved scores to use (they must exist and be of this model); None: `out/scores`, reused
    when they are of this model, else computed there. `overwrite`: scores of another model in
    `out/scores` are computed again rather than refused. `original`: `(total, active)` parameter counts
    a relative budget (`0.5x`) is a fraction of, when not of this model (a recipe's later rounds).
    `voice.console` shows the search's progress and results table. Returns the `SearchResult`."""
    from ..architectures import get_adapter
    from ..archsearch import search
    from ..archsearch.report import decision_text, results_table
    from ..checkpoint.load import load_config
    from .checks import check_gdn_options, check_moe_options

    s, say, loader, loading = settings, voice.say, loader or Loader(), loading or LoadSettings()
    config = load_config(model, trust_remote_code=loading.trust_remote_code)
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    check_moe_options(dims, config.model_type, active_params=s.active_params, expert_importance=s.expert_importance)
    check_gdn_options(dims, config.model_type, s.gdn_importance)
    if original is not None:
        s = _of_original(s, adapter, dims, original)
    cfg, budget = s.config(loading.seed), s.budget()
    scores_path = scores or out / "scores"
    saved = _saved_scores(scores_path, given=scores is not None, overwrite=overwrite, adapter=adapter, dims=dims)
    _early_budget_check(s, cfg, budget, saved, adapter, dims)
    if check_memory:
        say_forecast(voice, forecast(config, s, loading.dtype, loading.device, depth=s.depth_samples > 0), force=force,
                     lower="--batch-size, --eval-seq-len or --kd-micro-batch")
    lm = loader.model(model, loading)
    saved = _same_model(saved, lm, scores_path, given=scores is not None, overwrite=overwrite)
    if saved is not None:
        say(f"using the scores in {scores_path}")
    windows = _Windows(loader, loading, data, loader.tokenizer(model, loading), lm.config.vocab_size)
    scores_found = saved or _calibrate(lm, windows, model, scores_path, s, say)
    val = windows("validation", s.eval_seq_len, s.eval_samples)
    train = None
    if cfg.kd is None:
        say("[yellow]note:[/] no --kd-steps/--kd-tokens: ranking by zero-shot loss only. The paper finds a short "
            "distillation necessary for a reliable ranking.")
    else:
        train = windows("train", s.eval_seq_len, s.kd_steps_needed() * s.kd_batch)
    result = search(lm, scores_found, val, budget, cfg, train_data=train, out_dir=out, overwrite=overwrite,
                    console=voice.console, checkpoint_config=config)
    say(results_table(result, s.show))
    say(f"winner [bold]{result.best_key}[/]: {result.best} (chosen by {decision_text(result.decision)})")
    return result


def of_original(value, original: int | None, this: int):
    """A relative budget (`0.5x`, `50%`) of the ORIGINAL model (`original` parameters), as a count, for a
    model already pruned (`this` parameters), read by the budget's own parser; as given otherwise."""
    from ..archsearch.cost import parse_params

    relative = isinstance(value, str) and value.strip().endswith(("x", "X", "%"))
    if relative and original is not None and this != original:
        return parse_params(value, original=original)
    return value


def _of_original(s: SearchSettings, adapter, dims, original: tuple[int, int | None]) -> SearchSettings:
    from dataclasses import replace

    total, active = original
    params = of_original(s.params, total, adapter.num_parameters(dims, embeddings=s.params_kind == "total"))
    act = s.active_params
    if act is not None and dims.num_moe_experts is not None:
        act = of_original(act, active, adapter.num_active_parameters(dims))
    return replace(s, params=params, active_params=act)


def _saved_scores(path: Path, *, given: bool, overwrite: bool, adapter, dims):
    """The saved scores at `path` when they fit this architecture; None to compute them (only ever
    the search's own, with `overwrite`)."""
    from ..importance.scores import Scores, ScoresError

    if given and not (path / "scores.json").is_file():
        raise FileNotFoundError(f"no scores in {path}; run `hybridprune calibrate` or leave out --scores")
    if not (path / "scores.json").is_file():
        return None
    saved = Scores.load(path)
    try:
        saved.check_against(dims, owners=adapter.unit_owners(dims))
    except ScoresError:
        if given or not overwrite:
            raise
        return None  # --overwrite: a previous search's scores of another model are computed again
    return saved


def _same_model(saved, lm, path: Path, *, given: bool, overwrite: bool):
    from ..importance.scores import ScoresError, model_fingerprint

    if saved is None or saved.meta.get("fingerprint") in (None, model_fingerprint(lm)):
        return saved
    if given or not overwrite:
        raise ScoresError(f"the scores in {path} were computed on another model; "
                          + ("calibrate this one" if given else "pass --overwrite to recompute them"))
    return None


def _early_budget_check(s: SearchSettings, cfg, budget, saved, adapter, dims) -> None:
    """An impossible budget is reported before any weights are loaded, when the grid is known without
    calibrating: with saved scores, or without depth candidates (which depend on the depth scores)."""
    from ..archsearch import build_grid, filter_candidates

    if saved is not None or "num_layers" in cfg.space.skip or s.max_depth_pruning == 0:
        grid = build_grid(dims, cfg.space, saved, adapter.required_kinds, adapter.fixed_axes)[0]
        filter_candidates(adapter, dims, grid, budget, band=None, serve_with=cfg.serve_with,
                          tensor_parallel=cfg.tensor_parallel)


@dataclass
class _Windows:
    """The token windows of `data` the search reads, drawn through the loader."""

    loader: Loader
    loading: LoadSettings
    data: str
    tokenizer: object
    vocab: int

    def __call__(self, split: str, seq_len: int, n: int | None):
        return self.loader.samples(self.data, self.tokenizer, split=split, seq_len=seq_len, n=n,
                                   seed=self.loading.seed, text_field=self.loading.text_field, vocab=self.vocab)


def _calibrate(lm, windows: _Windows, model: Path, path: Path, s: SearchSettings, say):
    """Calibrate once and save the scores, for every later run of the search and for `prune`."""
    from ..archsearch.store import OWNED
    from ..importance.calibrate import calibrate
    from ..output.atomic import claim

    say(f"calibrating on {s.calib_samples} samples of {s.eval_seq_len} tokens (saved to {path})")
    calib = windows("calibration", s.eval_seq_len, s.calib_samples)
    scores = calibrate(lm, calib, batch_size=s.batch_size, seq_len=s.eval_seq_len, depth_samples=s.depth_samples)
    scores.meta.update({"source_model": str(model), "data": str(windows.data), "seed": windows.loading.seed,
                        "depth_samples": s.depth_samples})
    claim(path.parent, OWNED)  # the search directory's scores are the search's own
    scores.save(path, overwrite=True)  # only ever replaces scores this search computed
    scores.origin = str(path)  # where best.yaml's apply line points
    return scores


def forecast(config, s: SearchSettings, dtype: str, device: str | None, *, depth: bool):
    """The search's peak: calibrating and evaluating beside a pruned candidate, or a candidate's short KD
    (the unpruned size bounds every candidate's)."""
    from ..architectures import get_adapter
    from ..checkpoint.devices import weight_bytes
    from ..checkpoint.forecast import forecast_distill, forward_forecast
    from ..distillation.chunked_loss import auto_chunk_size

    forward = forward_forecast(config, "calibrate", batch=s.batch_size, seq=s.eval_seq_len, dtype=dtype,
                               device=device, depth=depth)
    forward.stage = "search"
    forward.parts["pruned candidate"] = forward.parts["weights"]
    if s.kd_steps is None and s.kd_tokens is None:
        return forward
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    train = forecast_distill(adapter, dims, dims, micro_batch=min(s.kd_micro_batch, s.kd_batch), seq=s.eval_seq_len,
                             weight_bytes=4, teacher_weight_bytes=weight_bytes(config, dtype, device),
                             device=forward.device, chunk_positions=auto_chunk_size(dims.vocab_size, forward.device),
                             chunk=adapter.scan_chunk(config))
    train.stage = "search"
    return max(forward, train, key=lambda f: f.total)
