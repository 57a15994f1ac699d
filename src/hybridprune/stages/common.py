"""What the stages share: where their lines go (`Voice`), how they get models and data (`Loader`, with
`LoadSettings` for the stages whose settings hold no loading options), the memory forecast said then
checked, and the settings every stage of a recipe inherits.

Torch-free at import: the command line reads the settings before anything heavy is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: settings a recipe gives once, at its top level, for every stage whose section does not set them
INHERITED = ("seed", "dtype", "device", "text_field")


def _silent(text: str) -> None:
    return None


@dataclass(frozen=True)
class Voice:
    """Where a stage's lines go while it runs: `note` a side remark (the memory forecast, progress),
    `warn` a warning, `console` the stage's own output as printed (rich markup: its tables, the
    search's and the trainer's progress; `say`). The command line prints them; the Python API is
    silent unless it is given one."""

    note: Callable[[str], None] = _silent
    warn: Callable[[str], None] = _silent
    console: Any = None

    def say(self, *args, **kwargs) -> None:
        """A line of the stage's own output on `console` (nothing without one)."""
        if self.console is not None:
            self.console.print(*args, **kwargs)


SILENT = Voice()


def console_voice(console, alerts=None) -> Voice:
    """A Voice printing on a rich `console`: notes dim, warnings (on `alerts`, else the console) in
    yellow; the texts are escaped, so a path with brackets prints as it is."""
    from rich.markup import escape

    warnings = alerts or console
    return Voice(note=lambda text: console.print(f"[dim]{escape(text)}[/]", highlight=False),
                 warn=lambda text: warnings.print(f"[yellow]warning:[/] {escape(text)}", soft_wrap=True,
                                                  highlight=False),
                 console=console)


def say_forecast(voice: Voice, forecast, *, force: bool, lower: str, spread: bool = False) -> None:
    """Say the memory forecast; refuse (MemoryForecastError) when it clearly exceeds the device, unless
    `force`, or the model is spread over devices (`spread`: a device map places it)."""
    voice.note(forecast.describe())
    if not spread:
        forecast.check(force=force, lower=lower)


@dataclass(kw_only=True)
class LoadSettings:
    """The loading options: the flags the commands share (declared once in `cli/shared.py`), here once.
    Calibrate's and eval's settings hold them; search and distill, whose settings hold none, are given
    one (the command's flags, a recipe's top-level keys). A recipe's top-level `seed`, `dtype`, `device`
    and `text_field` fill a section's where it does not set them."""

    text_field: str = "text"
    seed: int = 0
    device: str = "auto"
    device_map: str | None = None
    dtype: str = "auto"
    force: bool = False
    trust_remote_code: bool = False


class Loader:
    """How every stage gets its models, tokenizers and token windows: through the one load path, with
    the options of `s` (a stage's settings or a `LoadSettings`). This one loads afresh (a command, the
    Python API); a recipe's run keeps what it loaded for its later stages (`recipe.stages.SharedLoader`).

    `keep=False` asks for a private copy of exactly `path` that is not shared: distillation trains
    its models in its own precision and tokenizes with the student's own tokenizer."""

    def model(self, path: str | Path, s, *, role: str = "checkpoint", whole: bool = False, keep: bool = True):
        """The model at `path`, loaded as `s` says (dtype, device, device map, remote code)."""
        from ..checkpoint.load import load_model

        return load_model(path, dtype=s.dtype, device=s.device or "auto", role=role, whole=whole,
                          trust_remote_code=s.trust_remote_code, device_map=getattr(s, "device_map", None))

    def tokenizer(self, path: str | Path, s, *, role: str = "checkpoint", keep: bool = True):
        from ..checkpoint.load import load_tokenizer

        return load_tokenizer(path, trust_remote_code=s.trust_remote_code, role=role)

    def samples(self, data: str, tokenizer, *, split: str, seq_len: int, n: int | None, seed: int,
                text_field: str, vocab: int) -> Any:
        from ..data import load_token_samples

        return load_token_samples(data, tokenizer, seq_len=seq_len, num_samples=n, split=split, seed=seed,
                                  text_field=text_field, model_vocab_size=vocab)
