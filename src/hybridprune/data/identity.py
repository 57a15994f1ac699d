"""What a tokenization is: the tokenizer's identity, the plan (sources with fingerprints, tokenizer,
options) a token directory records, and what differs between two of them, in words (for refusals
that say what really changed: the data, the tokenizer or only its chat template)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hybridprune.data import shards, stream


def tokenizer_identity(tokenizer: Any) -> dict:
    """Name, size, EOS, a hash of the tokenizer's definition (fast tokenizers: its JSON) and of its chat
    template, and `hash` of both."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = (backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))).encode()
    template = str(getattr(tokenizer, "chat_template", None) or "").encode()
    return {"name": str(getattr(tokenizer, "name_or_path", type(tokenizer).__name__)), "vocab_size": len(tokenizer),
            "eos_token_id": getattr(tokenizer, "eos_token_id", None),
            "hash": hashlib.sha256(definition + template).hexdigest()[:16],
            "definition": hashlib.sha256(definition).hexdigest()[:16],
            "chat_template": hashlib.sha256(template).hexdigest()[:16] if template else None}


def tokenizer_change(recorded: dict, current: dict, *, chat: bool) -> str | None:
    """What differs, in words, between the tokenizer a token directory was written with (`recorded`)
    and `current`; None when the tokens would be the same (the chat template counts for chat data
    only)."""
    name = recorded.get("name")
    if not recorded.get("definition"):  # written before the two were recorded apart
        return None if recorded.get("hash") == current.get("hash") else f"another tokenizer or chat template ({name})"
    if recorded["definition"] != current.get("definition"):
        return f"another tokenizer ({name})"
    if chat and recorded.get("chat_template") != current.get("chat_template"):
        if not current.get("chat_template"):
            return f"the same tokenizer's chat template ({name}), which the tokenizer given now lacks"
        if not recorded.get("chat_template"):
            return "a tokenizer without the chat template the tokenizer given now has (the same vocabulary)"
        return f"the same tokenizer ({name}) but another chat template"
    return None


def plan(data: str, tokenizer: Any, *, text_field: str = "text", chat: bool = False) -> dict:
    """What a tokenization of `data` is: sources with weights and fingerprints, tokenizer, options."""
    mix = stream.parse_mixture(data)
    srcs = [{"source": s, "weight": w, "fingerprint": stream.fingerprint(s)} for s, w in mix]
    p = {"format": shards.FORMAT, "data": data, "sources": srcs, "tokenizer": tokenizer_identity(tokenizer),
         "text_field": text_field, "chat": bool(chat)}
    p["id"] = hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest()[:16]
    return p


def plan_change(recorded: dict, now: dict) -> list[str]:
    """What makes a token directory's tokens (`recorded`, its manifest) other than `now`'s plan would
    write, in words; empty when they are the same tokens."""
    out = []
    if [s["source"] for s in recorded.get("sources", [])] != [s["source"] for s in now["sources"]]:
        out.append(f"other data ({recorded.get('data')!r}, not {now['data']!r})")
    elif [s["weight"] for s in recorded.get("sources", [])] != [s["weight"] for s in now["sources"]]:
        out.append(f"other mixture weights ({recorded.get('data')!r}, not {now['data']!r})")
    else:
        changed = [s["source"] for s, r in zip(now["sources"], recorded["sources"]) if s["fingerprint"] != r.get("fingerprint")]
        if changed:
            out.append(f"an earlier version of {', '.join(changed)} (changed since: size, time or content)")
    if recorded.get("text_field") != now["text_field"]:
        out.append(f"another --text-field ({recorded.get('text_field')!r}, not {now['text_field']!r})")
    if bool(recorded.get("chat")) != now["chat"]:
        out.append("chat data (--chat)" if recorded.get("chat") else "plain text (without --chat)")
    tok = tokenizer_change(recorded.get("tokenizer", {}), now["tokenizer"], chat=now["chat"] and bool(recorded.get("chat")))
    if tok:
        out.append(tok)
    return out
