"""`kill -9` at random points of a distillation on streamed token shards, with cached top-k teacher
logits and chat masking: the resumed run ends bit-identical (CPU) to one never interrupted."""

from __future__ import annotations

import json
import random
import signal

import pytest
from safetensors.torch import load_file

from ckpt_helpers import invoke, run_cli, save_checkpoint

pytestmark = pytest.mark.slow
TRIALS = 2
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("kill-scale")
    for name, seed in (("teacher", 0), ("student", 1)):
        save_checkpoint(root / name, seed=seed)
        tok = AutoTokenizer.from_pretrained(root / name)
        tok.chat_template = CHATML
        tok.save_pretrained(root / name)
    with open(root / "chats.jsonl", "w") as f:
        for i in range(200):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"Who speaks in scene {i}?"},
                                             {"role": "assistant", "content": f"The king, {i % 7} times."}]}) + "\n")
    assert invoke("tokenize", "--data", root / "chats.jsonl", "--chat", "--tokenizer", root / "teacher",
                  "--out", root / "tokens").exit_code == 0
    r = invoke("teacher-logits", "--teacher", root / "teacher", "--data", root / "tokens", "--seq-len", "32",
               "--top-k", "16", "--num-samples", "48", "--device", "cpu", "--out", root / "logits")
    assert r.exit_code == 0, r.output
    return root


def _args(root, out):
    return ["distill", "--teacher", root / "teacher", "--student", root / "student", "--data", root / "tokens",
            "--teacher-logits", root / "logits", "--num-samples", "48", "--seq-len", "32", "--global-batch", "4",
            "--micro-batch", "2", "--steps", "6", "--save-every", "1", "--val-samples", "0", "--lr", "1e-3",
            "--warmup", "1", "--no-progress", "--out", out]


def test_kill_9_then_resume_is_bit_identical(root, tmp_path):
    ref = tmp_path / "ref"
    done = invoke(*_args(root, ref))  # in process: only the killed runs need a process of their own
    assert done.exit_code == 0, done.output[-2000:]
    want = load_file(str(ref / "model.safetensors"))
    rng = random.Random(3)
    for trial in range(TRIALS):
        out = tmp_path / f"run{trial}"
        proc = run_cli(_args(root, out), audit_kill_at=rng.randint(8, 40), kill_under=str(out))
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        resumed = invoke(*_args(root, out), "--resume", out)
        assert resumed.exit_code == 0, resumed.output[-2000:]
        got = load_file(str(out / "model.safetensors"))
        assert want.keys() == got.keys()
        assert all(want[k].equal(got[k]) for k in want), [k for k in want if not want[k].equal(got[k])][:3]
