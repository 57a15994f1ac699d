"""Chat data: the loss mask is exactly the assistant's tokens of a known template; prompt/completion
pairs; distillation counts only those positions while the attention sees the whole conversation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from ckpt_helpers import invoke, no_traceback, save_checkpoint
from hybridprune.data import DataError, load_token_samples, tokenizer_path
from hybridprune.data import tokenize as tk
from hybridprune.data.shards import ShardWindows, positions_of

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who speaks?"},
                {"role": "assistant", "content": "The king speaks."}, {"role": "user", "content": "And then?"},
                {"role": "assistant", "content": "The fool laughs."}]


@pytest.fixture()
def tok():
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(tokenizer_path())
    t.chat_template = CHATML
    return t


def _stream(d, split="all"):
    w = ShardWindows(d, split, 2)
    s = w.streams[0]
    return s.read(0, s.num_tokens)


def _chats(path, n=120):
    with open(path, "w") as f:
        for i in range(n):
            conv = [dict(m) for m in CONVERSATION]
            conv[1]["content"] = f"Who speaks in scene {i}?"
            conv[2]["content"] = f"The king speaks {i} times."
            f.write(json.dumps({"messages": conv}) + "\n")
    return path


def test_mask_is_exactly_the_assistant_tokens_of_chatml(tmp_path, tok):
    src = tmp_path / "one.jsonl"
    src.write_text(json.dumps({"messages": CONVERSATION}) + "\n")
    (tmp_path / "many.jsonl").write_text(src.read_text() * 40)
    m = tk.tokenize_to(tmp_path / "t", str(tmp_path / "many.jsonl"), tok, chat=True)
    assert m["chat"] and m["splits"]
    split = next(iter(m["splits"]))
    ids, mask = _stream(tmp_path / "t", split)
    text = tok.apply_chat_template(CONVERSATION, tokenize=False)
    # the rendered conversation, in pieces, then EOS; each piece tokenized on its own
    pieces = ["<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWho speaks?<|im_end|>\n",
              "<|im_start|>assistant\n", "The king speaks.<|im_end|>\n",
              "<|im_start|>user\nAnd then?<|im_end|>\n", "<|im_start|>assistant\n", "The fool laughs.<|im_end|>\n"]
    assert "".join(pieces) == text
    want_ids, want_mask = [], []
    for piece, keep in zip(pieces, [0, 0, 1, 0, 0, 1]):
        enc = tok(piece, add_special_tokens=False)["input_ids"]
        want_ids += enc
        want_mask += [keep] * len(enc)
    want_ids.append(tok.eos_token_id)
    want_mask.append(0)
    n = len(want_ids)
    assert ids[:n].tolist() == want_ids and mask[:n].tolist() == want_mask
    assert tok.decode(ids[:n][mask[:n] == 1]) == "The king speaks.<|im_end|>\nThe fool laughs.<|im_end|>\n"
    # position t predicts token t + 1: the loss positions are the mask shifted by one
    w = ShardWindows(tmp_path / "t", split, 16)
    item = w[0]
    assert torch.equal(item["loss_mask"], positions_of(torch.from_numpy(mask[:16].astype(np.int64))))
    assert item["attention_mask"].all()  # the attention sees the whole conversation


def test_prompt_completion_pairs(tmp_path, tok):
    src = tmp_path / "pc.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"Q{i}: who?", "completion": f" A{i}: the king."}) + "\n"
                           for i in range(60)))
    m = tk.tokenize_to(tmp_path / "t", str(src), tok, chat=True)
    split = next(iter(m["splits"]))
    ids, mask = _stream(tmp_path / "t", split)
    first = tok.decode(ids[mask == 1][:8])
    assert first.startswith(" A") and "Q" not in tok.decode(ids[mask == 1])


def test_chat_errors(tmp_path, tok):
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(tokenizer_path())
    src = _chats(tmp_path / "c.jsonl", 5)
    if not getattr(plain, "chat_template", None):
        with pytest.raises(DataError, match="no chat template"):
            tk.tokenize_to(tmp_path / "a", str(src), plain, chat=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "hello"}) + "\n")
    with pytest.raises(DataError, match="neither 'messages'"):
        tk.tokenize_to(tmp_path / "b", str(bad), tok, chat=True)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_distill_chat_counts_only_assistant_positions(tmp_path, tok):
    model = save_checkpoint(tmp_path / "model")
    tok.save_pretrained(model)
    data = _chats(tmp_path / "chats.jsonl")
    out = tmp_path / "run"
    r = invoke("distill", "--teacher", model, "--student", model, "--data", data, "--chat", "--seq-len", "32",
               "--global-batch", "2", "--micro-batch", "2", "--val-samples", "2", "--steps", "2", "--no-progress",
               "--out", out)
    assert r.exit_code == 0, r.output
    val = load_token_samples(out / "tokens", tok, seq_len=32, num_samples=2, split="validation", seed=0)
    recs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    val_rec = next(x for x in recs if "val_loss" in x)
    assert val_rec["val_tokens"] == int(val.meta["loss_mask"].sum()) < 2 * 32
    shutil.rmtree(out)
    r = invoke("distill", "--teacher", model, "--student", model, "--data", tmp_path / "nope.jsonl", "--chat",
               "--steps", "1", "--no-progress", "--out", out)
    assert r.exit_code == 2 and no_traceback(r) and not out.exists()


def test_chat_num_proc_writes_the_serial_bytes(tmp_path, tok):
    """Conversations tokenized in two processes: the same tokens and loss masks, byte for byte."""
    src = _chats(tmp_path / "c.jsonl", 200)
    tk.tokenize_to(tmp_path / "one", str(src), tok, chat=True, batch_docs=16)
    tk.tokenize_to(tmp_path / "two", str(src), tok, chat=True, batch_docs=16, num_proc=2)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert any(str(f).endswith(".mask") for f in files)
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f


def _files(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_another_chat_template_is_named_not_blamed_on_the_tokenizer(tmp_path, tok):
    """Chat tokens written with one template, a model whose tokenizer has another: `distill` (exit 2,
    nothing written) and `tokenize` (exit 2, the directory untouched) say it is the chat template."""
    data = _chats(tmp_path / "chats.jsonl", 60)
    tokens = tmp_path / "tokens"
    r = invoke("tokenize", "--data", data, "--chat", "--tokenizer", _with_template(tmp_path / "a", tok, CHATML),
               "--out", tokens)
    assert r.exit_code == 0, r.output
    model = save_checkpoint(tmp_path / "model")
    tok.chat_template = CHATML.replace("<|im_end|>\n", "<|im_end|>\n\n")
    tok.save_pretrained(model)
    out = tmp_path / "run"
    r = invoke("distill", "--teacher", model, "--student", model, "--data", tokens, "--seq-len", "32",
               "--global-batch", "2", "--micro-batch", "2", "--steps", "1", "--no-progress", "--out", out)
    assert r.exit_code == 2 and no_traceback(r) and not out.exists()
    assert "but another chat template" in r.output and "another tokenizer" not in r.output
    before = _files(tokens)
    r = invoke("tokenize", "--data", data, "--chat", "--tokenizer", model, "--out", tokens)
    assert r.exit_code == 2 and no_traceback(r) and _files(tokens) == before
    assert "but another chat template" in r.output and "other data" not in r.output


def test_plain_text_tokens_ignore_the_chat_template(tmp_path, tok):
    """Plain-text tokens do not depend on the chat template: another one is no reason to refuse them
    (nor to tokenize again); another source is named as such."""
    from transformers import AutoTokenizer

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"the king speaks {i} times to the fool"}) + "\n" for i in range(200)))
    r = invoke("tokenize", "--data", corpus, "--tokenizer", _with_template(tmp_path / "a", tok, CHATML),
               "--out", tmp_path / "tokens")
    assert r.exit_code == 0, r.output
    plain = AutoTokenizer.from_pretrained(tokenizer_path())
    assert load_token_samples(tmp_path / "tokens", plain, seq_len=16, num_samples=2, split="train").input_ids.shape == (2, 16)
    before = _files(tmp_path / "tokens")
    r = invoke("tokenize", "--data", corpus, "--tokenizer", tokenizer_path(), "--out", tmp_path / "tokens")
    assert r.exit_code == 0 and "reusing" in r.output and _files(tmp_path / "tokens") == before
    other = tmp_path / "other.jsonl"
    other.write_text(corpus.read_text())
    r = invoke("tokenize", "--data", other, "--tokenizer", tokenizer_path(), "--out", tmp_path / "tokens")
    assert r.exit_code == 2 and no_traceback(r) and _files(tmp_path / "tokens") == before
    assert f"other data ('{corpus}', not '{other}')" in r.output and "tokenizer" not in r.output.split("holds")[1]


def _with_template(path, tok, template):
    from transformers import AutoTokenizer

    save_checkpoint(path)
    t = AutoTokenizer.from_pretrained(tokenizer_path())
    t.chat_template = template
    t.save_pretrained(path)
    return path
