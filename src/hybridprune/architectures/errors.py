"""The error an adapter raises for dimensions its config cannot write (imported by `base` and `moe`,
which build on each other's work only through it: no import circle)."""

from __future__ import annotations


class Unrepresentable(ValueError):
    """The target dimensions cannot be written as a config of this architecture."""
