"""The one exception the data layer raises for bad input."""

from __future__ import annotations


class DataError(ValueError):
    """Bad data input: the message says what is wrong and what to do about it."""
