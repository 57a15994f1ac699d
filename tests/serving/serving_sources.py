"""Tiny source checkpoints, pruned through the command line, and transformers' greedy tokens for them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from typer.testing import CliRunner

from conftest import build, tiny_config
from hub_layouts import GRANITE_HUB, KIMI_HUB, NEMOTRON_HUB, hub_checkpoint
from serving_matrix import Family
from hybridprune.cli import app
from hybridprune.data import tokenizer_path
from hybridprune.pruning.export import copy_tokenizer_files

runner = CliRunner()


def write_source(fam: Family, path: Path) -> Path:
    """A float32 random checkpoint of the family with the bundled tokenizer (calibration reads text).

    The tokenizer config names `PreTrainedTokenizerFast`, as Hub checkpoints do: the bundled one says
    `TokenizersBackend` (transformers 5), which llama.cpp's converter's transformers 4.57 cannot resolve
    (the outputs' own portability is issue #22 part 3, not this matrix). A Hub-style source is written
    without `auto_map`: its code would run in the converter, which loads the tokenizer with remote code on.
    """
    if fam.hub is not None:
        base = {"nemotron_h": NEMOTRON_HUB, "granitemoehybrid": GRANITE_HUB, "kimi_linear": KIMI_HUB}[fam.model_type]
        raw = {k: v for k, v in {**base, **fam.hub}.items() if k != "auto_map"}
        hub_checkpoint(path, raw)
    else:
        config = tiny_config(fam.model_type, **fam.config)
        vision = getattr(config, "vision_config", None)
        if vision is not None:  # a VL wrapper: the merger writes the language model's channels; head size 32
            vision.out_hidden_size = config.text_config.hidden_size
            vision.hidden_size, vision.num_heads, vision.intermediate_size = 64, 2, 128
        build(config).to(torch.float32).save_pretrained(path)
    copy_tokenizer_files(tokenizer_path(), path)
    tok_cfg = path / "tokenizer_config.json"
    cfg = json.loads(tok_cfg.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_cfg.write_text(json.dumps(cfg, indent=2))
    return path


def calibrate(model: Path, out: Path) -> None:
    result = runner.invoke(app, ["calibrate", "--model", str(model), "--data", "shakespeare", "--samples", "4",
                                 "--seq-len", "16", "--batch-size", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output


def prune(model: Path, scores: Path, plan: str, out: Path, *extra: str):
    """`hybridprune prune` as a user runs it; the CliRunner result."""
    if out.exists():
        shutil.rmtree(out)
    return runner.invoke(app, ["prune", "--model", str(model), "--scores", str(scores), "--plan", plan,
                               "--out", str(out), *extra])


def cli_has_serve_with() -> bool:
    """Whether `prune` knows `--serve-with` (issue #22 part 2; merged separately)."""
    return "--serve-with" in runner.invoke(app, ["prune", "--help"], terminal_width=200).output


@torch.no_grad()
def reference_tokens(model_dir: Path, prompts, new_tokens: int) -> tuple[list[list[int]], list[list[list]]]:
    """transformers' greedy continuation (`generate`, float32, with its cache), never stopping at EOS, and
    at each step its runner-up token and the logit gap to it ([runner-up, gap] per position)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None
    out, margins = [], []
    for prompt in prompts:
        gen = model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                             output_scores=True, return_dict_in_generate=True)
        out.append(gen.sequences[0, len(prompt):].tolist())
        tops = [torch.topk(step[0].float(), 2) for step in gen.scores]
        margins.append([[int(t.indices[1]), float(t.values[0] - t.values[1])] for t in tops])
    assert all(len(o) == new_tokens for o in out), "generate stopped early"
    return out, margins
