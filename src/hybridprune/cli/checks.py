"""Checks of the command line that need more than one option's rule (those are in
`hybridprune.options`, shared with the recipes): lists and texts that must name something, data
paths that must exist. Options that only mean something on some models are checked by the stages
(`hybridprune.stages.checks`)."""

from __future__ import annotations

from ..options import NOT_BLANK
from .common import CliError


def listed(flag: str, text: str, example: str) -> list[str]:
    """The items of a comma-separated option; one that names none (`,`, `""`, `" , "`) is refused
    rather than read as "nothing", which would silently drop what the user asked for."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise CliError(f"{flag} {text!r} names nothing; give at least one, e.g. {flag} {example}")
    return items


def check_not_blank(*options: tuple[str, str | None, str]) -> None:
    """Each `(flag, value, example)`: a text option given as empty or spaces is refused."""
    for flag, value, example in options:
        if value is not None and NOT_BLANK.problem(flag, str(value)):
            raise CliError(f"{flag} is empty; give a value, e.g. {flag} {example}")


def check_data_path(flag: str, spec: str | None) -> None:
    """A `--data` naming local files that do not exist is refused before anything heavy is imported.

    Only what is plainly a path is judged here (it starts with `.`, `/` or `~`, or has a data file's
    suffix, and is no glob): a bare name may be the shipped corpus or a Hub dataset, which the readers
    resolve. Each source of a mixture (`a.jsonl:0.7,b.jsonl:0.3`) is checked the same way."""
    if spec is None:
        return
    from pathlib import Path

    from ..data.errors import DataError
    from ..data.sources import SUPPORTED_SUFFIXES, check_readable
    from ..data.stream import parse_mixture

    try:
        sources = [src for src, _ in parse_mixture(str(spec))]
        for src in sources:
            path = Path(src).expanduser()
            if any(c in src for c in "*?["):
                continue  # a glob: its matches are checked where they are read
            if path.exists():
                check_readable(path)  # a FIFO, socket or device would block
            elif src.startswith((".", "/", "~")) or "".join(path.suffixes[-2:]).lower() in SUPPORTED_SUFFIXES \
                    or path.suffix.lower() in SUPPORTED_SUFFIXES:
                raise CliError(f"{flag}: data file not found: '{path}'; check the path (supported: "
                               f"{', '.join(SUPPORTED_SUFFIXES)})")
    except DataError as exc:
        raise CliError(str(exc)) from None
