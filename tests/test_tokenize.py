"""`hybridprune tokenize` and token shards: the same windows as from text, read by offset; resumable;
mixtures, globs, a (mocked) Hub stream; bad input refused with nothing written."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from ckpt_helpers import interrupted_tokenization, invoke, no_traceback, small_corpus
from hybridprune.data import DataError, load_token_samples, tokenizer_path
from hybridprune.data import tokenize as tk
from hybridprune.data.shards import MANIFEST_FILE, PROGRESS_FILE, ShardWindows


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_path())


def _files(d):
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_cli_tokenize_gives_the_windows_text_gives(tmp_path, tok):
    corpus = small_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "tokens"
    r = invoke("tokenize", "--data", corpus, "--tokenizer", tokenizer_path(), "--out", out)
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["dtype"] == "uint16" and manifest["tokenizer"]["vocab_size"] == 4096
    assert manifest["sources"][0]["fingerprint"] and not (out / PROGRESS_FILE).exists()
    for split in ("train", "calibration", "validation"):
        a = load_token_samples(corpus, tok, seq_len=32, num_samples=8, split=split, seed=3)
        b = load_token_samples(out, tok, seq_len=32, num_samples=8, split=split, seed=3)
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.attention_mask, b.attention_mask)
    # the same command again reuses the tokens, touching nothing
    before = _files(out)
    r = invoke("tokenize", "--data", corpus, "--tokenizer", tokenizer_path(), "--out", out)
    assert r.exit_code == 0 and "reusing" in r.output and _files(out) == before


def test_windows_span_shard_ends(tmp_path, tok):
    corpus = small_corpus(tmp_path / "corpus.jsonl")
    small = tk.tokenize_to(tmp_path / "small", str(corpus), tok, shard_tokens=100, commit_tokens=50)
    big = tk.tokenize_to(tmp_path / "big", str(corpus), tok)
    assert len(small["splits"]["train"]["0"]["shards"]) > 10
    a, b = ShardWindows(tmp_path / "small", "train", 48), ShardWindows(tmp_path / "big", "train", 48)
    assert len(a) == len(b)
    for k in (0, 1, len(a) // 2, len(a) - 1):
        assert np.array_equal(a.window(k)[0], b.window(k)[0])


def test_tokenize_resumes_after_an_interruption_to_the_same_bytes(tmp_path, tok, monkeypatch):
    corpus = small_corpus(tmp_path / "corpus.jsonl")
    whole = tmp_path / "whole"
    tk.tokenize_to(whole, str(corpus), tok, shard_tokens=700, commit_tokens=300, batch_docs=16)
    out = tmp_path / "out"
    interrupted_tokenization(out, corpus, tok, monkeypatch)
    assert (out / PROGRESS_FILE).is_file() and not (out / MANIFEST_FILE).exists()
    with pytest.raises(DataError, match="unfinished tokenization; run the same"):
        ShardWindows(out, "train", 32)
    messages = []
    tk.tokenize_to(out, str(corpus), tok, shard_tokens=700, commit_tokens=300, batch_docs=16, say=messages.append)
    assert any("continuing" in m for m in messages)
    assert _files(out) == _files(whole)


def test_mixture_weights_and_globs(tmp_path, tok):
    a = small_corpus(tmp_path / "a.jsonl")
    b = tmp_path / "parts"
    b.mkdir()
    lines = a.read_text().splitlines()
    (b / "x1.jsonl").write_text("\n".join(lines[:200]) + "\n")
    (b / "x2.jsonl").write_text("\n".join(lines[200:]) + "\n")
    glob_out = tk.tokenize_to(tmp_path / "glob", str(b / "x*.jsonl"), tok)
    plain = tk.tokenize_to(tmp_path / "plain", str(a), tok)
    assert glob_out["splits"]["train"]["0"]["tokens"] == plain["splits"]["train"]["0"]["tokens"]
    m = tk.tokenize_to(tmp_path / "mix", f"{a}:0.3,{b / 'x1.jsonl'}:0.7", tok)
    assert m["weights"] == [0.3, 0.7]
    w = ShardWindows(tmp_path / "mix", "train", 32, seed=1)
    assert len(w) == sum(w.sizes) and abs(w.counts[0] / len(w) - 0.3) < 0.01
    first = [w.locate(k) for k in range(len(w))]
    assert first == [ShardWindows(tmp_path / "mix", "train", 32, seed=1).locate(k) for k in range(len(w))]
    from_b = [x for s, x in first if s == 1]
    assert len(from_b) > w.sizes[1] and set(from_b) == set(range(w.sizes[1]))  # the smaller source repeats
    from_a = [x for s, x in first if s == 0]
    assert len(set(from_a)) == len(from_a) < w.sizes[0]  # the larger one is subsampled


def test_hub_dataset_is_streamed_through_datasets(tmp_path, tok, monkeypatch):
    import datasets

    rows = [json.loads(x) for x in small_corpus(tmp_path / "c.jsonl").read_text().splitlines()]
    seen = {}

    def fake_load(name, streaming=False, **kw):
        seen.update(name=name, streaming=streaming)
        return datasets.IterableDataset.from_generator(lambda: iter(rows))

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    m = tk.tokenize_to(tmp_path / "hub", "someorg/somedata", tok)
    assert seen == {"name": "someorg/somedata", "streaming": True}
    plain = tk.tokenize_to(tmp_path / "plain", str(tmp_path / "c.jsonl"), tok)
    assert m["splits"]["train"]["0"]["tokens"] == plain["splits"]["train"]["0"]["tokens"]


def test_hub_id_offline_is_one_line_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "t"
    r = invoke("tokenize", "--data", "someorg/somedata", "--tokenizer", tokenizer_path(), "--out", out)
    assert r.exit_code == 2 and no_traceback(r) and "hub is offline" in r.output
    assert not out.exists()


def test_bad_outputs_are_refused_untouched(tmp_path):
    corpus = small_corpus(tmp_path / "corpus.jsonl")
    other = small_corpus(tmp_path / "other.jsonl")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep")
    r = invoke("tokenize", "--data", corpus, "--tokenizer", tokenizer_path(), "--out", taken)
    assert r.exit_code == 2 and "not empty" in r.output and sorted(p.name for p in taken.iterdir()) == ["mine.txt"]
    out = tmp_path / "tokens"
    assert invoke("tokenize", "--data", corpus, "--tokenizer", tokenizer_path(), "--out", out).exit_code == 0
    before = _files(out)
    other.write_text(other.read_text().replace("king", "queen"))
    r = invoke("tokenize", "--data", other, "--tokenizer", tokenizer_path(), "--out", out)
    assert r.exit_code == 2 and "tokens of other data" in r.output and _files(out) == before
    r = invoke("tokenize", "--data", other, "--tokenizer", tokenizer_path(), "--out", out, "--overwrite")
    assert r.exit_code == 0 and json.loads((out / MANIFEST_FILE).read_text())["data"] == str(other)
    r = invoke("tokenize", "--data", f"{corpus}:0", "--tokenizer", tokenizer_path(), "--out", tmp_path / "z")
    assert r.exit_code == 2 and "must be > 0" in r.output and not (tmp_path / "z").exists()


def test_token_dir_of_another_tokenizer_is_refused(tmp_path, tok):
    from transformers import AutoTokenizer

    corpus = small_corpus(tmp_path / "corpus.jsonl")
    tk.tokenize_to(tmp_path / "t", str(corpus), tok)
    other = AutoTokenizer.from_pretrained(tokenizer_path())
    other.add_tokens(["<extra>"])
    with pytest.raises(DataError, match="another tokenizer"):
        load_token_samples(tmp_path / "t", other, seq_len=32, num_samples=2, split="train")
    with pytest.raises(DataError, match="vocabulary has only 100"):
        load_token_samples(tmp_path / "t", tok, seq_len=32, num_samples=2, split="train", model_vocab_size=100)


def test_cli_num_proc_writes_the_serial_bytes(tmp_path):
    """`--num-proc 2` through the command line: the same files, byte for byte, as one process, plain and
    mixed sources, several tables, shards and commits."""
    a = small_corpus(tmp_path / "a.jsonl")
    parts = tmp_path / "parts"
    parts.mkdir()
    lines = a.read_text().splitlines()
    for i in range(3):
        (parts / f"x{i}.jsonl").write_text("\n".join(lines[i * 130:(i + 1) * 130]) + "\n")
    data = f"{a}:0.4,{parts / 'x*.jsonl'}:0.6"
    outs = {}
    for n in (1, 2):
        outs[n] = tmp_path / f"n{n}"
        r = invoke("tokenize", "--data", data, "--tokenizer", tokenizer_path(), "--out", outs[n], "--num-proc", n)
        assert r.exit_code == 0, r.output
    assert _files(outs[1]) == _files(outs[2])
    r = invoke("tokenize", "--data", a, "--tokenizer", tokenizer_path(), "--out", tmp_path / "z", "--num-proc", 0)
    assert r.exit_code == 2 and "--num-proc" in r.output and not (tmp_path / "z").exists()


def test_num_proc_resumes_a_serial_run_to_the_same_bytes(tmp_path, tok, monkeypatch):
    """Killed midway in one process, finished in two (small batches, many commits): the bytes of an
    uninterrupted serial run."""
    corpus = small_corpus(tmp_path / "corpus.jsonl")
    sizes = dict(shard_tokens=700, commit_tokens=300, batch_docs=16)
    whole = tmp_path / "whole"
    tk.tokenize_to(whole, str(corpus), tok, **sizes)
    out = tmp_path / "out"
    real = tk._Writer.append
    calls = [0]

    def dying(self, ids, mask):
        calls[0] += 1
        if calls[0] == 30:
            raise KeyboardInterrupt
        return real(self, ids, mask)

    monkeypatch.setattr(tk._Writer, "append", dying)
    with pytest.raises(KeyboardInterrupt):
        tk.tokenize_to(out, str(corpus), tok, **sizes)
    monkeypatch.setattr(tk._Writer, "append", real)
    tk.tokenize_to(out, str(corpus), tok, num_proc=2, **sizes)
    assert _files(out) == _files(whole)
    again = tmp_path / "again"
    tk.tokenize_to(again, str(corpus), tok, num_proc=2, **sizes)
    assert _files(again) == _files(whole)


def test_num_proc_error_in_a_worker_is_the_serial_error(tmp_path, tok):
    """A bad record met by a worker stops the run with the serial run's message."""
    (tmp_path / "x1.jsonl").write_text("".join(json.dumps({"text": f"line {i}"}) + "\n" for i in range(40)))
    (tmp_path / "x2.jsonl").write_text("".join(json.dumps({"body": f"line {i}"}) + "\n" for i in range(40)))
    messages = []
    for n in (1, 2):
        with pytest.raises(DataError, match="has no text field 'text'") as err:
            tk.tokenize_to(tmp_path / f"o{n}", str(tmp_path / "x*.jsonl"), tok, num_proc=n, batch_docs=16)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


def test_unfinished_tokenization_of_other_data_is_named_and_untouched(tmp_path, tok, monkeypatch):
    corpus = small_corpus(tmp_path / "corpus.jsonl")
    other = tmp_path / "other.jsonl"
    other.write_text(corpus.read_text())
    out = tmp_path / "out"
    interrupted_tokenization(out, corpus, tok, monkeypatch)
    before = _files(out)
    r = invoke("tokenize", "--data", other, "--tokenizer", tokenizer_path(), "--out", out)
    assert r.exit_code == 2 and no_traceback(r) and _files(out) == before
    assert f"holds an unfinished tokenization of other data ('{corpus}', not '{other}')" in " ".join(r.output.split())
