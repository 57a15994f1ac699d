"""The data layer: formats, splits, determinism, windows, batching, sharding and every bad input."""

from __future__ import annotations

import gzip
import json
import random

import pytest
import torch

from hybridprune.data import DataError, TokenSamples, load_token_samples, read_documents, split_of

WORDS = (
    "the king queen lord lady sword crown night day love death honour grace fool heart blood "
    "speak come go stay fly hear see know think swear weep laugh sleep wake fight yield "
    "sweet fair foul gentle noble bold true false proud poor good ill dark bright"
).split()


def make_docs(n: int = 240, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(12, 40))]
        docs.append(f"Document {i}: " + " ".join(words).capitalize() + ".")
    return docs


DOCS = make_docs()


@pytest.fixture(scope="module")
def tok():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(DOCS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|pad|>")


# ---- writers for every format -----------------------------------------------------------------------


def write_txt(path, docs):
    path.write_text("\n\n".join(docs) + "\n")
    return path


def write_jsonl(path, docs, field="text"):
    path.write_text("".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)))
    return path


def write_jsonl_gz(path, docs):
    with gzip.open(path, "wt") as fh:
        fh.writelines(json.dumps({"text": d}) + "\n" for d in docs)
    return path


def write_json(path, docs):
    path.write_text(json.dumps([{"text": d, "id": i} for i, d in enumerate(docs)]))
    return path


def write_parquet(path, docs):
    import datasets

    datasets.Dataset.from_dict({"text": docs, "id": list(range(len(docs)))}).to_parquet(str(path))
    return path


def write_disk(path, docs):
    import datasets

    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(path))
    return path


WRITERS = {
    "a.txt": write_txt,
    "a.jsonl": write_jsonl,
    "a.jsonl.gz": write_jsonl_gz,
    "a.json": write_json,
    "a.parquet": write_parquet,
    "saved": write_disk,
}


@pytest.mark.parametrize("split", ["calibration", "train", "validation", "test"])
def test_every_format_gives_identical_samples(tmp_path, tok, split):
    results = {}
    for name, writer in WRITERS.items():
        path = writer(tmp_path / name, DOCS)
        results[name] = load_token_samples(path, tok, seq_len=16, split=split, seed=3)
    ref = results["a.jsonl"]
    assert len(ref) > 0
    for name, s in results.items():
        assert torch.equal(s.input_ids, ref.input_ids), name
        assert torch.equal(s.attention_mask, ref.attention_mask), name
    # the in-memory forms agree too
    assert torch.equal(load_token_samples(DOCS, tok, seq_len=16, split=split, seed=3).input_ids, ref.input_ids)


def test_sample_contract(tmp_path, tok):
    s = load_token_samples(write_jsonl(tmp_path / "d.jsonl", DOCS), tok, seq_len=32, num_samples=10, seed=0)
    assert isinstance(s, TokenSamples) and isinstance(s, torch.utils.data.Dataset)
    assert len(s) == 10 and s.input_ids.shape == (10, 32) and s.attention_mask.shape == (10, 32)
    assert s.input_ids.dtype == torch.long and s.attention_mask.dtype == torch.long
    assert bool((s.attention_mask == 1).all())
    item = s[3]
    assert set(item) == {"input_ids", "attention_mask"}
    assert torch.equal(item["input_ids"], s.input_ids[3]) and item["input_ids"].shape == (32,)
    assert s.meta["split"] == "train" and s.meta["num_available"] >= 10


def test_windows_are_the_eos_joined_stream(tok):
    docs = read_documents(DOCS, "train")
    stream = []
    for d in docs:
        stream += tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    s = load_token_samples(DOCS, tok, seq_len=24, split="train", shuffle=False)
    n = len(stream) // 24
    assert len(s) == n
    assert s.input_ids.reshape(-1).tolist() == stream[: n * 24]
    padded = load_token_samples(DOCS, tok, seq_len=24, split="train", shuffle=False, pad_last=True)
    tail = len(stream) - n * 24
    assert len(padded) == n + (tail > 0)
    if tail:
        assert padded.attention_mask[-1].tolist() == [1] * tail + [0] * (24 - tail)
        assert padded.input_ids[-1, :tail].tolist() == stream[n * 24 :]
        assert bool((padded.input_ids[-1, tail:] == tok.pad_token_id).all())


def test_splits_are_disjoint_by_document(tmp_path, tok):
    parts = {sp: read_documents(DOCS, sp) for sp in ("calibration", "train", "validation", "test")}
    assert sum(len(v) for v in parts.values()) == len(DOCS)
    for a in parts:
        assert parts[a], f"{a} is empty"
        for b in parts:
            if a < b:
                assert not set(parts[a]) & set(parts[b]), (a, b)
    # assignment depends on the text alone: reordering the source changes nothing
    shuffled = DOCS[::-1]
    assert set(read_documents(shuffled, "validation")) == set(parts["validation"])
    assert all(split_of(d) == "test" for d in parts["test"])
    # a duplicate of a validation document never shows up in train
    dup = DOCS + [parts["validation"][0]]
    assert parts["validation"][0] not in read_documents(dup, "train")
    assert read_documents(DOCS, "all") == DOCS


def test_presplit_directory_carves_calibration_from_train(tmp_path, tok):
    d = tmp_path / "corpus"
    d.mkdir()
    train, val, test = DOCS[:200], DOCS[200:220], DOCS[220:]
    write_jsonl(d / "x-train.jsonl", train)
    write_jsonl(d / "x-validation.jsonl", val)
    write_jsonl(d / "x-test.jsonl", test)
    assert read_documents(d, "validation") == val
    assert read_documents(d, "test") == test
    calib, tr = read_documents(d, "calibration"), read_documents(d, "train")
    assert calib and tr and not set(calib) & set(tr) and set(calib) | set(tr) == set(train)
    # with a given calibration part, train is used whole
    write_jsonl(d / "x-calibration.jsonl", DOCS[:5])
    assert read_documents(d, "train") == train and read_documents(d, "calibration") == DOCS[:5]


def test_dataset_dict_on_disk_keeps_its_splits(tmp_path, tok):
    import datasets

    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": DOCS[:200]}),
         "validation": datasets.Dataset.from_dict({"text": DOCS[200:]})}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert read_documents(tmp_path / "dd", "validation") == DOCS[200:]
    with pytest.raises(DataError, match="no 'test' split"):
        read_documents(tmp_path / "dd", "test")


def test_determinism_by_seed(tmp_path, tok):
    path = write_jsonl(tmp_path / "d.jsonl", DOCS)
    a = load_token_samples(path, tok, seq_len=16, num_samples=20, seed=7)
    b = load_token_samples(path, tok, seq_len=16, num_samples=20, seed=7)
    c = load_token_samples(path, tok, seq_len=16, num_samples=20, seed=8)
    assert torch.equal(a.input_ids, b.input_ids) and a.fingerprint == b.fingerprint
    assert not torch.equal(a.input_ids, c.input_ids) and a.fingerprint != c.fingerprint
    # the same windows overall, only a different choice/order
    full_a = load_token_samples(path, tok, seq_len=16, seed=7)
    full_c = load_token_samples(path, tok, seq_len=16, seed=8)
    assert sorted(map(tuple, full_a.input_ids.tolist())) == sorted(map(tuple, full_c.input_ids.tolist()))
    # too many requested: all of them, no error
    assert len(load_token_samples(path, tok, seq_len=16, num_samples=10**6)) == len(full_a)


def test_batches_and_shards(tok):
    s = load_token_samples(DOCS, tok, seq_len=16, num_samples=11)
    batches = list(s.batches(4))
    assert [b["input_ids"].shape[0] for b in batches] == [4, 4, 3] and s.num_batches(4) == 3
    assert torch.equal(torch.cat([b["input_ids"] for b in batches]), s.input_ids)
    assert all(b["attention_mask"].shape == b["input_ids"].shape for b in batches)
    shards = [s.shard(r, 3) for r in range(3)]
    assert [len(x) for x in shards] == [4, 4, 3]
    rows = sorted(tuple(r) for x in shards for r in x.input_ids.tolist())
    assert rows == sorted(tuple(r) for r in s.input_ids.tolist())
    assert torch.equal(s.shard(1, 3).input_ids, shards[1].input_ids)
    assert [len(s.shard(r, 3, even=True)) for r in range(3)] == [3, 3, 3]
    with pytest.raises(ValueError):
        s.shard(3, 3)


# ---- bad input -----------------------------------------------------------------------------------------


def test_missing_file(tmp_path, tok):
    with pytest.raises(DataError, match="not found"):
        load_token_samples(tmp_path / "nope.jsonl", tok, seq_len=16)


def test_empty_files(tmp_path, tok):
    for name in ("e.txt", "e.jsonl", "e.json"):
        (tmp_path / name).write_text("")
        with pytest.raises(DataError, match="empty"):
            load_token_samples(tmp_path / name, tok, seq_len=16)
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    with pytest.raises(DataError, match="no text"):
        load_token_samples(tmp_path / "blank.txt", tok, seq_len=16)


def test_missing_text_field_lists_fields(tmp_path, tok):
    path = write_jsonl(tmp_path / "d.jsonl", DOCS, field="content")
    with pytest.raises(DataError, match=r"no text field 'text'.*\['content', 'id'\]"):
        load_token_samples(path, tok, seq_len=16)
    assert len(load_token_samples(path, tok, seq_len=16, text_field="content")) > 0


def test_text_shorter_than_one_sample(tmp_path, tok):
    path = write_txt(tmp_path / "short.txt", ["To be or not to be."])
    with pytest.raises(DataError, match=r"only \d+ tokens .*seq_len=512"):
        load_token_samples(path, tok, seq_len=512, split="all")
    s = load_token_samples(path, tok, seq_len=512, split="all", pad_last=True)
    assert len(s) == 1 and 0 < int(s.attention_mask.sum()) < 512


def test_tokenizer_vocab_mismatch(tok):
    with pytest.raises(DataError, match="does not belong to the model"):
        load_token_samples(DOCS, tok, seq_len=16, model_vocab_size=len(tok) - 1)
    with pytest.raises(DataError, match="produced token id"):
        # a model vocabulary that still admits the tokenizer's length check but not the ids it emits
        class Narrow:
            def __init__(self, inner):
                self.inner, self.eos_token_id = inner, inner.eos_token_id

            def __len__(self):
                return 10

            def __call__(self, *a, **k):
                return self.inner(*a, **k)

        load_token_samples(DOCS, Narrow(tok), seq_len=16, model_vocab_size=10)
    assert len(load_token_samples(DOCS, tok, seq_len=16, model_vocab_size=len(tok))) > 0


@pytest.mark.parametrize("seq_len", [1, 0, -4, 2.5])
def test_bad_seq_len(tok, seq_len):
    with pytest.raises(DataError, match="seq_len"):
        load_token_samples(DOCS, tok, seq_len=seq_len)


def test_unknown_split(tok):
    with pytest.raises(DataError, match="unknown split 'dev'"):
        load_token_samples(DOCS, tok, seq_len=16, split="dev")


def test_unsupported_file_type(tmp_path, tok):
    (tmp_path / "data.csv").write_text("text\nhello\n")
    with pytest.raises(DataError, match="unsupported file type '.csv'"):
        load_token_samples(tmp_path / "data.csv", tok, seq_len=16)


def test_hub_name_fails_fast_offline(tok, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="pass a local file"):
        load_token_samples("someorg/some-dataset", tok, seq_len=16)


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)
