"""What a stage reads, and how: the model, the text it measures on, and the shared loading options.

A command builds one from its `--model`/`--data`/`--seed`/`--dtype`/`--device`/`--trust-remote-code`
flags; a recipe from its top-level keys, with the run's cache of loaded models and samples behind
the same three methods (`recipe.stages.RecipeSource`). The stage entry functions only call these
methods, so both doors load the same model the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Source:
    model: Path
    data: str = "shakespeare"
    text_field: str = "text"
    seed: int = 0
    dtype: str = "auto"
    device: str | None = None
    trust_remote_code: bool = False
    _tokenizer: Any = field(default=None, init=False, repr=False, compare=False)

    def config(self):
        from ..checkpoint.load import load_config

        return load_config(self.model, trust_remote_code=self.trust_remote_code)

    def load(self):
        """The model, through the one load path (`dtype: auto` is bfloat16 on a GPU)."""
        from ..checkpoint.load import load_model

        return load_model(self.model, dtype=self.dtype, device=self.device or "auto",
                          trust_remote_code=self.trust_remote_code)

    def tokenizer(self):
        from ..checkpoint.load import load_tokenizer

        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model, trust_remote_code=self.trust_remote_code)
        return self._tokenizer

    def samples(self, split: str, seq_len: int, n: int | None, vocab_size: int):
        """`n` windows of `seq_len` tokens of the data's `split` (None: all), seeded by `seed`."""
        from ..data import load_token_samples

        return load_token_samples(self.data, self.tokenizer(), seq_len=seq_len, num_samples=n, split=split,
                                  seed=self.seed, text_field=self.text_field, model_vocab_size=vocab_size)
