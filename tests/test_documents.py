"""output.documents: the one checker of JSON documents read back (records, manifests, progress files)."""

import json
import os

import pytest

from hybridprune.output.documents import (Any, DocumentError, Finite, Map, Name, NonNegative, OneOf, Optional,
                                          inside, problem, read_document)

SHAPE = {"stage": OneOf("prune", "distill"), "files": [Name], "seconds?": Optional(Finite),
         "counts": Map(NonNegative(int)), "extra?": Any}


def write(tmp_path, text, name="doc.json"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_good_document_reads_back(tmp_path):
    doc = {"stage": "prune", "files": ["model.safetensors"], "seconds": 1.5, "counts": {"a": 3}, "other": [1]}
    assert read_document(write(tmp_path, json.dumps(doc)), SHAPE, fix="rerun") == doc


@pytest.mark.parametrize("doc, message", [
    ({"stage": "prune", "files": ["../x"], "counts": {}}, "files[0]: expected a plain file name"),
    ({"stage": "prune", "files": ["/etc/passwd"], "counts": {}}, "files[0]: expected a plain file name"),
    ({"stage": "prune", "files": "a", "counts": {}}, "files: expected a list"),
    ({"stage": "evil", "files": [], "counts": {}}, "stage: expected one of 'prune', 'distill'"),
    ({"files": [], "counts": {}}, "stage: missing"),
    ({"stage": "prune", "files": [], "counts": {"a": -1}}, "counts.a: expected a non-negative integer"),
    ({"stage": "prune", "files": [], "counts": {"a": True}}, "counts.a: expected a non-negative integer"),
    ([1, 2], "the document: expected an object"),
])
def test_a_document_of_another_shape_names_the_place(tmp_path, doc, message):
    with pytest.raises(DocumentError, match="rerun") as info:
        read_document(write(tmp_path, json.dumps(doc)), SHAPE, fix="rerun")
    assert message in str(info.value)


@pytest.mark.parametrize("text, message", [
    ('{"a": 1, "a": 2}', "given twice"),
    ('{"seconds": NaN}', "not a JSON number"),
    ('{"seconds": Infinity}', "not a JSON number"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("{not json", "not valid JSON"),
    (b"\xff\xfe".decode("latin-1"), "not valid JSON"),
])
def test_malformed_json_is_refused(tmp_path, text, message):
    with pytest.raises(DocumentError, match=message):
        read_document(write(tmp_path, text), Any, fix="rerun")


def test_links_fifos_and_missing_files_are_refused(tmp_path):
    target = write(tmp_path, "{}", "target.json")
    os.symlink(target, tmp_path / "link.json")
    with pytest.raises(DocumentError, match="symbolic link"):
        read_document(tmp_path / "link.json", Any, fix="rerun")
    os.mkfifo(tmp_path / "fifo.json")
    with pytest.raises(DocumentError, match="not a regular file"):  # and does not block
        read_document(tmp_path / "fifo.json", Any, fix="rerun")
    with pytest.raises(DocumentError, match="missing"):
        read_document(tmp_path / "none.json", Any, fix="rerun")


def test_floats_must_be_finite_and_int_is_not_bool():
    assert problem(1e400, Finite) and problem(float("nan"), float)
    assert problem(True, int) and problem(1, int) is None and problem(1, float) is None


def test_inside_confines_names(tmp_path):
    assert inside(tmp_path, "a.bin", what="m", fix="f") == tmp_path / "a.bin"
    for bad in ("../a", "/abs", "a/b", "..", "", None, 3):
        with pytest.raises(DocumentError, match="not a plain file name"):
            inside(tmp_path, bad, what="m", fix="f")
    os.symlink("/etc/hostname", tmp_path / "link")
    with pytest.raises(DocumentError, match="symbolic link"):
        inside(tmp_path, "link", what="m", fix="f")
