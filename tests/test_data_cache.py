"""Reading local data files leaves nothing in the user's Hugging Face datasets cache (no Arrow copy,
no lock file): the commands write only where the user pointed them."""

from __future__ import annotations

from pathlib import Path

import pytest
from ckpt_helpers import invoke, save_checkpoint, small_corpus

from hybridprune.data import tokenizer_path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty HF home and datasets cache; `datasets.config` reads the variables at import, so its
    paths are pointed there too."""
    import datasets.config

    home = tmp_path / "hf-home"
    cache = home / "datasets"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_CACHE_HOME", str(home))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_MODULES_CACHE", home / "modules")
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", cache / "downloads")
    monkeypatch.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", cache / "downloads" / "extracted")
    return home


def _text_file(path: Path) -> Path:
    """Blank-line separated paragraphs, enough for a calibration part."""
    words = "the king speaks of love and war while the fool laughs at night under a cold moon".split()
    paras = [" ".join(words[(i * 5 + j) % len(words)] for j in range(20 + i % 7)) + f" {i}." for i in range(200)]
    path.write_text("\n\n".join(paras) + "\n")
    return path


@pytest.mark.parametrize("kind", ["jsonl", "txt"])
def test_tokenize_and_calibrate_write_nothing_to_the_datasets_cache(kind, cache, tmp_path):
    data = small_corpus(tmp_path / "corpus.jsonl") if kind == "jsonl" else _text_file(tmp_path / "corpus.txt")
    model = save_checkpoint(tmp_path / "model")

    r = invoke("tokenize", "--data", data, "--tokenizer", tokenizer_path(), "--out", tmp_path / "tok")
    assert r.exit_code == 0, r.output
    r = invoke("calibrate", "--model", model, "--data", data, "--samples", "2", "--seq-len", "16",
               "--depth-samples", "0", "--out", tmp_path / "scores")
    assert r.exit_code == 0, r.output

    assert sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) == ["datasets"]
