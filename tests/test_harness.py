"""The shipped lm-eval tasks run in process on tiny models, including a pruned model never saved."""

from __future__ import annotations

import json
import math

import pytest
import torch

import hybridprune as hp
from conftest import build, tiny_nemotron_config
from hybridprune.evaluate import harness
from hybridprune.evaluate.harness import LOCAL_TASKS, TASKS_DIR, MissingExtra, resolve_tasks, run_tasks

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'hybridprune[eval]')")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from hybridprune.data import tokenizer_path

    return AutoTokenizer.from_pretrained(tokenizer_path())


def _model():
    return build(tiny_nemotron_config(vocab_size=4096, pad_token_id=1, bos_token_id=0, eos_token_id=0))


def test_shipped_task_data_is_well_formed():
    rows = [json.loads(line) for line in (TASKS_DIR / "next_line_choice.jsonl").read_text().splitlines()]
    assert len(rows) >= 100
    assert all(len(r["choices"]) == 4 and 0 <= r["gold"] < 4 and r["context"] for r in rows)
    golds = [r["gold"] for r in rows]
    assert max(golds.count(i) for i in range(4)) < 0.4 * len(rows)  # the answer's position is not a giveaway
    passages = [json.loads(line)["text"] for line in (TASKS_DIR / "corpus_bpb.jsonl").read_text().splitlines()]
    assert len(passages) >= 20 and all(passages)


def test_local_tasks_are_materialised_with_absolute_data_paths(tmp_path):
    names, include = resolve_tasks(list(LOCAL_TASKS), tmp_path)
    assert names == list(LOCAL_TASKS) and include == [tmp_path]
    for name in LOCAL_TASKS:
        text = (tmp_path / f"{name}.yaml").read_text()
        assert "{{data_dir}}" not in text and f"{TASKS_DIR.as_posix()}/{name}.jsonl" in text


def test_one_shipped_task_checked_first_leaves_the_other_known():
    """lm-eval's index of the shipped tasks' folder is kept per process: checking one task first must
    not leave an index that lacks the other."""
    pytest.importorskip("lm_eval")
    harness.check_tasks(["next_line_choice"])
    assert harness.check_tasks(["corpus_bpb", "next_line_choice"]) == ["corpus_bpb", "next_line_choice"]


def test_local_tasks_run_on_a_tiny_random_model(tokenizer):
    out = run_tasks(_model(), tokenizer, ["next_line_choice", "corpus_bpb"], limit=4, batch_size=4)
    assert set(out) == {"next_line_choice", "corpus_bpb"}
    assert 0.0 <= out["next_line_choice"]["acc"] <= 1.0
    bpb = out["corpus_bpb"]["bits_per_byte"]
    assert math.isfinite(bpb) and bpb > 1.0  # a random model knows nothing: several bits per byte


def test_a_pruned_model_runs_the_tasks_without_being_saved(tokenizer, tmp_path):
    model = _model()
    g = torch.Generator().manual_seed(0)
    scores = hp.calibrate(model, torch.randint(3, 4096, (2, 16), generator=g), batch_size=2, progress=False)
    pruned = hp.prune(model, scores, hp.Plan(hidden_size=32, mamba_num_heads=6))
    assert not getattr(pruned, "name_or_path", "")  # in memory only
    out = run_tasks(pruned, tokenizer, ["corpus_bpb"], limit=2)
    assert math.isfinite(out["corpus_bpb"]["bits_per_byte"])


def test_a_task_yaml_path_and_unknown_names(tokenizer, tmp_path):
    yaml_path = tmp_path / "mine.yaml"
    yaml_path.write_text((TASKS_DIR / "corpus_bpb.yaml").read_text().replace("task: corpus_bpb", "task: my_bpb")
                         .replace("{{data_dir}}", TASKS_DIR.as_posix()))
    out = run_tasks(_model(), tokenizer, [str(yaml_path)], limit=2)
    assert set(out) == {"my_bpb"}
    with pytest.raises(ValueError, match="does not know the task"):
        run_tasks(_model(), tokenizer, ["no_such_task_anywhere"], limit=2)
    with pytest.raises(FileNotFoundError):
        run_tasks(_model(), tokenizer, [str(tmp_path / "missing.yaml")])


def test_missing_lm_eval_names_the_extra(monkeypatch, tokenizer):
    import builtins

    real_import = builtins.__import__

    def no_lm_eval(name, *args, **kwargs):
        if name.startswith("lm_eval"):
            raise ImportError("No module named 'lm_eval'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lm_eval)
    with pytest.raises(MissingExtra, match=r"hybridprune\[eval\]"):
        harness.run_tasks(_model(), tokenizer, ["corpus_bpb"])
