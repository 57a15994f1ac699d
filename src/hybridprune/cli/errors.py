"""The command line's one error kind, apart so that every cli module can raise it without importing
`common`."""

from __future__ import annotations

from ..options import SettingError


class CliError(SettingError):
    """An error to show the user as one message, without a traceback."""
