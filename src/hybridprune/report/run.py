"""`build_run_report`: one Markdown file and one self-contained HTML page from a run directory's artefacts.

It reads whatever the directory holds, at any depth, and shows what it finds:

- `results.json` of `hybridprune demo` (the plan, the summary, time per stage, its evaluation);
- `eval.json` of `hybridprune eval --out` (the before/after table of size, loss, tasks and speed, and
  a speed-vs-quality plot);
- calibration scores (`scores.safetensors` + `scores.json`): depth importance, and the per-axis scores
  as layer × unit heatmaps;
- a search's `candidates.jsonl`: the candidates on the size–loss plane;
- a distillation's `log.jsonl`: the KD loss curve.

Figures go to `report_figures/` beside `report.md` (the HTML embeds them). Existing report files are
replaced only if hybridprune wrote them (they carry its mark), unless `overwrite=True`.

The directory may come from someone else: a link is neither followed when looking for artefacts nor
read, and report files that are links are refused (never written through).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

from ..output.atomic import atomic_directory, owned_names
from .report import GENERATOR_MARK, Report

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
FIGURE_DIR = "report_figures"
_FIGURE_MARK = ".hybridprune-figures"
_SKIP_DIRS = {"checkpoints", FIGURE_DIR, "__pycache__"}


class ReportError(ValueError):
    """The run directory is missing, holds nothing to report, or its report files are not ours to replace."""


def _find(run_dir: Path, name: str) -> list[Path]:
    """Files called `name` under `run_dir`, shallowest first; links (and files in linked folders) left out."""
    found = [p for p in run_dir.rglob(name)
             if p.is_file() and not any(part in _SKIP_DIRS or part.startswith(".") for part in
                                        p.relative_to(run_dir).parts[:-1]) and not _through_link(p, run_dir)]
    return sorted(found, key=lambda p: (len(p.relative_to(run_dir).parts), str(p)))


def _through_link(path: Path, run_dir: Path) -> bool:
    """Whether `path` or a folder between `run_dir` and it is a symbolic link."""
    while path != run_dir:
        if path.is_symlink():
            return True
        path = path.parent
    return False


def _read_json(path: Path) -> Any:
    if path.is_symlink():
        raise ReportError(f"cannot read {path}: it is a symbolic link, which is not followed")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by an interrupted run
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _usable(rows: list[dict], numbers: tuple[str, ...], where: str, skipped: list[str]) -> list[dict]:
    """Rows whose `numbers` fields, where present, are finite numbers (a search's `cost` an object of them);
    the others are left out with a note."""
    from .evaluation_shape import _is_number

    def ok(r: dict) -> bool:
        cost = r.get("cost", {})
        plotted = "cost" in r and r.get("loss") is not None  # a search candidate on the size-loss plane
        return (all(r.get(k) is None or _is_number(r[k]) for k in numbers) and isinstance(cost, dict)
                and all(_is_number(v) for v in cost.values()) and isinstance(r.get("key", ""), str)
                and (not plotted or ("params" in cost and "key" in r)))

    kept = [r for r in rows if ok(r)]
    if len(kept) < len(rows):
        skipped.append(f"{where}: {len(rows) - len(kept)} row(s) with fields of the wrong type left out")
    return kept


def _rel(path: Path, run_dir: Path) -> str:
    return str(path.relative_to(run_dir))


def check_report_files(run_dir: Path, overwrite: bool = False) -> None:
    """Refuse report files in `run_dir` that are links, or (unless `overwrite`) that hybridprune did not write."""
    for name in (REPORT_MD, REPORT_HTML, FIGURE_DIR):
        if (run_dir / name).is_symlink():
            raise ReportError(f"{run_dir / name} is a symbolic link; a report is never written through one. "
                              "Remove the link, or report into another directory")
    for name in (REPORT_MD, REPORT_HTML):
        path = run_dir / name
        if path.exists() and not overwrite:
            head = path.read_text(errors="replace")[:4000] if path.is_file() else ""
            if GENERATOR_MARK not in head:
                raise ReportError(f"{path} exists and was not written by hybridprune; move it away or pass --overwrite")
    figures = run_dir / FIGURE_DIR
    if figures.is_dir():
        owned_names(figures)  # a manifest that lists paths is refused before anything is written
    if figures.exists() and not (figures / _FIGURE_MARK).is_file() and not overwrite:
        raise ReportError(f"{figures} exists and was not written by hybridprune; move it away or pass --overwrite")


# ---- sections ----------------------------------------------------------------------------------------

def _reference_cell(evaluation: dict) -> dict | None:
    """The cell the headline speed is read from: the largest batch at the largest context."""
    cells = (evaluation.get("speed") or {}).get("cells", [])
    if not cells:
        return None
    batch = max(c["batch"] for c in cells)
    context = max(c["context"] for c in cells)
    return {"batch": batch, "context": context}


def _before_after(evaluation: dict) -> tuple[list[str], list[list[str]]]:
    from ..evaluate.tables import quality_table

    columns, rows = quality_table(evaluation)
    ref = _reference_cell(evaluation)
    if ref is None:
        return columns, rows
    columns = columns + [f"prefill tok/s (b{ref['batch']}, ctx {ref['context']})",
                         f"decode tok/s (b{ref['batch']}, ctx {ref['context']})"]
    cells = {c["model"]: c for c in evaluation["speed"]["cells"]
             if c["batch"] == ref["batch"] and c["context"] == ref["context"]}
    for row, model in zip(rows, evaluation.get("models", [])):
        c = cells.get(model["name"])
        for key in ("prefill_tokens_per_s", "decode_tokens_per_s"):
            if c is None or c[key] is None:
                row.append("-")
            else:
                ratio = c["ratios"].get(key)
                row.append(f"{c[key]:,.1f}" + (f" ({ratio:.2f}x)" if ratio is not None else ""))
    return columns, rows


def _speed_points(evaluation: dict) -> tuple[list[tuple[str, float, float]], str]:
    ref = _reference_cell(evaluation)
    if ref is None:
        return [], ""
    decode = {c["model"]: c["decode_tokens_per_s"] for c in evaluation["speed"]["cells"]
              if c["batch"] == ref["batch"] and c["context"] == ref["context"]}
    points, label = [], ""
    for model in evaluation.get("models", []):
        quality, label_here = None, ""
        if model.get("bits_per_byte") is not None:
            quality, label_here = model["bits_per_byte"], "bits per byte (validation)"
        elif model.get("loss") is not None:
            quality, label_here = model["loss"], "validation loss"
        elif (model.get("tasks") or {}).get("corpus_bpb", {}).get("bits_per_byte") is not None:
            quality, label_here = model["tasks"]["corpus_bpb"]["bits_per_byte"], "bits per byte (corpus_bpb)"
        if quality is not None and decode.get(model["name"]) is not None:
            points.append((model["name"], quality, decode[model["name"]]))
            label = label or label_here
    return points, f"{label} (lower is better)"


def _add_evaluation(report: Report, evaluation: dict, where: str, figures: Path, index: int) -> None:
    from ..evaluate.tables import kernels_text, speed_note, speed_table, tokenizer_note
    from .plots import plot_speed_vs_loss

    data = evaluation.get("data") or {}
    note = (f"Loss, perplexity and bits per byte on {data.get('samples')} samples x {data.get('seq_len')} tokens "
            f"of the {data.get('split')} split of `{data.get('source')}`." if data else "")
    note = " ".join(n for n in (note, tokenizer_note(evaluation)) if n)
    report.add_table(f"Before and after ({where})", *_before_after(evaluation), note=note)
    if evaluation.get("speed"):
        report.add_table(f"Generation speed ({where})", *speed_table(evaluation), note=speed_note(evaluation))
        report.add_text(f"Kernels ({where})", "```\n" + kernels_text(evaluation) + "\n```")
        points, x_label = _speed_points(evaluation)
        ref = _reference_cell(evaluation)
        png = plot_speed_vs_loss(points, figures / f"speed_vs_loss_{index}.png", x_label=x_label,
                                 y_label=f"decode tokens/s (batch {ref['batch']}, context {ref['context']})")
        report.add_figure(f"Speed against quality ({where})", png)


def _add_scores(report: Report, scores_dir: Path, where: str, figures: Path, index: int) -> None:
    from ..importance.scores import Scores, ScoresError
    from .plots import plot_layer_importance, plot_score_heatmaps

    try:
        scores = Scores.load(scores_dir)
    except ScoresError as exc:
        report.add_text(f"Importance ({where})", f"Unreadable scores: {exc}")
        return
    n = max([len(t) for t in (scores.depth_kld, scores.depth_bi) if t is not None]
            + [max(g) + 1 for g in (scores.mamba, scores.ffn, scores.attention, scores.moe_experts) if g], default=0)
    kinds = ["mamba" if i in scores.mamba else "attention" if i in scores.attention else
             "moe" if i in scores.moe_experts else "mlp" if i in scores.ffn else "?" for i in range(n)]
    if scores.depth_kld is not None or scores.depth_bi is not None:
        report.add_figure(f"Importance per block ({where})",
                          plot_layer_importance(scores, kinds, figures / f"layer_importance_{index}.png"))
    report.add_figure(f"Importance per unit, layer x unit ({where})",
                      plot_score_heatmaps(scores, figures / f"importance_heatmap_{index}.png"),
                      caption="Each row is scaled to its own maximum: pruning ranks the units within a layer.")


def _add_search(report: Report, candidates: Path, records: list[dict], where: str, figures: Path,
                index: int) -> None:
    from .plots import plot_candidates

    best = None
    summary = candidates.parent / "summary.json"
    if summary.is_file() and not summary.is_symlink():
        try:
            best = (json.loads(summary.read_text()).get("best") or {}).get("key")
        except (ValueError, AttributeError):
            best = None
    ranked = sorted((r for r in records if r.get("loss") is not None and "params" in r.get("cost", {})),
                    key=lambda r: (r.get("stage") == "zero_shot", r["loss"]))[:5]
    if ranked:
        report.add_table(f"Search: best candidates ({where})", ["candidate", "stage", "parameters", "loss"],
                         [[r.get("key", "?"), str(r.get("stage", "?")), f"{r['cost']['params']:,}", f"{r['loss']:.4f}"]
                          for r in ranked], note="Short-distilled candidates first, then zero-shot, by loss.")
    report.add_figure(f"Search candidates on the size-loss plane ({where})",
                      plot_candidates(records, figures / f"search_{index}.png", winner=best),
                      caption=f"{len(records)} evaluations" + (f"; chosen: `{best}`" if best else ""))


def _add_kd(report: Report, log: list[dict], where: str, figures: Path, index: int) -> None:
    from .plots import plot_kd_curve

    report.add_figure(f"Distillation loss ({where})", plot_kd_curve(log, figures / f"kd_loss_{index}.png"))


def _add_demo(report: Report, results: dict) -> None:
    names = [n for n in ("teacher", "pruned", "distilled") if isinstance(results.get(n), dict)]
    if names:
        def num(value, fmt: str) -> str:
            from .evaluation_shape import _is_number

            return format(value, fmt) if _is_number(value) else "-"

        rows = [[n, num(results[n].get("params"), ","), num(results[n].get("non_embedding_params"), ","),
                 num(results[n].get("val_loss"), ".4f"), num(results[n].get("perplexity"), ".2f"),
                 num(results[n].get("bits_per_byte"), ".4f"), num(results[n].get("tokens_per_s"), ",.0f")]
                for n in names]
        report.add_table("Summary", ["model", "parameters", "non-embedding", "val loss", "perplexity", "bits/byte",
                                     "forward tokens/s"], rows)
    if results.get("plan"):
        report.add_text("Plan", "```\n" + json.dumps(results["plan"], indent=2) + "\n```")
    if results.get("timings_s"):
        report.add_text("Time per stage (s)", "\n".join(f"- {k}: {v}" for k, v in results["timings_s"].items()))


# ---- the report --------------------------------------------------------------------------------------

def collect(run_dir: Path, report: Report, figures: Path, skipped: list[str] | None = None) -> list[str]:
    """Add every section the run directory supports to `report`; returns what was found. What could
    not be shown (an eval.json part of the wrong shape) is added to `skipped`, naming file and field."""
    from .evaluation_shape import checked_evaluation

    skipped = [] if skipped is None else skipped
    found = []
    results_path = run_dir / "results.json"
    results = _read_json(results_path) if results_path.is_file() else None
    evaluations = []
    if isinstance(results, dict):
        found.append("results.json")
        if isinstance(results.get("evaluation"), dict):
            evaluation, notes = checked_evaluation(results["evaluation"], "results.json: evaluation")
            skipped += notes
            if evaluation is not None:
                evaluations.append(("results.json", evaluation))
    for path in _find(run_dir, "eval.json"):
        try:
            data = _read_json(path)
        except ReportError as exc:
            skipped.append(str(exc))
            continue
        evaluation, notes = checked_evaluation(data, _rel(path, run_dir))
        skipped += notes
        if evaluation is not None:
            evaluations.append((_rel(path, run_dir), evaluation))
    if isinstance(results, dict):
        _add_demo(report, results)
    for i, (where, evaluation) in enumerate(evaluations):
        found.append(where)
        _add_evaluation(report, evaluation, where, figures, i)
    for i, path in enumerate(_find(run_dir, "scores.safetensors")):
        found.append(_rel(path.parent, run_dir) + "/")
        _add_scores(report, path.parent, _rel(path.parent, run_dir) or ".", figures, i)
    for i, path in enumerate(_find(run_dir, "candidates.jsonl")):
        found.append(_rel(path, run_dir))
        records = _usable(_read_jsonl(path), ("loss",), _rel(path, run_dir), skipped)
        _add_search(report, path, records, _rel(path, run_dir), figures, i)
    for i, path in enumerate(p for p in _find(run_dir, "log.jsonl")
                             if any("loss" in r or "val_loss" in r for r in _read_jsonl(p))):
        found.append(_rel(path, run_dir))
        log = _usable(_read_jsonl(path), ("step", "loss", "val_loss"), _rel(path, run_dir), skipped)
        _add_kd(report, log, _rel(path, run_dir), figures, i)
    return found


def build_run_report(run_dir: str | Path, *, title: str | None = None, intro: str = "",
                     overwrite: bool = False) -> tuple[Path, Path]:
    """Write `report.md` (figures in `report_figures/`) and the self-contained `report.html` into `run_dir`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a directory; give the directory a run wrote (e.g. runs/demo)")
    check_report_files(run_dir, overwrite)
    report = Report(title=title or f"hybridprune report: {run_dir.resolve().name}")
    with tempfile.TemporaryDirectory(prefix="hybridprune-report-") as tmp:
        figures = Path(tmp)
        skipped: list[str] = []
        found = collect(run_dir, report, figures, skipped)
        if not found:
            why = f" (skipped: {'; '.join(skipped)})" if skipped else ""
            raise ReportError(f"nothing to report in {run_dir}: expected results.json, eval.json, calibration "
                              f"scores, a search's candidates.jsonl or a distillation's log.jsonl{why}")
        for note in skipped:
            warnings.warn(note, stacklevel=2)
        if skipped:
            report.add_text("Left out", "\n".join(f"- {note}" for note in skipped))
        sources = ", ".join(f"`{f}`" for f in dict.fromkeys(found))
        report.intro = (intro + "\n\n" if intro else "") + f"Built from: {sources}."
        html_path = report.write_html(run_dir / REPORT_HTML)

        def write_figures(out: Path) -> None:
            for image in report.figures:
                (out / image.name).write_bytes(image.read_bytes())
            (out / _FIGURE_MARK).write_text("figures of report.md, written by hybridprune report\n")

        atomic_directory(run_dir / FIGURE_DIR, write_figures, overwrite=True)
        from .report import write_text_atomic

        md_path = run_dir / REPORT_MD
        write_text_atomic(md_path, report.markdown(f"{FIGURE_DIR}/"))
    return md_path, html_path
