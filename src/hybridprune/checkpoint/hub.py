"""Where a checkpoint lives: a local directory, or a Hugging Face Hub id `org/name[@revision]`.

Ids resolve through `huggingface_hub.snapshot_download`, so its cache, `HF_HUB_OFFLINE`, `HF_HOME`
and tokens from the usual places (`HF_TOKEN`, `hf auth login`) all apply. Only what hybridprune reads
is fetched: safetensors weights and their index, JSON configs, tokenizer and chat-template files, and
the `auto_map` code files (copied into exports, never executed unless the user trusts remote code).
Pickled weights (`*.bin`, `*.pt`) are never downloaded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Files fetched for an id: everything the load path, the tokenizer and the export carry-over read.
ALLOW_PATTERNS = (
    "*.safetensors", "*.safetensors.index.json", "*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken",
    "*.py", "*.md", "LICENSE*",
)

# `org/name` or `org/name@revision`; Hub names are letters, digits, '-', '_' and '.'.
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")


class CheckpointNotFound(FileNotFoundError):
    """Neither a local checkpoint directory nor a Hub id that can be resolved."""


def parse_hub_id(spec: str) -> tuple[str, str | None] | None:
    """`("org/name", revision or None)` if `spec` reads as a Hub id, else None."""
    m = _HUB_ID.match(spec.strip())
    if m is None or m.group("repo").endswith((".", "/")):
        return None
    return m.group("repo"), m.group("revision")


def note_shadowed(text: str, path: Path) -> None:
    """Warn when a reference that reads as a Hub id names an existing local directory, which wins."""
    if parse_hub_id(text) is not None and not text.startswith((".", "/", "~")):
        import warnings

        warnings.warn(f"{text} is the local directory {path.resolve()}, not the Hub repository {text}: the local one "
                      f"is used (write ./{text} to say so; run from another directory to use the Hub's)", stacklevel=2)


def resolve_checkpoint(spec: str | os.PathLike, *, what: str = "checkpoint") -> Path:
    """The local directory holding the checkpoint `spec` names.

    `spec` is an existing directory (returned as is) or `org/name[@revision]` (downloaded, or taken from
    the cache when offline). `what` names the option in messages ("--model", "--teacher", ...).
    Raises `CheckpointNotFound` with what to do: a path that does not exist, an id missing from the cache
    offline, an unknown repository or revision, or a repository without safetensors weights.
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.exists():
        note_shadowed(text, path)
        return path
    parsed = parse_hub_id(text)
    if parsed is None or text.startswith((".", "/", "~")):
        raise CheckpointNotFound(f"{what} {text} does not exist (and it is not a Hub id of the form org/name)")
    repo, revision = parsed
    local = _snapshot(repo, revision, what)
    if not any(p.is_file() for p in local.glob("*.safetensors")) and (local / "model.safetensors.index.json").exists():
        raise CheckpointNotFound(
            f"{what} {repo}: the Hub download in {local} is incomplete (its index is there, its weights are not). "
            f"Download it again (`hf download {repo}`)."
        )
    if not any(local.glob("*.safetensors")):
        raise CheckpointNotFound(
            f"{what} {repo}: the repository has no safetensors weights, and hybridprune never loads pickled "
            "(*.bin) weights. Convert it once where you trust the files, e.g. `python -c \"from transformers "
            f"import AutoModelForCausalLM as M; M.from_pretrained('{repo}').save_pretrained('DIR')\"`, then "
            "pass DIR."
        )
    return local


def _snapshot(repo: str, revision: str | None, what: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    name = f"{repo}@{revision}" if revision else repo
    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=list(ALLOW_PATTERNS)))
    except LocalEntryNotFoundError:
        raise CheckpointNotFound(
            f"{what} {name}: not in the local Hugging Face cache, and the Hub cannot be reached "
            "(HF_HUB_OFFLINE is set or there is no network). Download it where the Hub is reachable "
            f"(`hf download {repo}`), point HF_HOME at that cache, or pass a local directory."
        ) from None
    except GatedRepoError:
        raise CheckpointNotFound(
            f"{what} {name}: the repository is gated; accept its licence on the Hub and log in "
            "(`hf auth login` or HF_TOKEN)."
        ) from None
    except RevisionNotFoundError:
        raise CheckpointNotFound(f"{what} {name}: the repository has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise CheckpointNotFound(
            f"{what} {name}: not a local directory, and no such repository on the Hub (or it is private: "
            "log in with `hf auth login`)"
        ) from None
