"""Every JSON document read back is checked against its shape (`output.documents`): a malformed or
wrong-typed one, from a run directory or a checkpoint of someone else's, gives one message naming the
file, the place in it and what to do; no traceback, and the files are left as they were."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ckpt_helpers import PLAN, invoke, refused
from trust_helpers import digests
from hybridprune.output.documents import DocumentError



@pytest.fixture(scope="module")
def root(calibrated_checkpoint):
    """The session's calibrated checkpoint (conftest.py): read only."""
    return calibrated_checkpoint


def _search(root: Path, out: Path):
    return invoke("search", "--model", root / "model", "--data", root / "corpus.jsonl", "--out", out,
                  "--params", "0.9x", "--calib-samples", "2", "--eval-samples", "2", "--eval-seq-len", "16",
                  "--depth-samples", "0", "--max-candidates", "2", "--top-k", "1", "--no-speed",
                  "--skip", "depth", "--scores", root / "scores")


@pytest.fixture(scope="module")
def search_dir(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("documents") / "search"
    r = _search(root, out)
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.parametrize("name, edit, words", [
    ("candidates.jsonl", lambda lines: [lines[0].replace('"loss": ', '"loss": "low", "was": '), *lines[1:]],
     ["candidates.jsonl, line 1: loss: expected a number, got \"low\""]),
    ("candidates.jsonl", lambda lines: ['{"stage": "final", "key": 5}', *lines[1:]],
     ["candidates.jsonl, line 1: key: expected a string, got 5"]),
    ("candidates.jsonl", lambda lines: ['{"stage": "later", "key": "x"}', *lines],
     ["candidates.jsonl, line 1: stage: expected one of 'zero_shot', 'final'"]),
    ("search.json", lambda lines: ["[1, 2]"], ["search.json: the document: expected an object"]),
])
def test_search_resumed_on_a_malformed_record_isrefused(root, search_dir, tmp_path, name, edit, words):
    out = tmp_path / "search"
    shutil.copytree(search_dir, out)
    path = out / name
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    before = digests(out)
    r = _search(root, out)
    refused(r, *words, "use another output directory, or overwrite")
    assert digests(out) == before


@pytest.mark.parametrize("info, words", [
    ({"plan": 3}, "plan: expected an object, got 3"),
    ({"parameters": {"before": "many"}}, "parameters.before: expected an integer, got \"many\""),
    ({"earlier_rounds": [{"plan": []}]}, "earlier_rounds[0].plan: expected an object, got []"),
    ("{not json", "not valid JSON"),
])
def test_prune_of_a_checkpoint_with_a_malformed_hybridprune_json_isrefused(root, tmp_path, info, words):
    """The source's `hybridprune.json` (a checkpoint of someone else's) is read for the card's earlier
    rounds: a wrong one is refused, naming it; no output, the source untouched."""
    src = tmp_path / "src"
    shutil.copytree(root / "model", src)
    (src / "hybridprune.json").write_text(info if isinstance(info, str) else json.dumps(info))
    before = digests(src)
    out = tmp_path / "pruned"
    r = invoke("prune", "--model", src, "--scores", root / "scores", "--plan", PLAN, "--out", out)
    refused(r, str(src / "hybridprune.json"), words, "remove it from")
    assert digests(src) == before and not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pruned")] == []


def test_rewrite_with_evaluation_checks_the_checkpoint_record(tmp_path):
    from hybridprune.pruning.model_card import rewrite_with_evaluation

    (tmp_path / "hybridprune.json").write_text(json.dumps({"left_out": "everything"}))
    with pytest.raises(DocumentError,
                       match=r"hybridprune.json: left_out: expected a list \(each item a string\), got \"everything\""):
        rewrite_with_evaluation(tmp_path, {})
    (tmp_path / "hybridprune.json").write_text("{}")
    (tmp_path / "distill.json").write_text("[1]")
    with pytest.raises(DocumentError, match=r"distill.json: the document: expected an object"):
        rewrite_with_evaluation(tmp_path, {})


@pytest.fixture(scope="module")
def distilled(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("documents") / "distilled"
    r = invoke("distill", "--teacher", root / "model", "--student", root / "model", "--data", root / "corpus.jsonl",
               "--steps", "1", "--seq-len", "16", "--global-batch", "2", "--micro-batch", "2", "--val-samples", "0",
               "--no-progress", "--out", out)
    assert r.exit_code == 0, r.output
    return out


def _distill_resume(root: Path, out: Path, resume: Path):
    return invoke("distill", "--teacher", root / "model", "--student", root / "model", "--data", root / "corpus.jsonl",
                  "--steps", "1", "--seq-len", "16", "--global-batch", "2", "--micro-batch", "2", "--val-samples",
                  "0", "--no-progress", "--out", out, "--resume", resume)


@pytest.mark.parametrize("edit, words", [
    (lambda s: {**s, "step": "one"}, "step: expected a non-negative integer, got \"one\""),
    (lambda s: {**s, "files": {**s["files"], "../../victim": 3}}, "names \"../../victim\", which is not a plain file"),
    (lambda s: {k: v for k, v in s.items() if k != "trajectory"}, "trajectory: missing"),
])
def test_distill_resumed_from_a_checkpoint_with_a_malformed_state_isrefused(root, distilled, tmp_path, edit, words):
    out = tmp_path / "run"
    shutil.copytree(distilled, out)
    ckpt = next((out / "checkpoints").iterdir())
    state = json.loads((ckpt / "state.json").read_text())
    (ckpt / "state.json").write_text(json.dumps(edit(state)))
    before = digests(out)
    r = _distill_resume(root, out, ckpt)
    refused(r, str(ckpt / "state.json"), words, "resume from another one")
    assert digests(out) == before


def test_distill_resumed_with_a_malformed_log_isrefused(root, distilled, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(distilled, out)
    (out / "log.jsonl").write_text('{"step": "one", "loss": 2.0}\n')
    before = digests(out)
    r = _distill_resume(root, out, out)
    refused(r, f"{out / 'log.jsonl'}, line 1: step: expected a non-negative integer, got \"one\"")
    assert digests(out) == before


@pytest.mark.parametrize("name, content, words", [
    ("results.json", {"plan": 3}, "results.json: plan: expected an object, got 3"),
    ("results.json", "[1]", "results.json: the document: expected an object"),
    ("search/summary.json", {"best": {"key": "h64"}}, "summary.json: best: expected a string, got {\"key\": \"h64\"}"),
])
def test_report_on_a_malformed_document_isrefused(tmp_path, name, content, words):
    run_dir = tmp_path / "run"
    (run_dir / "search").mkdir(parents=True)
    (run_dir / "search" / "candidates.jsonl").write_text(
        json.dumps({"key": "h64", "stage": "zero_shot", "loss": 4.0, "cost": {"params": 100}}) + "\n")
    (run_dir / name).write_text(content if isinstance(content, str) else json.dumps(content))
    before = digests(run_dir)
    r = invoke("report", run_dir)
    refused(r, "cannot read", words, "move it away")
    assert digests(run_dir) == before


@pytest.mark.parametrize("aliases, words", [
    ('{"lm_head.weight": "missing"}', "lm_head.weight: expected one of 'embed.weight', got \"missing\""),
    ("[1]", "the document: expected an object"),
    ("{oops", "not valid JSON"),
])
def test_checkpoint_weights_with_malformed_aliases_arerefused(tmp_path, aliases, words):
    import torch
    from safetensors.torch import save_file

    from hybridprune.distillation.checkpoint import CheckpointError, load_weights

    path = tmp_path / "model.safetensors"
    save_file({"embed.weight": torch.zeros(2)}, str(path), metadata={"format": "pt", "aliases": aliases})
    with pytest.raises(CheckpointError, match="metadata 'aliases'") as info:
        load_weights(path)
    assert words in str(info.value)


def test_report_names_the_search_winner_from_its_summary(tmp_path):
    """summary.json gives the winner's key as `best` (`archsearch.report.write_outputs`)."""
    run_dir = tmp_path / "run"
    (run_dir / "search").mkdir(parents=True)
    (run_dir / "search" / "candidates.jsonl").write_text(
        json.dumps({"key": "h64", "stage": "zero_shot", "loss": 4.0, "cost": {"params": 100}}) + "\n")
    (run_dir / "search" / "summary.json").write_text(json.dumps({"best": "h64"}))
    r = invoke("report", run_dir)
    assert r.exit_code == 0, r.output
    assert "chosen: `h64`" in (run_dir / "report.md").read_text()
