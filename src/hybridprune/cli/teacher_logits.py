"""`hybridprune teacher-logits`: the teacher's top-k logits (and tail mass) of a token corpus, computed
once, for `distill --teacher-logits` (see docs/distillation.md).

    hybridprune teacher-logits --teacher T/ --data tokens/ --seq-len 4096 --top-k 128 --out logits/

Interrupted, the same command continues after the last batch it wrote (the same bytes as one run).
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..output.cleanup import lock_until_done, remove_if_failed
from ..output.atomic import check_output
from ..options import TEACHER_LOGITS
from . import shared
from .common import CliError, console, fail_cleanly, load_model
from ..checkpoint.devices import check_device


#: tokens per teacher forward when --batch-size is not given (4 samples at the default --seq-len 4096):
#: short samples go many to a forward, which is several times faster than a few at a time
BATCH_TOKENS = 16_384


def register(app: typer.Typer) -> None:
    app.command("teacher-logits")(teacher_logits_command)


def default_batch_size(seq_len: int, progress: dict | None = None) -> int:
    """Samples per forward without --batch-size: an unfinished cache's own (the batches decide the bytes,
    so the same command continues it), else `BATCH_TOKENS` tokens' worth."""
    recorded = (progress or {}).get("plan", {}).get("batch_size")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 1:
        return recorded
    return max(1, BATCH_TOKENS // seq_len)


@fail_cleanly
def teacher_logits_command(
    teacher: Path = typer.Option(..., "--teacher", help="Teacher: Hugging Face checkpoint directory."),
    data: Path = typer.Option(..., "--data", help="Token directory (`hybridprune tokenize`); its train split."),
    out: Path = typer.Option(..., "--out", help="Directory for the cached logits."),
    seq_len: int = typer.Option(4096, "--seq-len", **TEACHER_LOGITS.bounds("seq_len"), help="Tokens per sample (as distill's --seq-len)."),
    top_k: int = typer.Option(128, "--top-k", **TEACHER_LOGITS.bounds("top_k"), help="Teacher tokens kept per position (the rest as one tail mass)."),
    seed: int = shared.seed(0, "As distill's --seed."),
    num_samples: int = typer.Option(None, "--num-samples", **TEACHER_LOGITS.bounds("num_samples"), help="As distill's --num-samples."),
    batch_size: int = typer.Option(None, "--batch-size", **TEACHER_LOGITS.bounds("batch_size"), help=f"Samples per teacher forward (default: {BATCH_TOKENS:,} tokens' worth, 4 at --seq-len 4096; an unfinished cache continues with its own)."),
    device: str = shared.device("auto"),
    overwrite: bool = shared.overwrite("earlier logits"),
    trust_remote_code: bool = shared.trust_remote_code(False),
) -> None:
    """Compute the teacher's top-k logits of the training samples once (resumable)."""
    check_device(device)
    from ..checkpoint.fingerprint import model_fingerprint
    from ..data.shards import is_token_dir, read_manifest
    from ..distillation import teacher_logits_store as store
    from ..distillation.data import as_token_data
    from ..distillation.models import head_of
    from ..stages.distill import _train_data, checkpoint_identity

    if not is_token_dir(data):
        raise CliError(f"--data {data} is not a token directory; write one first with `hybridprune tokenize`")
    train = as_token_data(_train_data(data, seq_len, seed, num_samples))
    tokens = read_manifest(data)
    meta = {"teacher": str(teacher), "data": str(data), "seed": seed, "num_samples_asked": num_samples}
    progress, batch_size = _claim_out(out, train, tokens, top_k=top_k, batch_size=batch_size, seq_len=seq_len,
                                      overwrite=overwrite, meta=meta)
    fingerprint = checkpoint_identity(teacher, trust_remote_code=trust_remote_code)  # of the files, at any dtype
    model = load_model(teacher, dtype="auto", device=device, trust_remote_code=trust_remote_code, role="teacher")
    model.eval()
    head = head_of(model)
    the_plan = store.plan(train, tokens, min(top_k, head.vocab_size), batch_size=batch_size,
                          teacher_fingerprint=fingerprint or model_fingerprint(model), vocab_size=head.vocab_size,
                          **meta)
    if progress is not None:  # the same data and options: the same teacher and k too?
        _refuse_other(out, store.same_work(progress["plan"], the_plan), overwrite)
    _write(out, model, train, the_plan, seq_len=seq_len, overwrite=overwrite, progress=progress)


def _claim_out(out: Path, train, tokens: dict, *, top_k: int, batch_size: int | None, seq_len: int, overwrite: bool,
               meta: dict) -> tuple[dict | None, int]:
    """--out continues an unfinished cache of the same command, or is new, or is started afresh with
    --overwrite; returns the progress to continue (None: none) and the batch size."""
    from ..distillation import teacher_logits_store as store
    from ..distillation.config import DistillError

    try:
        progress = store.read_progress(out) if out.is_dir() else None
    except DistillError:
        if not overwrite:
            raise
        progress = None  # --overwrite: a record that cannot be continued is replaced
    if progress is not None:  # an interrupted run: only the same command continues it
        asked = store.plan(train, tokens, top_k, batch_size=batch_size or default_batch_size(seq_len, progress), **meta)
        differ = store.same_work(progress["plan"], asked, ignore=("teacher_fingerprint", "k"))
        _refuse_other(out, differ, overwrite)
        progress = None if differ else progress  # --overwrite: start afresh
    resuming = progress is not None or store.unfinished(out)
    if batch_size is None:
        batch_size = default_batch_size(seq_len, progress)
    check_output(out, overwrite=overwrite, resume=resuming, links=store.FILES)  # a planted link goes, as a link
    if resuming:
        store.remove_temporaries(out)
    remove_if_failed(out, keep=store.has_progress,
                     note=f"run the same command again to continue the teacher logits in {out}")
    lock_until_done(out)  # one writer per cache
    return progress, batch_size


def _write(out: Path, model, train, the_plan: dict, *, seq_len: int, overwrite: bool, progress: dict | None) -> None:
    """Run the teacher over the samples and write its top-k logits into `out`, batch by batch."""
    import torch

    from ..distillation import teacher_logits_store as store
    from ..distillation.models import final_hidden, head_of
    from ..output.atomic import claim, remove_owned
    from ..output.errors import writing

    @torch.no_grad()
    def hidden(ids, mask):
        return final_hidden(model, ids, mask)

    size = len(train) * seq_len * (the_plan["k"] * 8 + 4)
    console.print(f"top-{the_plan['k']} teacher logits of {len(train)} samples × {seq_len} tokens "
                  f"({size / 2**30:.2f} GiB)")
    if overwrite and (progress is None or progress["plan"].get("id") != the_plan["id"]):
        remove_owned(out, links=store.FILES)  # only now that the teacher loaded: a failed start keeps the earlier output
    claim(out, store.FILES)
    with writing("the teacher logits", out, needed=size):
        store.write(out, hidden, head_of(model), train, the_plan, device=next(model.parameters()).device,
                    say=lambda m: console.print(m, soft_wrap=True, highlight=False))
    console.print(f"teacher logits written to [bold]{out}[/]; distill with --teacher-logits {out}")


def _refuse_other(out: Path, differ: list[str], overwrite: bool) -> None:
    """An unfinished cache in `out` is continued only by the command that began it."""
    if differ and not overwrite:
        names = {"teacher_fingerprint": "teacher", "data_fingerprint": "training samples",
                 "tokens_fingerprint": "token directory", "k": "top-k", "batch_size": "batch size"}
        raise CliError(f"{out} holds unfinished teacher logits of other settings "
                       f"({', '.join(names.get(d, d) for d in differ)}); run the same command as before to finish "
                       "them, pass --overwrite to start afresh, or choose another --out")
