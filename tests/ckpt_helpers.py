"""Tiny checkpoints on disk for the reliability tests: whole, damaged, or shipping extra files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from conftest import build, tiny_nemotron_config
from hybridprune.cli import app
from hybridprune.data import tokenizer_path
from hybridprune.pruning.export import copy_tokenizer_files

runner = CliRunner()
PLAN = "hidden_size=32,ffn_hidden_size=32,mamba_num_heads=6,num_attention_heads=4"
SRC = Path(__file__).resolve().parents[1] / "src"


def save_checkpoint(path: Path, seed: int = 0) -> Path:
    """A tiny random Nemotron-H with the shipped tokenizer (vocabulary 4096)."""
    build(tiny_nemotron_config(vocab_size=4096), seed=seed).save_pretrained(path)
    copy_tokenizer_files(tokenizer_path(), path)
    return path


def rewrite_weights(path: Path, edit) -> None:
    """Apply `edit(state_dict)` to the checkpoint's safetensors in place."""
    sd = load_file(str(path / "model.safetensors"))
    edit(sd)
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def no_traceback(result) -> bool:
    return "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))


def refused(result, *words: str) -> None:
    """The command exited 2 with a message, no traceback, holding each of `words` (rich's box folded away)."""
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and no_traceback(result), result.output
    for word in words:
        assert word in text, (word, text)


def interrupted_tokenization(out, corpus, tok, monkeypatch, at_append: int = 30) -> dict:
    """Tokenize `corpus` into `out` and stop it with Ctrl-C at the `at_append`-th batch written; the
    progress record it leaves."""
    import pytest

    from hybridprune.data import tokenize as tk
    from hybridprune.data.shards import PROGRESS_FILE

    real, calls = tk._Writer.append, [0]

    def dying(self, ids, mask):
        calls[0] += 1
        if calls[0] == at_append:
            raise KeyboardInterrupt
        return real(self, ids, mask)

    monkeypatch.setattr(tk._Writer, "append", dying)
    with pytest.raises(KeyboardInterrupt):
        tk.tokenize_to(out, str(corpus), tok, shard_tokens=700, commit_tokens=300, batch_docs=16)
    monkeypatch.setattr(tk._Writer, "append", real)
    return json.loads((Path(out) / PROGRESS_FILE).read_text())


def siblings(path: Path) -> list[str]:
    """Hidden temporaries next to `path` (there must be none after a command ends)."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}"))


def run_cli(args, *, env_extra=None, audit_kill_at: int | None = None, kill_under: Path | None = None,
            timeout: float = 300):
    """Run `python -m hybridprune ARGS` in a fresh process. With `audit_kill_at=k`, the process SIGKILLs
    itself at its k-th file-system write event under `kill_under` (an audit hook: no production hook)."""
    env = dict(os.environ, PYTHONPATH=str(SRC), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    env.update(env_extra or {})
    code = "import runpy, sys\n"
    if audit_kill_at is not None:
        code += KILLER.format(k=audit_kill_at, under=str(kill_under))
    code += "sys.argv = ['hybridprune', *sys.argv[1:]]\nrunpy.run_module('hybridprune', run_name='__main__')\n"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout)


KILLER = """
import os, signal
_n = [0]
_W = ('open', 'os.rename', 'os.replace', 'os.mkdir', 'os.remove', 'os.rmdir', 'shutil.copyfile', 'os.unlink')
def _hook(event, args):
    if event not in _W or not args:
        return
    if event == 'open' and (len(args) < 2 or not isinstance(args[1], str) or not set(args[1]) & set('wax+')):
        return
    path = args[0]
    if isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).startswith({under!r}):
        _n[0] += 1
        if _n[0] == {k}:
            os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(_hook)
"""



def small_corpus(path: Path) -> Path:
    """A few hundred short lines of JSONL: distillation tests tokenize this, not the whole bundled corpus."""
    if not path.exists():
        words = "the king speaks of love and war while the fool laughs at night under a cold moon".split()
        with open(path, "w") as f:
            for i in range(400):
                text = " ".join(words[(i * 7 + j) % len(words)] for j in range(20 + i % 13)) + f" {i}."
                f.write(json.dumps({"text": text}) + "\n")
    return path
