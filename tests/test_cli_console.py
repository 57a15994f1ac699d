"""The command line's own options: --version, -v/--quiet, tables at full width in a file, and other
libraries' progress bars and log lines kept out unless -v."""

from __future__ import annotations

import pytest

from ckpt_helpers import invoke, run_cli, save_checkpoint, small_corpus
from hybridprune import __version__


def test_version_names_ours_and_the_libraries_that_decide_loading():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.startswith(f"hybridprune {__version__} (torch ") and "transformers " in result.output


def test_verbose_and_quiet_together_are_refused():
    result = invoke("-v", "-q", "report", "nowhere")
    assert result.exit_code == 2 and "exclude each other" in result.output


def test_quiet_keeps_errors_and_drops_the_rest(tmp_path):
    model = save_checkpoint(tmp_path / "model")
    data = small_corpus(tmp_path / "corpus.jsonl")
    loud = invoke("eval", model, "--data", data, "--samples", "2", "--seq-len", "16")
    assert loud.exit_code == 0 and "memory forecast" in loud.output and "perplexity" in loud.output
    quiet = invoke("-q", "eval", model, "--data", data, "--samples", "2", "--seq-len", "16")
    assert quiet.exit_code == 0 and "memory forecast" not in quiet.output and "perplexity" not in quiet.output
    refused = invoke("-q", "eval", tmp_path / "missing", "--data", data)
    assert refused.exit_code == 2 and refused.output.startswith("error:")
    assert "perplexity" in invoke("eval", model, "--data", data, "--samples", "2", "--seq-len", "16").output


def test_a_table_written_to_a_file_keeps_every_cell(tmp_path):
    """rich gives a file 80 columns; a long checkpoint path would be cut to `…`."""
    model = save_checkpoint(tmp_path / ("a-checkpoint-with-a-rather-long-directory-name-" * 2 + "end"))
    result = invoke("eval", model, "--data", small_corpus(tmp_path / "corpus.jsonl"), "--samples", "2",
                    "--seq-len", "16")
    assert result.exit_code == 0
    assert str(model) in result.output and "…" not in result.output
    assert "memory forecast for evaluation:" in result.output.splitlines()[0]  # a line of text is not wrapped


@pytest.mark.slow
def test_lm_eval_and_datasets_noise_only_with_verbose(tmp_path):
    pytest.importorskip("lm_eval")
    model = save_checkpoint(tmp_path / "model")
    args = ["eval", model, "--tasks", "corpus_bpb", "--task-limit", "2", "--out", tmp_path / "ev"]
    plain = run_cli(args)
    assert plain.returncode == 0, plain.stderr[-2000:]
    for noise in ("Running loglikelihood requests", "it/s]", "Generating test split", "`pretrained` model kwarg"):
        assert noise not in plain.stderr, noise
    assert "corpus_bpb" in plain.stderr  # our table
    verbose = run_cli(["-v", *args[:-1], tmp_path / "ev2"])
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert "Running loglikelihood requests" in verbose.stderr
