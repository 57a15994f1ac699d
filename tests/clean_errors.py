"""Checks shared by the tests of bad input: a clean refusal is exit status 2, one message, no
traceback, and nothing written."""

from __future__ import annotations

import re
from pathlib import Path


def assert_refused(result, *patterns: str, out: Path | None = None, untouched: dict[Path, bytes] | None = None):
    """`result` (a typer CliRunner result) is a clean refusal whose output matches every pattern."""
    output = " ".join(result.output.replace("│", " ").split())  # rich may wrap long messages in a box
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    for pattern in patterns:
        assert re.search(pattern, output), (pattern, output)
    if out is not None:
        assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())
    for path, data in (untouched or {}).items():
        assert path.read_bytes() == data, path
