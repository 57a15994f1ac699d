"""Every numeric option is checked where it enters, and the refusal names the flag and what is
allowed; nothing is loaded or written before."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from clean_errors import assert_refused
from hybridprune.cli import app

runner = CliRunner()
RANGE = "Invalid value for '{flag}': Input should be greater than or equal to {low}"


def _search(*extra):
    return ["search", "--model", "{model}", "--data", "shakespeare", "--out", "{out}", "--params", "0.5x", *extra]


def _distill(*extra):
    return ["distill", "--teacher", "{model}", "--student", "{model}", "--data", "shakespeare", "--out", "{out}",
            "--steps", "2", *extra]


CASES = [
    # search: the short distillation (once a KeyError and a message about an option never given)
    (_search("--kd-steps", "0"), [RANGE.format(flag="--kd-steps", low=1)]),
    (_search("--kd-steps", "-3"), [RANGE.format(flag="--kd-steps", low=1)]),
    (_search("--kd-tokens", "0"), ["--kd-tokens must be a positive number, got 0.0"]),
    (_search("--kd-tokens", "nan"), ["--kd-tokens must be a positive number, got nan"]),
    (_search("--kd-steps", "2", "--kd-batch", "0"), [RANGE.format(flag="--kd-batch", low=1)]),
    (_search("--kd-steps", "2", "--kd-batch", "8", "--kd-micro-batch", "3"),
     [r"--kd-batch \(8\) must be a multiple of --kd-micro-batch \(3\), e.g. 6 or 9"]),
    (_search("--kd-lr", "-1e-4"), ["--kd-lr must be a positive number, got -0.0001"]),
    (_search("--top-k", "0"), [RANGE.format(flag="--top-k", low=1)]),
    (_search("--eval-seq-len", "1"), [RANGE.format(flag="--eval-seq-len", low=2)]),
    (_search("--max-width-pruning", "1"), [r"--max-width-pruning must be a fraction in \[0, 1\), got 1.0"]),
    (_search("--max-depth-pruning", "inf"), [r"--max-depth-pruning must be a fraction in \[0, 1\), got inf"]),
    (_search("--band", "-0.1"), [r"--band must be a fraction in \[0, 1\], got -0.1"]),
    (_search("--tie-tolerance", "nan"), [r"--tie-tolerance must be a number >= 0, got nan"]),
    (_search("--tie-break", "fastest"), ["Invalid value for '--tie-break': .*'fastest' is not one of 'cost', 'speed'"]),
    (_search("--params-kind", "all"), ["Invalid value for '--params-kind': .*'all' is not one of 'total'"]),
    (_search("--tie-break", "speed", "--no-speed"), ["--tie-break speed needs the throughput measurement"]),
    (_search("--memory-mb", "nan"), ["--memory-mb must be a positive number, got nan"]),
    (_search("--seed", "-1"), [RANGE.format(flag="--seed", low=0)]),
    (_search("--max-candidates", "0"), [RANGE.format(flag="--max-candidates", low=1)]),
    # calibrate
    (["calibrate", "--model", "{model}", "--data", "shakespeare", "--out", "{out}", "--samples", "0"],
     [RANGE.format(flag="--samples", low=1)]),
    (["calibrate", "--model", "{model}", "--data", "shakespeare", "--out", "{out}", "--seq-len", "1"],
     [RANGE.format(flag="--seq-len", low=2)]),
    (["calibrate", "--model", "{model}", "--data", "shakespeare", "--out", "{out}", "--depth-samples", "-1"],
     [RANGE.format(flag="--depth-samples", low=0)]),
    # distill
    (_distill("--lr", "nan"), ["--lr must be a positive number, got nan"]),
    (_distill("--min-lr", "1", "--lr", "0.1"), [r"--min-lr \(1.0\) must not exceed --lr \(0.1\)"]),
    (_distill("--global-batch", "10", "--micro-batch", "4"),
     [r"--global-batch \(10\) must be a multiple of --micro-batch \(4\), e.g. 8 or 12"]),
    (_distill("--global-batch", "2", "--micro-batch", "4"), [r"--global-batch \(2\) must be a multiple of "
                                                             r"--micro-batch \(4\), e.g. 4; or change --micro-batch"]),
    (_distill("--temperature", "0"), ["--temperature must be a positive number, got 0.0"]),
    (_distill("--weight-decay", "-0.1"), ["--weight-decay must be a number >= 0, got -0.1"]),
    (_distill("--warmup", "-1"), [RANGE.format(flag="--warmup", low=0)]),
    (_distill("--val-samples", "-1"), [RANGE.format(flag="--val-samples", low=0)]),
    (_distill("--save-every", "0"), [RANGE.format(flag="--save-every", low=1)]),
    (_distill("--precision", "fp16"), ["Invalid value for '--precision': .*'fp16' is not one of 'auto', 'fp32', 'bf16'"]),
    # eval
    (["eval", "{model}", "--data", "shakespeare", "--batch-size", "0"], [RANGE.format(flag="--batch-size", low=1)]),
    (["eval", "{model}", "--data", "shakespeare", "--samples", "-5"], [RANGE.format(flag="--samples", low=1)]),
    # demo
    (["demo", "--out", "{out}", "--target-params", "1.5"],
     [r"--target-params must be a fraction strictly between 0 and 1, e.g. 0.5, got 1.5"]),
    (["demo", "--out", "{out}", "--target-params", "nan"], ["--target-params must be a fraction"]),
    (["demo", "--out", "{out}", "--seq-len", "1"], [RANGE.format(flag="--seq-len", low=2)]),
    (["demo", "--out", "{out}", "--kd-steps", "0"], [RANGE.format(flag="--kd-steps", low=1)]),
]


@pytest.mark.parametrize("args, messages", CASES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in CASES])
def test_bad_options_are_refused_naming_the_flag(tmp_path, args, messages):
    model, out = tmp_path / "model", tmp_path / "out"  # never reached: the options are refused first
    argv = [a.format(model=model, out=out) for a in args]
    result = runner.invoke(app, argv)
    assert_refused(result, *messages, out=out)
    assert "does not exist" not in result.output
