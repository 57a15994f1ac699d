"""`hybridprune teacher-logits`: the teacher's top-k logits (and tail mass) of a token corpus, computed
once, for `distill --teacher-logits` (see docs/distillation.md).

    hybridprune teacher-logits --teacher T/ --data tokens/ --seq-len 4096 --top-k 128 --out logits/
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..output.atomic import atomic_directory, check_output
from .checks import SEED_MAX
from .common import CliError, console, fail_cleanly, load_model
from .devices import check_device


def register(app: typer.Typer) -> None:
    app.command("teacher-logits")(teacher_logits_command)


@fail_cleanly
def teacher_logits_command(
    teacher: Path = typer.Option(..., "--teacher", help="Teacher: Hugging Face checkpoint directory."),
    data: Path = typer.Option(..., "--data", help="Token directory (`hybridprune tokenize`); its train split."),
    out: Path = typer.Option(..., "--out", help="Directory for the cached logits."),
    seq_len: int = typer.Option(4096, "--seq-len", min=2, help="Tokens per sample (as distill's --seq-len)."),
    top_k: int = typer.Option(128, "--top-k", min=1, help="Teacher tokens kept per position (the rest as one tail mass)."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="As distill's --seed."),
    num_samples: int = typer.Option(None, "--num-samples", min=1, help="As distill's --num-samples."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Samples per teacher forward."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace earlier logits in --out (never files hybridprune did not write)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's own Python code."),
) -> None:
    """Compute the teacher's top-k logits of the training samples once."""
    import torch

    from ..data.shards import is_token_dir
    from ..distillation import teacher_logits as tl
    from ..distillation.data import as_token_data
    from ..distillation.models import final_hidden, head_of
    from .distill import _train_data

    check_device(device)
    if not is_token_dir(data):
        raise CliError(f"--data {data} is not a token directory; write one first with `hybridprune tokenize`")
    check_output(out, overwrite=overwrite)
    model = load_model(teacher, dtype="auto", device=device, trust_remote_code=trust_remote_code, role="teacher")
    model.eval()
    train = as_token_data(_train_data(data, seq_len, seed, num_samples))
    dev = next(model.parameters()).device

    @torch.no_grad()
    def hidden(ids, mask):
        return final_hidden(model, ids, mask)

    size = len(train) * seq_len * (min(top_k, head_of(model).vocab_size) * 8 + 4)
    console.print(f"top-{top_k} teacher logits of {len(train)} samples × {seq_len} tokens ({size / 2**30:.2f} GiB)")
    meta = {"teacher": str(teacher), "data": str(data), "seed": seed, "num_samples_asked": num_samples}
    atomic_directory(out, lambda tmp: tl.write(tmp, hidden, head_of(model), train, top_k, batch_size=batch_size,
                                               device=dev, meta=meta),
                     overwrite=overwrite, what="the teacher logits", size_hint=size)
    console.print(f"teacher logits written to [bold]{out}[/]; distill with --teacher-logits {out}")
