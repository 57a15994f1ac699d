"""The command line's console and its volume: `-v/--verbose`, `-q/--quiet`, and other libraries' noise.

Every command prints through `console` (stderr, so that stdout stays free for pipes). Written to a
file or a pipe, a table keeps its natural width instead of rich's 80 columns, where cells would be cut
to `…`: a log of a run must hold every column. `-q` leaves only warnings and errors (`alerts`, never
quiet); without `-v`, lm-eval's and datasets' progress bars and log lines are kept off the console.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
import warnings

from rich.console import Console, Group
from rich.measure import Measurement
from rich.table import Table

#: libraries whose progress bars, INFO lines and Python warnings are noise in our output (without -v)
NOISY_LOGGERS = ("lm_eval", "lm-eval", "datasets", "evaluate", "sqlitedict")
NOISY_MODULES = r"(lm_eval|datasets|evaluate|sqlitedict|pytablewriter)(\.|$)"


class CliConsole(Console):
    """A console that never cuts a table when it is not a terminal, nor wraps a line of text."""

    def print(self, *objects, **kwargs):  # noqa: A003 - rich's name
        wide = [o for o in objects if isinstance(o, (Table, Group))]
        if self.is_terminal or "width" in kwargs:
            return super().print(*objects, **kwargs)
        if not wide:
            if all(isinstance(o, str) for o in objects):
                kwargs.setdefault("soft_wrap", True)
            return super().print(*objects, **kwargs)
        options = self.options.update(width=10_000)
        natural = max(Measurement.get(self, options, o).maximum for o in wide)
        kept = self._width  # print(width=) is capped at the console's width, so widen the console
        self.width = max(self.width, natural)
        try:
            super().print(*objects, **kwargs)
        finally:
            self._width = kept


console = CliConsole(stderr=True)
#: warnings and errors: shown under --quiet too
alerts = CliConsole(stderr=True)


def set_volume(*, verbose: bool = False, quiet: bool = False):
    """Apply `-v`/`-q` for one command; returns the function that undoes it (the command line calls it
    when the command ends, so that a process running several commands, a test, starts each afresh)."""
    console.quiet = quiet
    if verbose:
        return lambda: None
    # transformers' "Loading weights" bar stays on a terminal (minutes for a large model)
    return quiet_third_party(transformers_bars=quiet or not console.is_terminal)


def quiet_third_party(*, transformers_bars: bool = False):
    """Progress bars and log lines of lm-eval and datasets off; their Python warnings hidden.

    The environment carries it into libraries not yet imported (datasets reads its variables on import)
    and into the lm-eval harness, which hides its bars when `TQDM_DISABLE` is set (evaluate.harness).
    Returns the function that puts everything back."""
    env = {"TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "DATASETS_VERBOSITY": "error"}
    saved_env = {k: os.environ.get(k) for k in env}
    for key, value in env.items():
        os.environ.setdefault(key, value)
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    caught = warnings.catch_warnings()  # restores the filters on exit
    caught.__enter__()
    warnings.filterwarnings("ignore", module=NOISY_MODULES)
    undo = []
    if "datasets" in sys.modules:  # imported already: its variables were read
        import datasets

        bars, level = datasets.is_progress_bar_enabled(), datasets.logging.get_verbosity()
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
        # (datasets refuses to turn its bars back on where its variable was set when it was imported)
        undo.append(lambda: (datasets.enable_progress_bars()
                             if bars and not datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS else None,
                             datasets.logging.set_verbosity(level)))
    if transformers_bars:
        undo.append(_transformers_bars_off())

    def restore() -> None:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        caught.__exit__(None, None, None)
        for step in undo:
            step()

    return restore


#: where transformers keeps its progress-bar switch
HF_LOGGING = "transformers.utils.logging"


def _transformers_bars_off():
    """transformers' progress bars off: now if it is imported, else the moment it is (importing it here
    would cost seconds to commands that never load a model, and to every `--help`). Returns the undo."""
    state: dict[str, bool] = {}

    def off(hf_logging) -> None:
        state["bars"] = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()

    waiting = None
    if HF_LOGGING in sys.modules:
        off(sys.modules[HF_LOGGING])
    else:
        waiting = _OnImport(HF_LOGGING, off)
        sys.meta_path.insert(0, waiting)

    def undo() -> None:
        if waiting in sys.meta_path:
            sys.meta_path.remove(waiting)
        if state.get("bars"):
            sys.modules[HF_LOGGING].enable_progress_bar()

    return undo


class _OnImport(importlib.abc.MetaPathFinder):
    """Calls `then(module)` once module `name` has been imported for the first time."""

    def __init__(self, name: str, then) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once; the finders after it find the module
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def execute_then(module) -> None:
            execute(module)
            self.then(module)

        spec.loader.exec_module = execute_then
        return spec
