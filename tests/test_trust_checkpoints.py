"""Hostile and broken safetensors checkpoints, written byte by byte: every command that reads one
(streaming prune, in-memory prune, calibrate) refuses it with exit 2, one message naming the file, the
tensor and what to do, and leaves no output behind. Also float8 weights, `--dtype float16` overflow,
half-downloaded Hub snapshots and a local directory that shadows a Hub id."""

from __future__ import annotations

import json
import os
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from ckpt_helpers import PLAN, invoke, no_traceback, rewrite_weights, siblings
from hybridprune.checkpoint.dtypes import dtype_of

KEY = "backbone.layers.0.mixer.D"  # 12 float32 values
INDEX = "model.safetensors.index.json"


@pytest.fixture
def good(calibrated_checkpoint):
    """The session's calibrated checkpoint (conftest.py): read only."""
    return calibrated_checkpoint


def _commands(good, model, out):
    return {
        "prune": ["prune", "--model", model, "--scores", good / "scores", "--plan", PLAN, "--out", out],
        "prune --in-memory": ["prune", "--model", model, "--scores", good / "scores", "--plan", PLAN, "--out", out,
                              "--in-memory"],
        "calibrate": ["calibrate", "--model", model, "--data", good / "corpus.jsonl", "--samples", "4", "--seq-len",
                      "32", "--depth-samples", "0", "--out", out],
    }


COMMANDS = ["prune", "prune --in-memory", "calibrate"]


def _refused(good, tmp_path, model, command, *words, extra=()):
    out = tmp_path / "out"
    result = invoke(*_commands(good, model, out)[command], *extra)
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert no_traceback(result), result.output
    for word in words:
        assert word in text, (word, text)
    assert not out.exists() and not siblings(out)
    return text


# -- headers crafted by hand ------------------------------------------------------------------------

def _header(sd):
    header, offset, data = {"__metadata__": {"format": "pt"}}, 0, b""
    for key in sorted(sd):
        raw = sd[key].contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        header[key] = {"dtype": dtype_of(sd[key].dtype).name, "shape": list(sd[key].shape),
                       "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    return header, data


def _write_raw(path, text: str, data: bytes) -> None:
    head = text.encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)


def _crafted(good, tmp_path, edit):
    """A copy of the good checkpoint whose model.safetensors header is `edit(header, data)` -> (text, data)."""
    model = tmp_path / "hostile"
    shutil.copytree(good / "model", model)
    header, data = _header(load_file(str(model / "model.safetensors")))
    text, data = edit(header, data)
    _write_raw(model / "model.safetensors", text, data)
    return model


def _overlap(h, d):  # D's bytes are norm's too: the same region read twice
    other = "backbone.layers.0.mixer.norm.weight"
    h[other]["shape"] = [12]
    h[other]["data_offsets"] = list(h[KEY]["data_offsets"])
    return json.dumps(h), d


def _negative(h, d):
    begin, end = h[KEY]["data_offsets"]
    h[KEY]["data_offsets"] = [begin - 1_000_000, end]
    return json.dumps(h), d


def _duplicate(h, d):  # the same name twice; the second points at other bytes
    text = json.dumps(h)
    other = json.dumps({"dtype": "F32", "shape": [12], "data_offsets": h["backbone.norm_f.weight"]["data_offsets"][:1]
                        + [h["backbone.norm_f.weight"]["data_offsets"][0] + 48]})
    return text[:-1] + f', "{KEY}": {other}}}', d


def _float_shape(h, d):
    h[KEY]["shape"] = [12.0]
    return json.dumps(h), d


def _nested_metadata(h, d):
    h["__metadata__"] = {"format": {"nested": "pt"}}
    return json.dumps(h), d


def _unknown_dtype(h, d):
    h[KEY]["dtype"] = "F33"
    return json.dumps(h), d


def _shape_span(h, d):
    h[KEY]["shape"] = [13]
    return json.dumps(h), d


def _truncated(h, d):
    return json.dumps(h), d[:-100]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("edit, words", [
    (_overlap, ["model.safetensors is not a valid safetensors file", "overlaps"]),
    (_negative, ["data_offsets", KEY, "non-negative integers"]),
    (_duplicate, [f"the name {KEY} is given twice"]),
    (_float_shape, [KEY, "shape [12.0]", "non-negative integers"]),
    (_nested_metadata, ["__metadata__ is not a mapping of names to strings"]),
    (_unknown_dtype, [KEY, "unknown dtype 'F33'", "not a safetensors dtype"]),
    (_shape_span, [KEY, "needs 52 bytes, but its data_offsets span 48"]),
    (_truncated, ["truncated"]),
])
def test_a_header_safetensors_would_refuse_is_refused(good, tmp_path, command, edit, words):
    model = _crafted(good, tmp_path, edit)
    text = _refused(good, tmp_path, model, command, *words, "download or export the checkpoint again")
    assert str(model) in text


@pytest.mark.parametrize("command", COMMANDS)
def test_a_valid_but_unexpected_dtype_is_not_called_unknown(good, tmp_path, command):
    model = tmp_path / "u16"
    shutil.copytree(good / "model", model)
    rewrite_weights(model, lambda sd: sd.update({"backbone.layers.0.mixer.surprise": torch.zeros(4, dtype=torch.uint16)}))
    text = _refused(good, tmp_path, model, command, "unexpected tensors (would be ignored): model.layers.0.mixer.surprise")
    assert "dtype" not in text


# -- shards against their index ---------------------------------------------------------------------

def _sharded(good, tmp_path, name="sharded"):
    """The good checkpoint in two shards with an index: (directory, tensors by shard, weight_map)."""
    model = tmp_path / name
    shutil.copytree(good / "model", model)
    sd = load_file(str(model / "model.safetensors"))
    (model / "model.safetensors").unlink()
    keys = sorted(sd)
    parts = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
             "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    tensors = {shard: {k: sd[k] for k in ks} for shard, ks in parts.items()}
    weight_map = {k: shard for shard, ks in parts.items() for k in ks}
    for shard, ts in tensors.items():
        save_file(ts, str(model / shard), metadata={"format": "pt"})
    (model / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return model, tensors, weight_map


def test_the_sharded_copy_prunes(good, tmp_path):
    model, _, _ = _sharded(good, tmp_path)
    result = invoke(*_commands(good, model, tmp_path / "out")["prune"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_a_tensor_in_two_shards_is_refused(good, tmp_path, command):
    model, tensors, weight_map = _sharded(good, tmp_path)
    key = "backbone.embeddings.weight"
    named = weight_map[key]
    other = next(s for s in tensors if s != named)
    tensors[other][key] = torch.zeros_like(tensors[named][key])  # all-zero embeddings in the other shard
    save_file(tensors[other], str(model / other), metadata={"format": "pt"})
    _refused(good, tmp_path, model, command, f"{key} is in {other} as well as in {named}", f"{INDEX} maps it to {named}",
             "the index and the shards disagree")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_tensor_in_a_shard_the_index_does_not_name_is_refused(good, tmp_path, command):
    model, tensors, weight_map = _sharded(good, tmp_path)
    key = "backbone.norm_f.weight"
    other = next(s for s in tensors if s != weight_map[key])
    weight_map[key] = other
    (model / INDEX).write_text(json.dumps({"weight_map": weight_map}))
    _refused(good, tmp_path, model, command, f"{key} is in", f"{INDEX} maps it to {other}, which does not hold it")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_shard_holding_a_key_the_index_lacks_is_refused(good, tmp_path, command):
    model, _, weight_map = _sharded(good, tmp_path)
    del weight_map[KEY]
    (model / INDEX).write_text(json.dumps({"weight_map": weight_map}))
    _refused(good, tmp_path, model, command, f"holds {KEY}, which {INDEX} does not list")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_a_shard_outside_the_checkpoint_is_refused(good, tmp_path, command, where):
    model, tensors, weight_map = _sharded(good, tmp_path)
    shard = "model-00002-of-00002.safetensors"
    outside = tmp_path / "elsewhere" / "x.safetensors"
    outside.parent.mkdir()
    shutil.move(model / shard, outside)
    if where == "symlink":
        os.symlink(outside, model / shard)
        words = [f"shard {shard} is a link to {outside}, outside the checkpoint directory"]
    else:
        name = "../elsewhere/x.safetensors" if where == "parent" else str(outside)  # both name `outside`
        weight_map = {k: name if v == shard else v for k, v in weight_map.items()}
        (model / INDEX).write_text(json.dumps({"weight_map": weight_map}))
        words = [f"names the shard {name!r}, which is not a file inside the checkpoint directory"]
    _refused(good, tmp_path, model, command, *words, "refusing to read it")
    assert outside.is_file()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("weight_map, found", [
    (["model-00001-of-00002.safetensors"], "its weight_map is a list"),
    ({KEY: {"file": "model-00001-of-00002.safetensors"}}, f"it maps {KEY} to {{'file'"),
    ({KEY: 1}, f"it maps {KEY} to 1, not to a .safetensors file name"),
])
def test_an_index_that_is_not_a_weight_map_is_refused(good, tmp_path, command, weight_map, found):
    model, _, _ = _sharded(good, tmp_path)
    (model / INDEX).write_text(json.dumps({"weight_map": weight_map}))
    _refused(good, tmp_path, model, command, f"{model / INDEX} is not a safetensors index", found)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_shard_says_the_checkpoint_is_incomplete(good, tmp_path, command):
    model, _, _ = _sharded(good, tmp_path)
    (model / "model-00002-of-00002.safetensors").unlink()
    _refused(good, tmp_path, model, command, f"shard model-00002-of-00002.safetensors, listed in {INDEX}, is missing",
             "the checkpoint is incomplete")


# -- float8, and casts that overflow ----------------------------------------------------------------

def _fp8(good, tmp_path, nan: bool = False):
    model = tmp_path / "fp8"
    shutil.copytree(good / "model", model)

    def edit(sd):
        for k, v in list(sd.items()):
            if v.is_floating_point():
                sd[k] = v.to(torch.float8_e4m3fn)
        if nan:
            sd[KEY] = sd[KEY].clone()
            sd[KEY].view(torch.uint8)[:3] = 0x7F  # float8_e4m3fn's NaN
    rewrite_weights(model, edit)
    return model


@pytest.mark.parametrize("command", COMMANDS)
def test_float8_weights_are_read(good, tmp_path, command):
    model = _fp8(good, tmp_path)
    out = tmp_path / "out"
    result = invoke(*_commands(good, model, out)[command])
    assert result.exit_code == 0 and no_traceback(result), result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_float8_nan_is_named(good, tmp_path, command):
    model = _fp8(good, tmp_path, nan=True)
    _refused(good, tmp_path, model, command, "has NaN or infinite weights: model.layers.0.mixer.D (3 values)")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_float16_overflow_names_the_tensor_and_the_dtype_to_use(good, tmp_path, command):
    model = tmp_path / "large"
    shutil.copytree(good / "model", model)

    def edit(sd):
        sd[KEY] = sd[KEY].clone()
        sd[KEY][:] = -1.5e5  # every head: whichever the plan keeps overflows
    rewrite_weights(model, edit)
    # named as the checkpoint names it (a user found transformers' name for it, which the file does not hold)
    text = _refused(good, tmp_path, model, command, f"{KEY} does not fit in float16",
                    "largest |value| is 150000", "Use --dtype bfloat16", extra=["--dtype", "float16"])
    assert "corrupt" not in text


def test_a_config_that_says_float16_blames_the_cast_too(good, tmp_path):
    """`--dtype auto` loads in the config's dtype: a float16 config over larger float32 weights."""
    model = tmp_path / "large"
    shutil.copytree(good / "model", model)
    rewrite_weights(model, lambda sd: sd.update({KEY: torch.full_like(sd[KEY], 1e6)}))
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(dict(config, dtype="float16", torch_dtype="float16")))
    _refused(good, tmp_path, model, "prune --in-memory", f"{KEY} does not fit in float16",
             "largest |value| is 1e+06")


def test_a_float16_cast_that_fits_is_written(good, tmp_path):
    out = tmp_path / "out"
    result = invoke(*_commands(good, good / "model", out)["prune"], "--dtype", "float16")
    assert result.exit_code == 0, result.output
    assert {t.dtype for t in load_file(str(out / "model.safetensors")).values()} == {torch.float16}


# -- Hub snapshots and local directories that shadow an id ------------------------------------------



def _snapshot(cache, source, drop=(), partial=()):
    """`source` laid out as huggingface_hub caches it (files in blobs/, links in the snapshot), less the
    files in `drop`; each of `partial` left as an unfinished `.incomplete` blob."""
    base = cache / "models--org--name"
    snap = base / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (base / "blobs").mkdir()
    for i, p in enumerate(sorted(source.iterdir())):
        blob = base / "blobs" / f"{i:040x}"
        if p.name in partial:
            shutil.copy(p, f"{blob}.incomplete")
            continue
        if p.name in drop:
            continue
        shutil.copy(p, blob)
        os.symlink(os.path.relpath(blob, snap), snap / p.name)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text("0" * 40)
    return snap


@pytest.mark.parametrize("command", COMMANDS)
def test_a_half_downloaded_snapshot_says_download_it_again(good, tmp_path, hub_cache, command):
    model, _, _ = _sharded(good, tmp_path)
    _snapshot(hub_cache, model, partial=("model-00002-of-00002.safetensors",))
    out = tmp_path / "out"
    result = invoke(*_commands(good, "org/name", out)[command])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and no_traceback(result), result.output
    for word in ["the Hub download of org/name is incomplete", "model-00002-of-00002.safetensors",
                 "never finished", "Download it again (`hf download org/name`)"]:
        assert word in text, (word, text)
    assert not out.exists()


def test_a_snapshot_with_its_index_but_no_shards_says_download_it_again(good, tmp_path, hub_cache):
    model, _, _ = _sharded(good, tmp_path)
    _snapshot(hub_cache, model, drop=("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"))
    result = invoke(*_commands(good, "org/name", tmp_path / "out")["prune"])
    assert result.exit_code == 2 and no_traceback(result), result.output
    assert "incomplete" in result.output and "hf download org/name" in " ".join(result.output.split())


def test_a_snapshot_links_into_its_blobs(good, tmp_path, hub_cache):
    model, _, _ = _sharded(good, tmp_path)
    _snapshot(hub_cache, model)
    result = invoke(*_commands(good, "org/name", tmp_path / "out")["prune"])
    assert result.exit_code == 0, result.output


def test_a_local_directory_that_shadows_a_hub_id_is_named(good, tmp_path, hub_cache, monkeypatch):
    shutil.copytree(good / "model", tmp_path / "org" / "name")
    monkeypatch.chdir(tmp_path)
    result = invoke(*_commands(good, "org/name", tmp_path / "out")["prune"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"org/name is the local directory {tmp_path / 'org' / 'name'}, not the Hub repository org/name" in text
    assert "write ./org/name" in text


def test_a_layout_streaming_cannot_follow_is_refused_with_the_remedy(good, tmp_path, monkeypatch):
    """A checkpoint whose tensors transformers converts on load in a way the streaming prune cannot cut
    piece by piece (e.g. experts transposed on load) is a refusal of the input, exit 2 with the remedy,
    not a crash (two developers found it exiting 1 with a traceback)."""
    from hybridprune.checkpoint.keymap import KeyMap

    monkeypatch.setattr(KeyMap, "sliceable", lambda self, key: not key.endswith("mixer.D"))
    out = tmp_path / "out"
    result = invoke(*_commands(good, good / "model", out)["prune"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and no_traceback(result), result.output
    assert "are converted by transformers on load in a way streaming prune cannot slice" in text
    assert "hybridprune prune --in-memory" in text and not out.exists()
