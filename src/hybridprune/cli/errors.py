"""The command line's one error kind, apart so that every cli module can raise it without importing
`common` (which itself uses `devices`)."""

from __future__ import annotations


class CliError(Exception):
    """An error to show the user as one message, without a traceback."""
