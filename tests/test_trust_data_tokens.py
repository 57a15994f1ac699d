"""Token directories from others are hostile: `tokenize` resuming an unfinished directory, and every
reader of a finished one, stay inside it (derived shard names, no link followed); manifests and
progress records of the wrong shape are refused in words; long documents are tokenized in pieces;
a FIFO as --data is refused, not waited on; mixture weights are checked where they are parsed."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from ckpt_helpers import interrupted_tokenization, invoke, no_traceback, save_checkpoint, small_corpus
from hybridprune.data import DataError, load_token_samples, tokenizer_path
from hybridprune.data import tokenize as tk
from hybridprune.data.sources import read_documents
from hybridprune.data.shards import MANIFEST_FILE, PROGRESS_FILE, ShardWindows
from trust_helpers import deadline, digests, touches


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_path())


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("teacher") / "teacher")


def _tokenize(data, out, *extra):
    return invoke("tokenize", "--data", data, "--tokenizer", tokenizer_path(), "--out", out, *extra)


def _text(r) -> str:
    return " ".join(r.output.split())


def _outside(tmp_path):
    """A user's files beside the token directory: one file, and a directory of them."""
    victim = tmp_path / "victim.bin"
    victim.write_bytes(bytes(range(256)) * 64)
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    (user / "s0-00001.tok").write_bytes(b"\x01\x00" * 500)
    return victim, user


def _last_shard(progress) -> tuple[str, int]:
    shards = progress["streams"]["train"]["0"]["shards"]
    return shards[-1]["file"], len(shards) - 1


def _plant(case, out, victim, user, progress):
    """Plant one hostile thing in the unfinished directory `out`."""
    name, i = _last_shard(progress)
    if case in ("dotdot", "absolute"):
        progress["streams"]["train"]["0"]["shards"][i]["file"] = "../victim.bin" if case == "dotdot" else str(victim)
        (out / PROGRESS_FILE).write_text(json.dumps(progress))
    elif case == "shard link":
        (out / name).unlink()
        (out / name).symlink_to(victim)
    elif case == "hard link":
        (out / name).unlink()
        os.link(victim, out / name)
    elif case == "split link":
        shutil.rmtree(out / "train")
        (out / "train").symlink_to(user, target_is_directory=True)
    elif case == "progress link":
        copy = user.parent / "progress-copy.json"
        copy.write_text(json.dumps(progress))
        (out / PROGRESS_FILE).unlink()
        (out / PROGRESS_FILE).symlink_to(copy)
    elif case == "stray link":
        (out / "train" / "s0-09999.tok").symlink_to(victim)


@pytest.mark.parametrize("case, message", [
    ("dotdot", "names '../victim.bin', not 'train/s0-"),
    ("absolute", "the file hybridprune writes there"),
    ("shard link", "is a symbolic link, which hybridprune never writes"),
    ("hard link", "other name(s) (a hard link)"),
    ("split link", "train in"),
    ("progress link", "is a symbolic link"),
    ("stray link", None),  # removed as the stray entry it is; the link's target untouched
])
def test_tokenize_resume_stays_inside_its_directory(tmp_path, tok, monkeypatch, case, message):
    """A planted `..` name, absolute name or link in an unfinished token directory: the rerun reads,
    writes and deletes nothing outside it (refused with exit 2, or, for a stray entry, finished);
    --overwrite then starts afresh to the tokens of a clean run (or, where the output manifest lists a
    link, is refused too), the user's files still intact."""
    corpus = small_corpus(tmp_path / "corpus.jsonl")
    clean = tk.tokenize_to(tmp_path / "clean", str(corpus), tok)
    out = tmp_path / "tokens"
    progress = interrupted_tokenization(out, corpus, tok, monkeypatch)
    victim, user = _outside(tmp_path)
    _plant(case, out, victim, user, progress)
    before = digests(tmp_path / "user"), victim.read_bytes()
    with touches(victim) as hit_file, touches(user) as hit_dir:
        r = _tokenize(corpus, out)
    assert no_traceback(r), r.output
    assert (digests(tmp_path / "user"), victim.read_bytes()) == before
    if message is None:
        assert r.exit_code == 0, r.output
        assert not os.path.lexists(out / "train" / "s0-09999.tok")
        assert json.loads((out / MANIFEST_FILE).read_text())["num_tokens"] == clean["num_tokens"]
    else:
        assert r.exit_code == 2 and message in _text(r), r.output
        assert "--overwrite" in _text(r) and not (out / MANIFEST_FILE).exists()
        with touches(victim) as hit_file2, touches(user) as hit_dir2:
            r = _tokenize(corpus, out, "--overwrite")
        assert (digests(tmp_path / "user"), victim.read_bytes()) == before and not hit_file2 and not hit_dir2
        if case in ("split link", "progress link"):  # an entry the output manifest lists is now a link
            name = "train" if case == "split link" else PROGRESS_FILE
            assert r.exit_code == 2 and f"'{name}', which is a symbolic link there" in _text(r), r.output
            assert (out / name).is_symlink()
        else:
            assert r.exit_code == 0, r.output
            assert json.loads((out / MANIFEST_FILE).read_text())["num_tokens"] == clean["num_tokens"]
    assert not hit_file and not hit_dir, (hit_file, hit_dir)


@pytest.fixture()
def tokens(tmp_path, tok):
    corpus = small_corpus(tmp_path / "corpus.jsonl")
    tk.tokenize_to(tmp_path / "tokens", str(corpus), tok, shard_tokens=2000)
    return tmp_path / "tokens"


def _logits(teacher, data, out):
    return invoke("teacher-logits", "--teacher", teacher, "--data", data, "--seq-len", "16", "--top-k", "4",
                  "--num-samples", "4", "--batch-size", "4", "--device", "cpu", "--out", out)


def _edit_manifest(d, edit):
    m = json.loads((d / MANIFEST_FILE).read_text())
    edit(m)
    (d / MANIFEST_FILE).write_text(json.dumps(m))


@pytest.mark.parametrize("case, message", [
    ("dotdot", "names '../secret.tok', not 'train/s0-00000.tok'"),
    ("absolute", "not 'train/s0-00000.tok', the file hybridprune writes there"),
    ("shard link", "is a symbolic link, which hybridprune never writes"),
    ("split link", "train in"),
    ("manifest link", "is a symbolic link"),
])
def test_token_readers_stay_inside_the_directory(tokens, tmp_path, tok, teacher, case, message):
    """A manifest naming `../secret`, an absolute path, or a shard, split or manifest that is a link out
    of the directory: refused (exit 2, in words) before anything is read from outside; the files a
    reader would have trained on are never opened."""
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(tokens / "train" / "s0-00000.tok", outside / "secret.tok")  # valid-looking bytes
    secret = outside / "secret.tok"
    if case == "dotdot":
        shutil.move(secret, tokens / "secret.tok")
        secret = tokens / "secret.tok"
        _edit_manifest(tokens, lambda m: m["splits"]["train"]["0"]["shards"][0].update(file="../secret.tok"))
    elif case == "absolute":
        _edit_manifest(tokens, lambda m: m["splits"]["train"]["0"]["shards"][0].update(file=str(secret)))
    elif case == "shard link":
        (tokens / "train" / "s0-00000.tok").unlink()
        (tokens / "train" / "s0-00000.tok").symlink_to(secret)
    elif case == "split link":
        shutil.copytree(tokens / "train", outside / "train")
        shutil.rmtree(tokens / "train")
        (tokens / "train").symlink_to(outside / "train", target_is_directory=True)
    elif case == "manifest link":
        shutil.move(tokens / MANIFEST_FILE, outside / MANIFEST_FILE)
        (tokens / MANIFEST_FILE).symlink_to(outside / MANIFEST_FILE)
    before = digests(outside)
    with touches(outside) as hits:
        r = _logits(teacher, tokens, tmp_path / "logits")
        with pytest.raises(DataError) as err:
            load_token_samples(tokens, tok, seq_len=16, num_samples=4, split="train")
    assert r.exit_code == 2 and no_traceback(r) and message in _text(r), r.output
    assert message in " ".join(str(err.value).split())
    assert not hits and digests(outside) == before and not (tmp_path / "logits").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(dtype="float64"), "dtype: expected one of 'uint16', 'uint32', got \"float64\""),
    (lambda m: m.update(splits=[]), "splits: expected an object, got []"),
    (lambda m: m["splits"]["train"]["0"]["shards"][0].update(tokens="ten"),
     "splits.train.0.shards[0].tokens: expected a non-negative integer"),
    (lambda m: m["splits"]["train"]["0"]["shards"][0].update(file=3), "shards[0].file: expected a string"),
    (lambda m: m.update(tokenizer="x"), "tokenizer: expected an object"),
    (lambda m: m.update(weights=[-1.0]), "weights: expected one positive weight per source"),
    (lambda m: m["splits"].update(elsewhere={}), "'elsewhere' is not a split hybridprune writes"),
    (lambda m: m["splits"]["train"].update({"x": m["splits"]["train"]["0"]}), "'x' is not the index of one"),
])
def test_token_manifest_of_the_wrong_shape_is_refused_in_words(tokens, tmp_path, teacher, edit, message):
    _edit_manifest(tokens, edit)
    before = digests(tokens)
    r = _logits(teacher, tokens, tmp_path / "logits")
    assert r.exit_code == 2 and no_traceback(r), r.output
    assert message in _text(r) and "tokenize the data again" in _text(r)
    assert digests(tokens) == before


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.update(position="x"), "position: expected a list"),
    (lambda p: p.update(position=[0, 1]), "position: expected [source, table, row]"),
    (lambda p: p["streams"].update(train=[]), "streams.train: expected an object"),
    (lambda p: p.update(max_token_id="big"), "max_token_id: expected an integer"),
    (lambda p: p.update(plan=7), "plan: expected a string"),
])
def test_tokenize_progress_of_the_wrong_shape_is_refused_in_words(tmp_path, tok, monkeypatch, edit, message):
    corpus = small_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "tokens"
    progress = interrupted_tokenization(out, corpus, tok, monkeypatch)
    edit(progress)
    (out / PROGRESS_FILE).write_text(json.dumps(progress))
    before = digests(out)
    r = _tokenize(corpus, out)
    assert r.exit_code == 2 and no_traceback(r), r.output
    assert message in _text(r) and "pass --overwrite to start the tokenization afresh" in _text(r)
    assert digests(out) == before
    assert _tokenize(corpus, out, "--overwrite").exit_code == 0


def test_pieces_cut_before_whitespace_within_the_budget():
    assert tk.pieces("short text", 100) == ["short text"]
    assert tk.pieces("aaaa bbbb  cccc dddddddddddddddd", 6) == ["aaaa", " bbbb", "  cccc", " ddddd", "dddddd",
                                                                "ddddd"]
    text = "word " * 1000 + "x" * 3000 + "\n\nend"
    parts = tk.pieces(text, 64)
    assert "".join(parts) == text and max(map(len, parts)) <= 64
    assert all(p[:1].isspace() or i == 0 or not parts[i - 1][-1:].isspace() for i, p in enumerate(parts))


def test_a_long_document_is_tokenized_in_pieces(tmp_path, tok, monkeypatch):
    """A one-line document of a few MB: no tokenizer call sees a string past the budget (the memory of
    a fast tokenizer grows with its longest input), and the tokens decode back to the document."""
    words = "the king speaks of love and war while the fool laughs at night under a cold moon".split()
    text = " ".join(words[(i * 7) % len(words)] for i in range(400_000)) + " " + "z" * 20_000
    assert len(text) > 1_900_000
    doc = tmp_path / "long.txt"
    doc.write_text(text + "\n")
    monkeypatch.setattr(tk, "PIECE_CHARS", 4096)
    longest = [0]
    real = type(tok).__call__

    def recording(self, texts, *a, **kw):
        longest[0] = max([longest[0], *map(len, texts if isinstance(texts, list) else [texts])])
        return real(self, texts, *a, **kw)

    monkeypatch.setattr(type(tok), "__call__", recording)
    r = _tokenize(doc, tmp_path / "tokens")
    assert r.exit_code == 0, r.output
    assert 0 < longest[0] <= 4096
    m = json.loads((tmp_path / "tokens" / MANIFEST_FILE).read_text())
    (split, by_src), = m["splits"].items()
    ids = np.concatenate([np.fromfile(tmp_path / "tokens" / s["file"], dtype=np.uint16)
                          for s in by_src["0"]["shards"]])
    assert ids[-1] == tok.eos_token_id and tok.decode(ids[:-1].tolist()) == text + "\n"  # the line as read


def test_a_short_document_is_one_tokenizer_input(tmp_path, tok, monkeypatch):
    """Below the budget nothing changes: each document is one input of the tokenizer."""
    seen = []
    real = type(tok).__call__

    def recording(self, texts, *a, **kw):
        seen.extend(texts)
        return real(self, texts, *a, **kw)

    monkeypatch.setattr(type(tok), "__call__", recording)
    docs = [f"document {i} " + "words " * (i % 50) for i in range(300)]
    got = tk.encode_texts(docs, tok)
    assert [d for d in seen if d in docs] == docs and len(seen) == len(docs)
    assert all(len(parts) == 1 for parts in got)


def _fifo(path):
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("how", ["file", "in a directory", "glob", "mixture"])
def test_a_fifo_as_data_is_refused_not_waited_on(tmp_path, how):
    corpus = small_corpus(tmp_path / "corpus.jsonl")
    if how == "file":
        data, fifo = _fifo(tmp_path / "pipe.jsonl"), tmp_path / "pipe.jsonl"
    elif how == "in a directory":
        (tmp_path / "d").mkdir()
        shutil.copy(corpus, tmp_path / "d" / "a.jsonl")
        fifo = _fifo(tmp_path / "d" / "b.jsonl")
        data = tmp_path / "d"
    elif how == "glob":
        (tmp_path / "g").mkdir()
        shutil.copy(corpus, tmp_path / "g" / "a.jsonl")
        fifo = _fifo(tmp_path / "g" / "b.jsonl")
        data = f"{tmp_path / 'g'}/*.jsonl"
    else:
        fifo = _fifo(tmp_path / "pipe.jsonl")
        data = f"{corpus}:0.5,{fifo}:0.5"
    with deadline(60):
        r = _tokenize(data, tmp_path / "tokens")
    assert r.exit_code == 2 and no_traceback(r), r.output
    assert f"'{fifo}' is a named pipe (FIFO), not a data file" in _text(r)
    assert not (tmp_path / "tokens").exists()


def test_a_fifo_as_distill_or_calibrate_data_is_refused(tmp_path, teacher):
    fifo = _fifo(tmp_path / "pipe.txt")
    with deadline(120):
        r = invoke("distill", "--teacher", teacher, "--student", teacher, "--data", fifo, "--seq-len", "16",
                   "--steps", "1", "--out", tmp_path / "run")
        assert r.exit_code == 2 and no_traceback(r), r.output
        assert f"'{fifo}' is a named pipe (FIFO)" in _text(r)
        r = invoke("calibrate", "--model", teacher, "--data", fifo, "--seq-len", "16", "--samples", "2",
                   "--device", "cpu", "--out", tmp_path / "scores")
        assert r.exit_code == 2 and no_traceback(r), r.output
        assert f"'{fifo}' is a named pipe (FIFO)" in _text(r)
    with deadline(60), pytest.raises(DataError, match="named pipe"):
        read_documents(str(fifo), "all")


@pytest.mark.parametrize("weights, message", [
    ("{a}:1e400", "the weight 1e400 of '{a}' must be > 0 and finite, got inf"),
    ("{a}:0.7,{b}:1e999", "the weight 1e999 of '{b}' must be > 0 and finite, got inf"),
    ("{a}:0.7,{b}:-2", "the weight -2 of '{b}' must be > 0 and finite"),
    ("{a}:abc", "the weight 'abc' of '{a}' is malformed"),
    ("{a}:0.7,{b}:3x", "the weight '3x' of '{b}' is malformed"),
    ("{a}:0.7,{b}", "its source '{b}' has no weight"),
])
def test_mixture_weights_are_checked_where_they_are_parsed(tmp_path, weights, message):
    a = small_corpus(tmp_path / "a.jsonl")
    b = small_corpus(tmp_path / "b.jsonl")
    r = _tokenize(weights.format(a=a, b=b), tmp_path / "tokens")
    assert r.exit_code == 2 and no_traceback(r), r.output
    assert message.format(a=a, b=b) in _text(r) and "not found" not in _text(r)
    assert not (tmp_path / "tokens").exists()


def test_manifest_weights_are_positive_for_readers(tokens):
    _edit_manifest(tokens, lambda m: m.update(weights=[0.0]))
    with pytest.raises(DataError, match="one positive weight per source"):
        ShardWindows(tokens, "train", 16)
