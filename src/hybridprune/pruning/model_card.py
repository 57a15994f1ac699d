"""The model card (`README.md`, the Hub's format) of every checkpoint hybridprune exports.

The front matter is what the Hub indexes: `base_model` (the source's Hub id, left out when the source
did not come from the Hub: a local path names the user's home wherever the card is uploaded, and is no
Hub id; the text then names the directory by its last component, a shipped teacher by its name),
`library_name: transformers`, `tags` (pruned, distilled, hybridprune), and the licence and datasets
of the source's own card. The body says what was done: the plan, parameters before and after, the
tokens of distillation, and the evaluation table where one exists. The source's card describes the
source (its size, its scores), so it is kept beside ours as `BASE_MODEL_README.md`, never as this
model's. A source that is itself one of our exports (a second round of pruning) passes on the
original's card and `base_model`, so the chain always points at the model it started from.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..output.documents import Optional, read_document

CARD = "README.md"
INFO_FILE = "hybridprune.json"
_COUNTS = Optional({"before?": Optional(int), "after?": Optional(int)})
#: `hybridprune.json` as the card reads it: the plan and the figures of this round and of earlier ones
INFO_SHAPE = {"plan?": Optional(dict), "dropped_blocks?": Optional([int]), "parameters?": _COUNTS,
              "active_parameters?": _COUNTS, "dims_before?": Optional(dict), "dims_after?": Optional(dict),
              "scores?": Optional({"num_samples?": Optional(int), "seq_len?": Optional(int)}),
              "left_out?": Optional([str]), "distillation?": Optional(dict),
              "earlier_rounds?": Optional([{"plan?": Optional(dict), "parameters?": _COUNTS,
                                            "active_parameters?": _COUNTS, "dims_before?": Optional(dict)}])}
BASE_CARD = "BASE_MODEL_README.md"
#: front-matter fields of the source's card carried into ours (they hold for the derived model too)
CARRIED_FIELDS = ("license", "license_name", "license_link", "datasets", "language")


def _front_matter(text: str) -> dict[str, Any]:
    """The YAML metadata of a card, or {} (a card without it, or one the Hub's parser rejects)."""
    from huggingface_hub import ModelCard

    try:
        return ModelCard(text, ignore_metadata_errors=True).data.to_dict()
    except Exception:  # noqa: BLE001 - someone else's card: never fail an export over it
        return {}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8") if path.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None


def read_info(checkpoint: str | os.PathLike, *, role: str = "checkpoint") -> dict[str, Any] | None:
    """The `hybridprune.json` of `checkpoint` checked against `INFO_SHAPE` (None if it has none). It may
    come with someone else's checkpoint: a malformed one is refused (`DocumentError`), naming the place.
    In the Hub's cache a snapshot's files are links to its blobs: such a link is read."""
    from ..checkpoint.files import hub_snapshot

    path = Path(checkpoint) / INFO_FILE
    if not os.path.lexists(path):
        return None
    if path.is_symlink() and hub_snapshot(Path(os.path.realpath(checkpoint))):
        path = Path(os.path.realpath(path))
    return read_document(path, INFO_SHAPE, fix=f"it is not hybridprune's record of how this {role} was made: "
                         f"restore it, or remove it from {checkpoint}")


def _ours(meta: dict[str, Any]) -> bool:
    return "hybridprune" in (meta.get("tags") or [])


#: what a Hub repository id looks like (`org/name`): anything else (a path) never goes into `base_model`
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
#: our card's first sentence: a later round (or the evaluation added later) reads the original's name from it
_NAMED = re.compile(r"^A structurally [a-z ]+ version of (.+?), made with hybridprune", re.M)


def source_id(source: str | os.PathLike) -> str | None:
    """The Hub id of a source in the Hub cache (`models--org--name/snapshots/REV`), else None."""
    from ..checkpoint.files import hub_snapshot

    hub = hub_snapshot(Path(os.path.realpath(source)))
    return hub[0] if hub and HUB_ID.fullmatch(hub[0]) else None


def _shipped_name(source: str | os.PathLike) -> str | None:
    from ..data.assets import BUNDLED_TEACHERS

    real = os.path.realpath(source)
    return next((name for name, path in BUNDLED_TEACHERS.items() if real == os.path.realpath(path)), None)


def portable_source(source: str | os.PathLike) -> str:
    """What `hybridprune.json` records as the source: its Hub id, a shipped teacher's name, or the
    directory's last component. The file travels with the checkpoint (uploads included), so it never
    holds a local path (the user's home directory and name)."""
    return source_id(source) or _shipped_name(source) or Path(os.path.realpath(source)).name or "source"


def source_name(source: str | os.PathLike) -> str:
    """How the card's text names a source: its Hub id; a shipped teacher by its name; else the
    directory's last component only (never the whole local path)."""
    hub = source_id(source)
    if hub:
        return hub
    shipped = _shipped_name(source)
    if shipped:
        return f"the shipped teacher {shipped}"
    return Path(os.path.realpath(source)).name or "the source model"


def _plain_name(text: str) -> str:
    """A name read back from a card (someone else's file): without quotes, and a path cut to its last part."""
    name = text.replace("`", "").strip()
    return name if HUB_ID.fullmatch(name) or "/" not in name else name.rstrip("/").split("/")[-1]


def base_card(source: str | os.PathLike | None) -> tuple[str | None, dict[str, Any], str | None, str]:
    """(the original model's card text, its metadata, the Hub id our card names as `base_model` or
    None, the name its text gives the original) for `source`."""
    if source is None or not Path(source).is_dir():
        return None, {}, None, "the source model"
    source = Path(source)
    own = _read(source / CARD)
    meta = _front_matter(own) if own else {}
    if _ours(meta):  # an export of ours: pass on the original's card and name
        text = _read(source / BASE_CARD)
        hub = meta.get("base_model") if isinstance(meta.get("base_model"), str) else None
        hub = hub if hub and HUB_ID.fullmatch(hub) else None  # an older card's local path is not passed on
        named = _NAMED.search(own)
        name = hub or (_plain_name(named.group(1)) if named else source_name(source))
        return text, (_front_matter(text) if text else {}), hub, name
    return own, meta, source_id(source), source_name(source)


def earlier_rounds(source: str | os.PathLike | None) -> list[dict[str, Any]]:
    """The rounds of hybridprune that made `source`, oldest first (its `hybridprune.json` and the rounds
    it records), so that a second round's card compares with the original model, not with round one's.
    [] for a model hybridprune did not make. The file is someone else's: checked (`read_info`), and only
    its plain fields are kept."""
    parent = read_info(source, role="source checkpoint") if source is not None and Path(source).is_dir() else None
    if parent is None:
        return []
    earlier = list(parent.get("earlier_rounds") or [])
    step = {k: parent[k] for k in ("plan", "dropped_blocks", "parameters", "active_parameters", "dims_before")
            if isinstance(parent.get(k), (dict, list))}
    return [*earlier, step] if step.get("plan") or step.get("parameters") else earlier


def _as_of_base(info: dict[str, Any]) -> dict[str, Any]:
    """`info` with its "before" figures taken from the first round, when there were earlier rounds."""
    rounds = info.get("earlier_rounds") or []
    if not rounds:
        return info
    first, view = rounds[0], dict(info)
    for key in ("parameters", "active_parameters"):
        if isinstance(first.get(key), dict) and isinstance(info.get(key), dict):
            view[key] = {**info[key], "before": first[key].get("before")}
    if isinstance(first.get("dims_before"), dict):
        view["dims_before"] = first["dims_before"]
    return view


def _fmt(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def render(info: dict[str, Any], *, base_model: str | None, base_meta: dict[str, Any],
           distillation: dict[str, Any] | None = None, evaluation: dict[str, Any] | None = None,
           has_base_card: bool = False, base_name: str | None = None) -> str:
    """The card's text: front matter from `huggingface_hub.ModelCardData`, then what was done.
    `base_model`: the source's Hub id (None: left out); `base_name`: how the text names the source."""
    from huggingface_hub import ModelCardData

    from .. import __version__

    distilled = distillation is not None
    tags = [*(["pruned"] if info.get("plan") else []), *(["distilled"] if distilled else []), "hybridprune"]
    carried = {k: base_meta[k] for k in CARRIED_FIELDS if base_meta.get(k)}
    data = ModelCardData(**({"base_model": base_model} if base_model else {}), library_name="transformers",
                         pipeline_tag="text-generation", tags=tags, **carried)
    base_name = base_model or base_name or "the source model"
    name = base_name.split("/")[-1].removeprefix("the shipped teacher ")
    what = " and ".join([*(["pruned"] if info.get("plan") else []), *(["distilled"] if distilled else [])]) or "exported"
    lines = ["---", data.to_yaml(), "---", "", f"# {name} ({what})", "",
             f"A structurally {what} version of {_quoted(base_name)}, made with hybridprune {__version__} "
             "(the Minitron-SSM recipe: group-aware pruning of Mamba heads, attention heads, FFN, hidden size "
             "and depth" + (", then knowledge distillation from the original model)." if distilled else ")."), ""]
    rounds = [r for r in info.get("earlier_rounds") or [] if isinstance(r, dict)]
    info = _as_of_base(info)
    params = info.get("parameters") or {}
    rows = []
    if params:
        before, after = params.get("before"), params.get("after")
        share = f" ({after / before:.1%} of the base)" if isinstance(before, int) and isinstance(after, int) and before else ""
        rows.append(f"| parameters | {_fmt(before)} | {_fmt(after)}{share} |")
    active = info.get("active_parameters") or {}
    if active:
        rows.append(f"| active parameters per token | {_fmt(active.get('before'))} | {_fmt(active.get('after'))} |")
    before_dims, after_dims = info.get("dims_before") or {}, info.get("dims_after") or {}
    for key in sorted(set(before_dims) & set(after_dims)):
        if before_dims[key] != after_dims[key] and isinstance(before_dims[key], (int, str)):
            rows.append(f"| `{key}` | {_fmt(before_dims[key])} | {_fmt(after_dims[key])} |")
    lines += ["## What was done", ""]
    for n, earlier in enumerate(rounds, 1):
        plan = ", ".join(f"{k}={v}" for k, v in (earlier.get("plan") or {}).items()) or "(no plan recorded)"
        p = earlier.get("parameters") or {}
        lines += [f"- **Round {n}**: plan `{plan}`, {_fmt(p.get('before'))} → {_fmt(p.get('after'))} parameters"]
    if info.get("plan"):
        plan = ", ".join(f"{k}={v}" for k, v in info["plan"].items())
        lines += [f"- **{'Round ' + str(len(rounds) + 1) if rounds else 'Pruning plan'}**: `{plan}`"]
    if info.get("dropped_blocks"):
        lines += [f"- **Layers removed**: {', '.join(map(str, info['dropped_blocks']))}"]
    scores = info.get("scores") or {}
    if scores.get("num_samples"):
        lines += [f"- **Calibration**: {scores['num_samples']} samples of {scores.get('seq_len')} tokens"]
    if distilled:
        tokens = distillation.get("tokens")
        lines += [f"- **Distillation**: {_fmt(distillation.get('steps'))} steps, {_fmt(tokens)} tokens "
                  "(forward KL on the logits of the base model as teacher)"]
    for part in info.get("left_out") or []:
        lines += [f"- **Left out**: {part}"]
    if rows:
        lines += ["", "| | base | this model |", "|---|---|---|", *rows]
    if evaluation:
        lines += ["", "## Evaluation", "", *_evaluation_table(evaluation)]
    lines += ["", "## Provenance", "",
              "`hybridprune.json` records the plan, the kept layers, experts and channels, and the scores' "
              "fingerprint. " + (f"The base model's own card is kept as `{BASE_CARD}`: its figures describe "
                                 "the base model, not this one." if has_base_card else ""), ""]
    return "\n".join(lines)


def _quoted(name: str) -> str:
    """`org/name` or `dir` in code quotes; "the shipped teacher X" with X quoted."""
    for lead in ("the shipped teacher ", "the source model"):
        if name.startswith(lead):
            return lead + (f"`{name[len(lead):]}`" if name[len(lead):] else "")
    return f"`{name}`"


def _evaluation_table(evaluation: dict[str, Any]) -> list[str]:
    """The side-by-side evaluation (`compare_models`' dict) as a Markdown table."""
    from ..evaluate.tables import quality_table

    columns, table_rows = quality_table(evaluation)
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in table_rows]
    return out


def write_model_card(dest: str | os.PathLike, source: str | os.PathLike | None, info: dict[str, Any], *,
                     distillation: dict[str, Any] | None = None, evaluation: dict[str, Any] | None = None) -> Path:
    """Write `dest/README.md` for the checkpoint in `dest` made from `source`, and keep the original
    model's card beside it as `BASE_MODEL_README.md`."""
    dest = Path(dest)
    text, meta, base_model, base_name = base_card(source)
    if text is None:  # written by an earlier card of this checkpoint (evaluation added later)
        text = _read(dest / BASE_CARD)
    if text is not None and not (dest / BASE_CARD).exists():
        (dest / BASE_CARD).write_text(text, encoding="utf-8")
    if not meta and text:
        meta = _front_matter(text)
    (dest / CARD).write_text(render(info, base_model=base_model, base_name=base_name, base_meta=meta,
                                    distillation=distillation, evaluation=evaluation,
                                    has_base_card=text is not None), encoding="utf-8")
    return dest / CARD


def rewrite_with_evaluation(checkpoint: str | os.PathLike, evaluation: dict[str, Any]) -> Path:
    """Add the evaluation table to the card of an exported checkpoint (what it read when it was written)."""
    checkpoint = Path(checkpoint)
    info = read_info(checkpoint) or {}
    summary = checkpoint / "distill.json"
    distillation = info.get("distillation") or (
        read_document(summary, dict, fix=f"it is not the summary hybridprune writes: remove it from {checkpoint}")
        if os.path.lexists(summary) else None)
    return write_model_card(checkpoint, checkpoint, info, distillation=distillation, evaluation=evaluation)
