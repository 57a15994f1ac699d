"""Hub ids resolve through huggingface_hub's cache, offline, laid out as huggingface_hub lays it out."""

from __future__ import annotations

import pytest

from hybridprune.checkpoint.hub import CheckpointNotFound, parse_hub_id, resolve_checkpoint

REV = "0123456789abcdef0123456789abcdef01234567"


def fake_cache(root, repo="org/name", files=("config.json", "model.safetensors"), tag="main"):
    """`models--org--name/snapshots/<rev>/...` and `refs/<tag>`, as huggingface_hub writes them."""
    base = root / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / REV
    snap.mkdir(parents=True)
    for name in files:
        (snap / name).write_text("{}")
    (base / "refs").mkdir()
    (base / "refs" / tag).write_text(REV)
    return snap




@pytest.mark.parametrize("spec, expected", [
    ("org/name", ("org/name", None)),
    ("nvidia/Nemotron-H-8B-Base-8K", ("nvidia/Nemotron-H-8B-Base-8K", None)),
    ("org/name@v1.0", ("org/name", "v1.0")),
    ("org/name@" + REV, ("org/name", REV)),
    ("just-a-name", None),
    ("a/b/c", None),
    ("org/name@", None),
])
def test_parse_hub_id(spec, expected):
    assert parse_hub_id(spec) == expected


def test_a_local_directory_wins(tmp_path, hub_cache):
    d = tmp_path / "org" / "name"
    d.mkdir(parents=True)
    assert resolve_checkpoint(str(d)) == d


def test_an_id_resolves_from_the_offline_cache(hub_cache):
    snap = fake_cache(hub_cache)
    assert resolve_checkpoint("org/name") == snap
    assert resolve_checkpoint(f"org/name@{REV}") == snap


def test_an_id_at_a_tag(hub_cache):
    snap = fake_cache(hub_cache, tag="v2")
    assert resolve_checkpoint("org/name@v2") == snap


def test_a_missing_id_offline_says_what_to_do(hub_cache):
    with pytest.raises(CheckpointNotFound) as err:
        resolve_checkpoint("org/missing", what="--model")
    msg = str(err.value)
    assert msg.startswith("--model org/missing: not in the local Hugging Face cache")
    assert "hf download org/missing" in msg


def test_a_repository_without_safetensors_is_refused(hub_cache):
    fake_cache(hub_cache, files=("config.json", "pytorch_model.bin"))
    with pytest.raises(CheckpointNotFound, match="has no safetensors weights, and hybridprune never loads pickled"):
        resolve_checkpoint("org/name")


def test_a_missing_path_is_not_taken_for_an_id(tmp_path, hub_cache):
    with pytest.raises(CheckpointNotFound, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "nope"))
    with pytest.raises(CheckpointNotFound, match="does not exist"):
        resolve_checkpoint("./org/name")


def test_commands_take_a_hub_id_from_the_offline_cache(hub_cache, tmp_path, tokens):
    """prune and eval given `org/name`: the checkpoint comes from huggingface_hub's cache layout."""
    from typer.testing import CliRunner

    from conftest import build, tiny_nemotron_config
    from hybridprune.cli import app
    from hybridprune.importance.calibrate import calibrate

    model = build(tiny_nemotron_config())
    snap = fake_cache(hub_cache, files=())
    model.save_pretrained(snap)
    calibrate(model, tokens, batch_size=2, progress=False, depth_samples=2).save(tmp_path / "scores")
    result = CliRunner().invoke(app, ["prune", "--model", f"org/name@{REV}", "--scores", str(tmp_path / "scores"),
                                      "--plan", "mamba_num_heads=6", "--out", str(tmp_path / "pruned")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pruned" / "config.json").is_file()
    result = CliRunner().invoke(app, ["prune", "--model", "org/missing", "--scores", str(tmp_path / "scores"),
                                      "--plan", "mamba_num_heads=6", "--out", str(tmp_path / "other")])
    assert result.exit_code == 2 and "org/missing: not in the local Hugging Face cache" in result.output
    assert not (tmp_path / "other").exists()
