"""Export keeps what the source checkpoint ships besides weights and config: the generation config
(with an end-of-turn id that exists only there), tokenizer files and the chat template, `auto_map`
code files (copied, never run), and small metadata; weights, training states and big files stay behind."""

from __future__ import annotations

import json
import shutil

import pytest

from ckpt_helpers import PLAN, invoke, save_checkpoint, small_corpus
from hybridprune.pruning import export as export_mod

EXTRA_EOS = [2, 7]
TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"


def _data(root):
    return small_corpus(root / "corpus.jsonl")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("carry")
    src = save_checkpoint(root / "model")
    gen = json.loads((src / "generation_config.json").read_text()) if (src / "generation_config.json").exists() else {}
    gen.update({"eos_token_id": EXTRA_EOS, "temperature": 0.6, "top_p": 0.9, "do_sample": True})
    (src / "generation_config.json").write_text(json.dumps(gen))
    (src / "chat_template.jinja").write_text(TEMPLATE)
    (src / "additional_chat_templates").mkdir()
    (src / "additional_chat_templates" / "tool_use.jinja").write_text("{{ tools }}")
    marker = root / "code-ran"
    (src / "modeling_custom.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (src / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")
    (src / "LICENSE").write_text("Apache-2.0\n")
    # what describes the source model itself, not its pruned or distilled child
    (src / "eval.json").write_text('{"loss": 4.1}')
    (src / "training_log.jsonl").write_text('{"step": 1}\n')
    (src / "loss_curve.png").write_bytes(b"png")
    (src / "optimizer.pt").write_bytes(b"state")
    (src / "pytorch_model.bin").write_bytes(b"weights")
    (src / "big.dat").write_bytes(b"0" * 4096)
    result = invoke("calibrate", "--model", src, "--data", _data(root), "--samples", "4", "--seq-len", "32",
                    "--depth-samples", "0", "--out", root / "scores")
    assert result.exit_code == 0, result.output
    return root


def test_prune_carries_over_what_the_source_ships(source, tmp_path, monkeypatch):
    from transformers import AutoTokenizer, GenerationConfig

    monkeypatch.setattr(export_mod, "MAX_CARRY_BYTES", 1024)  # big.dat (4 KiB) counts as data here
    out = tmp_path / "pruned"
    result = invoke("prune", "--model", source / "model", "--scores", source / "scores", "--plan", PLAN,
                    "--out", out)
    assert result.exit_code == 0, result.output
    assert GenerationConfig.from_pretrained(out).eos_token_id == EXTRA_EOS
    assert GenerationConfig.from_pretrained(out).temperature == 0.6
    assert (out / "chat_template.jinja").read_text() == TEMPLATE
    assert (out / "additional_chat_templates" / "tool_use.jinja").read_text() == "{{ tools }}"
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "<|user|>hi<|end|>"
    for name in ("modeling_custom.py", "LICENSE", "tokenizer.json"):
        assert (out / name).read_bytes() == (source / "model" / name).read_bytes(), name
    # carried as is, but for a tokenizer_class older readers resolve (transformers 5 wrote TokenizersBackend)
    carried, original = (json.loads((d / "tokenizer_config.json").read_text()) for d in (out, source / "model"))
    assert original["tokenizer_class"] == "TokenizersBackend"
    assert carried == {**original, "tokenizer_class": "PreTrainedTokenizerFast"}
    for name in ("optimizer.pt", "pytorch_model.bin", "big.dat"):
        assert not (out / name).exists(), name
    # the model card, evaluations, logs and plots would state the parent's size and scores as the child's
    for name in ("eval.json", "training_log.jsonl", "loss_curve.png"):
        assert not (out / name).exists(), name
    # README.md is the pruned model's own card; the source's is kept under another name (test_model_card)
    assert (out / "README.md").read_text() != (source / "model" / "README.md").read_text()
    assert (out / "BASE_MODEL_README.md").read_text() == (source / "model" / "README.md").read_text()
    assert not (source / "code-ran").exists()
    info = json.loads((out / "hybridprune.json").read_text())
    assert info["source"] == "model"  # the directory's name: a local path would travel with the checkpoint


def test_distill_export_keeps_the_students_generation_config(source, tmp_path):
    from transformers import GenerationConfig

    pruned = tmp_path / "pruned"
    assert invoke("prune", "--model", source / "model", "--scores", source / "scores", "--plan", PLAN,
                  "--out", pruned).exit_code == 0
    out = tmp_path / "run"
    result = invoke("distill", "--teacher", source / "model", "--student", pruned, "--data",
                    _data(tmp_path),
                    "--steps", "1", "--seq-len", "32", "--global-batch", "2", "--micro-batch", "2",
                    "--val-samples", "0", "--no-progress", "--out", out)
    assert result.exit_code == 0, result.output
    assert GenerationConfig.from_pretrained(out).eos_token_id == EXTRA_EOS
    assert (out / "chat_template.jinja").read_text() == TEMPLATE
    assert (out / "hybridprune.json").is_file() and (out / "modeling_custom.py").is_file()
    assert json.loads((out / "distill.json").read_text())["steps"] == 1
    assert not [p.name for p in out.iterdir() if "tmp" in p.name]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".run")]


def test_carried_files_skip_weights_and_rebuilt_files(tmp_path):
    for name in ("config.json", "hybridprune.json", "model.safetensors", "model.safetensors.index.json",
                 "scheduler.pt", "tokenizer.json", "notes.txt", ".hidden"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in export_mod.carried_files(tmp_path)] == ["notes.txt", "tokenizer.json"]
    shutil.rmtree(tmp_path)
