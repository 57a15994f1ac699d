"""Bad data files are refused with a message naming the file (and the line where known), through
`calibrate` where the user meets them, and nothing is written."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

import hybridprune as hp
from clean_errors import assert_refused
from conftest import build, tiny_nemotron_config
from hybridprune.cli import app
from hybridprune.data import DataError, read_documents, tokenizer_path
from hybridprune.pruning.export import copy_tokenizer_files

runner = CliRunner()
DOCS = [f"document number {i} about the sea and the stars" for i in range(40)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data-validation")
    build(tiny_nemotron_config(vocab_size=4096)).save_pretrained(root / "model")
    copy_tokenizer_files(tokenizer_path(), root / "model")
    return root / "model"


def _calibrate(model_dir, data, tmp_path):
    out = tmp_path / "scores"
    result = runner.invoke(app, ["calibrate", "--model", str(model_dir), "--data", str(data), "--samples", "2",
                                 "--seq-len", "8", "--depth-samples", "0", "--out", str(out)])
    return result, out


def _write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


BAD_FILES = [
    ("plain.txt.gz", "hello world\n\nmore text\n",
     r"'{path}' ends in .gz but is not gzip-compressed \(it starts with b'he'\)"),
    ("plain.jsonl.gz", '{"text": "hello"}\n', r"'{path}' ends in .gz but is not gzip-compressed"),
    ("packed.txt", gzip.compress(b"hello world\n"), r"'{path}' is gzip-compressed but its name does not end in .gz"),
    ("cut.txt.gz", gzip.compress(b"hello world\n\nmore text " * 20)[:-12], r"'{path}' cannot be decompressed"),
    ("bad.jsonl", '{"text": "a"}\n{"text": "b"}\n{"text": oops}\n',
     r"could not read '{path}' as JSON: line 3, column 10: Expecting value"),
    ("list.jsonl", '{"text": "a"}\n[1, 2]\n', r"'{path}' as JSON: line 2 holds a JSON array, not an object"),
    # pyarrow's JSON reader crashes the process (SIGSEGV) on a first record `null`: refused before it
    ("null.jsonl", "\nnull\n", r"could not read '{path}' as JSON: line 2 holds a JSON null, not an object"),
    ("null.json.gz", gzip.compress(b"null"), r"'{path}' as JSON: line 1 holds a JSON null"),
    ("number.jsonl", "3\n", r"'{path}' as JSON: line 1 holds a JSON number"),
    ("cut.json", '[{"text": "a"}, {"text": "b"', r"could not read '{path}' as JSON: line 1, column 29"),
    ("empty.jsonl", "", r"data file '{path}' is empty"),
    ("blank.txt", "\n\n   \n", r"data file '{path}' holds no text"),
    ("field.jsonl", '{"body": "a"}\n', r"'{path}' has no text field 'text'; its fields are \['body'\]"),
    ("latin1.txt", "caf\xe9\n".encode("latin-1"), r"could not read '{path}' as text: UnicodeDecodeError"),
]


@pytest.mark.parametrize("name, content, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_data_files_are_refused_naming_the_file(model_dir, tmp_path, name, content, message):
    path = _write(tmp_path / name, content)
    result, out = _calibrate(model_dir, path, tmp_path)
    assert_refused(result, message.format(path=path), out=out)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    import datasets

    root = tmp_path_factory.mktemp("saved")
    datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(str(root / "ds"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": DOCS[:30]}),
                          "validation": datasets.Dataset.from_dict({"text": DOCS[30:]})}).save_to_disk(str(root / "dd"))
    return root


@pytest.mark.parametrize("kind, damage, message", [
    ("ds", lambda d: _write(d / "state.json", "{broken"),
     r"'{d}/state.json' is damaged \(line 1, column 2: .*\): the dataset saved in '{d}' cannot be loaded"),
    ("ds", lambda d: _write(d / "dataset_info.json", "[1,"), r"'{d}/dataset_info.json' is damaged"),
    ("ds", lambda d: [f.unlink() for f in d.glob("*.arrow")],
     r"the dataset saved in '{d}' cannot be loaded \(FileNotFoundError: .*data-00000-of-00001.arrow"),
    ("ds", lambda d: [_write(f, "junk") for f in d.glob("*.arrow")], r"the dataset saved in '{d}' cannot be loaded"),
    ("dd", lambda d: _write(d / "dataset_dict.json", "{"), r"'{d}/dataset_dict.json' is damaged"),
    ("dd", lambda d: _write(d / "validation" / "state.json", "x"), r"'{d}/validation/state.json' is damaged"),
    ("dd", lambda d: shutil.rmtree(d / "validation"), r"the dataset saved in '{d}' cannot be loaded"),
])
def test_damaged_saved_datasets_are_refused_naming_the_file(model_dir, saved, tmp_path, kind, damage, message):
    d = tmp_path / kind
    shutil.copytree(saved / kind, d)
    damage(d)
    result, out = _calibrate(model_dir, d, tmp_path)
    assert_refused(result, message.format(d=d), "write it again with datasets.save_to_disk", out=out)


def test_good_files_still_read(tmp_path):
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in DOCS[:2])
    assert read_documents(tmp_path / "a.jsonl.gz", "all") == DOCS[:2]
    _write(tmp_path / "b.json", json.dumps([{"text": d} for d in DOCS[:2]]))
    assert read_documents(tmp_path / "b.json", "all") == DOCS[:2]
    with pytest.raises(DataError, match="is empty"):
        read_documents(_write(tmp_path / "c.jsonl", ""), "all")


def test_token_ids_outside_the_vocabulary_are_refused():
    model = build(tiny_nemotron_config())
    with pytest.raises(ValueError, match=r"token id 96 is outside the model's vocabulary \(ids 0..95\); "
                                         r"1 id\(s\) are out of range"):
        hp.calibrate(model, torch.tensor([[5, 6, 96, 7]]), progress=False)
    with pytest.raises(ValueError, match="token id -1 is outside"):
        hp.depth_importance(model, torch.tensor([[5, -1, 7, 8]]), progress=False)
    with pytest.raises(ValueError, match="token ids must be an integer tensor"):
        hp.calibrate(model, torch.tensor([[5.0, 6.0]]), progress=False)
