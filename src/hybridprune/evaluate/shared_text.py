"""One evaluation text, tokenized by each model's own tokenizer, so bits per byte compare across tokenizers.

The windows are chosen once, with the first model's tokenizer (`load_token_samples`), and turned back
into text: each window becomes its document pieces (split where it holds the EOS between documents).
Every model then tokenizes that same text with its own tokenizer: its start token (EOS, else BOS),
then each piece, with its own EOS between documents. Every byte of the text is predicted, so

    bits per byte = sum of cross-entropy (nats) / (ln 2 * UTF-8 bytes of the pieces)

has one denominator for every model. Loss and perplexity are per token of a model's own tokenizer, so
they compare only between models whose tokenizers are the same (`tokenizer_groups`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..data.batches import TokenSamples
from ..data.errors import DataError


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A digest of what maps text to ids: the whole fast tokenizer (model, normalizer, pre-tokenizer),
    else the vocabulary and special tokens. Equal digests tokenize every text to the same ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        text = backend.to_str()
    else:
        text = json.dumps(sorted(tokenizer.get_vocab().items()))
    specials = [getattr(tokenizer, a, None) for a in ("bos_token_id", "eos_token_id")]
    return hashlib.sha256(f"{type(tokenizer).__name__}\n{specials}\n{text}".encode()).hexdigest()


def tokenizer_groups(tokenizers: Mapping[str, Any]) -> dict[str, str]:
    """`{model name: label}`: models with the same tokenizer share a label, "A" for the first model's."""
    labels: dict[str, str] = {}
    names: dict[str, str] = {}
    for name, tok in tokenizers.items():
        digest = tokenizer_fingerprint(tok)
        if digest not in labels:
            labels[digest] = _label(len(labels))
        names[name] = labels[digest]
    return names


def _label(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"T{i + 1}"


@dataclass(frozen=True)
class SharedText:
    """The evaluated text: per window, its document pieces (a document boundary between consecutive pieces)."""

    windows: tuple[tuple[str, ...], ...]

    @property
    def num_bytes(self) -> int:
        return sum(len(p.encode("utf-8")) for w in self.windows for p in w)

    @classmethod
    def from_samples(cls, samples: TokenSamples | torch.Tensor, tokenizer: Any) -> SharedText:
        """The text of each window of `samples` (tokens of `tokenizer`), cut at its special tokens."""
        if isinstance(samples, torch.Tensor):
            ids_all, masks = samples, torch.ones_like(samples)
        else:
            ids_all, masks = samples.input_ids, samples.attention_mask
        special = set(getattr(tokenizer, "all_special_ids", None) or [])
        windows = []
        for ids, mask in zip(ids_all, masks):
            runs: list[list[int]] = [[]]
            for t in ids[mask > 0].tolist():
                if t in special:
                    runs.append([])
                else:
                    runs[-1].append(t)
            if len(runs) > 1 and not runs[0]:  # the window starts at a document boundary: the start token marks it
                runs = runs[1:]
            windows.append(tuple(tokenizer.decode(r, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                                 for r in runs))
        return cls(tuple(windows))

    def tokenize(self, tokenizer: Any, *, model_vocab_size: int | None = None,
                 model: str = "the model") -> TokenSamples:
        """Each window as `tokenizer`'s ids: start token, then the pieces with EOS between them; right-padded."""
        eos = getattr(tokenizer, "eos_token_id", None)
        start = eos if eos is not None else getattr(tokenizer, "bos_token_id", None)
        if start is None:
            raise DataError(f"the tokenizer of {model} has neither an EOS nor a BOS token to start a window with; "
                            "bits per byte needs one (set eos_token in its tokenizer_config.json)")
        flat = [p for w in self.windows for p in w]
        encoded = tokenizer(flat, add_special_tokens=False, verbose=False)["input_ids"] if flat else []
        rows: list[list[int]] = []
        k = 0
        for w in self.windows:
            row = [start]
            for i in range(len(w)):
                if i > 0 and eos is not None:
                    row.append(eos)
                row.extend(encoded[k])
                k += 1
            rows.append(row)
        width = max(len(r) for r in rows)
        top = max(max(r) for r in rows)
        if model_vocab_size is not None and top >= model_vocab_size:
            raise DataError(f"the tokenizer of {model} produced token id {top}, but its vocabulary has only "
                            f"{model_vocab_size} entries; use the tokenizer that was saved with the model")
        pad = getattr(tokenizer, "pad_token_id", None)
        pad = start if pad is None else pad
        ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return TokenSamples(ids, mask, {"tokenizer": getattr(tokenizer, "name_or_path", type(tokenizer).__name__)})


def per_model_samples(samples, tokenizers: Mapping[str, Any], vocab_sizes: Mapping[str, int | None],
                      names: Sequence[str]) -> tuple[dict[str, TokenSamples], dict[str, str], int]:
    """`samples` (first model's tokens) as each model's own tokens of the same text; returns
    `({name: samples}, {name: tokenizer label}, UTF-8 bytes of the text)`."""
    text = SharedText.from_samples(samples, tokenizers[names[0]])
    labels = tokenizer_groups({n: tokenizers[n] for n in names})
    by_label: dict[str, TokenSamples] = {}
    out: dict[str, TokenSamples] = {}
    for name in names:
        label = labels[name]
        if label not in by_label:
            by_label[label] = text.tokenize(tokenizers[name], model_vocab_size=vocab_sizes.get(name), model=name)
        elif vocab_sizes.get(name) is not None and int(by_label[label].input_ids.max()) >= vocab_sizes[name]:
            raise DataError(f"{name} has a smaller vocabulary ({vocab_sizes[name]}) than its tokenizer's ids; "
                            "use the tokenizer that was saved with the model")
        out[name] = by_label[label]
    n_bytes = text.num_bytes
    if n_bytes == 0:
        raise DataError("the evaluation windows decode to no text, so bits per byte is undefined")
    return out, labels, n_bytes


def own_tokens(samples, tokenizer, model_vocab_size: int | None = None) -> tuple[TokenSamples, int]:
    """One model's tokens of the text of `samples` and the text's UTF-8 bytes: its loss and bits per
    byte then match what `compare_models` reports for it (`evaluate_loss(model, tokens, num_bytes=...)`)."""
    text = SharedText.from_samples(samples, tokenizer)
    return text.tokenize(tokenizer, model_vocab_size=model_vocab_size), text.num_bytes
