"""`hybridprune tokenize`: text sources -> memory-mapped token shards that distill, search and
calibrate read by offset (see docs/data.md, "Token shards").

    hybridprune tokenize --data corpus.jsonl --tokenizer teacher/ --out tokens/
    hybridprune tokenize --data web.jsonl:0.7,code.jsonl:0.3 --tokenizer teacher/ --out mix/
    hybridprune tokenize --data chats.jsonl --chat --tokenizer teacher/ --out chat-tokens/
    hybridprune tokenize --data 'web/*.jsonl' --tokenizer teacher/ --out tokens/ --num-proc 8

Interrupted, the same command continues where the last commit left off.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..output.cleanup import remove_if_failed
from ..options import TOKENIZE
from .checks import check_data_path, check_not_blank
from . import shared
from .common import check_checkpoint_dir, console, fail_cleanly, load_tokenizer


def register(app: typer.Typer) -> None:
    app.command("tokenize")(tokenize_command)


def has_progress(out: Path) -> bool:
    from ..data.shards import PROGRESS_FILE

    return (out / PROGRESS_FILE).is_file()


@fail_cleanly
def tokenize_command(
    data: str = typer.Option(..., "--data", help="Text: files (.txt/.jsonl/.json/.parquet, .gz), a directory, a glob, a saved dataset, a Hub dataset id, or 'shakespeare'; a mixture as a.jsonl:0.7,b.jsonl:0.3."),
    tokenizer: Path = typer.Option(..., "--tokenizer", help="Checkpoint (or tokenizer) directory whose tokenizer to use."),
    out: Path = typer.Option(..., "--out", help="Token directory: shards per split, manifest.json."),
    text_field: str = shared.text_field("text"),
    chat: bool = typer.Option(False, "--chat", help="Records are conversations ('messages', rendered with the tokenizer's chat template) or prompt/completion pairs; the loss counts the assistant's (completion's) tokens only."),
    num_proc: int = typer.Option(1, "--num-proc", **TOKENIZE.bounds("num_proc"), help="Tokenize in this many processes (the output is the same bytes as with one)."),
    overwrite: bool = shared.overwrite("an earlier tokenization"),
    trust_remote_code: bool = shared.trust_remote_code(False, "the tokenizer's"),
) -> None:
    """Tokenize text once into memory-mapped shards (resumable)."""
    check_not_blank(("--data", data, "shakespeare"), ("--text-field", text_field, "text"))
    check_data_path("--data", data)
    check_checkpoint_dir(tokenizer, "tokenizer")  # a wrong path is named before torch is imported
    from ..data.tokenize import tokenize_to

    tok = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code, role="tokenizer")
    remove_if_failed(out, keep=has_progress, note=f"run the same command again to continue the tokenization in {out}")
    manifest = tokenize_to(out, data, tok, text_field=text_field, chat=chat, overwrite=overwrite, num_proc=num_proc,
                           say=lambda m: console.print(m, soft_wrap=True, highlight=False))
    parts = ", ".join(f"{split} {sum(int(p['tokens']) for p in by_src.values()):,}"
                      for split, by_src in sorted(manifest["splits"].items()))
    console.print(f"{manifest['num_tokens']:,} tokens ({manifest['dtype']}) written to [bold]{out}[/]: {parts}",
                  soft_wrap=True)
