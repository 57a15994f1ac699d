"""The memory forecast of each stage for `run --dry-run`, from configs alone (nothing is loaded).

Stages of later rounds, and a distillation whose student the search has not chosen yet, are
forecast at the original model's size: an upper bound, said as such.
"""

from __future__ import annotations

from pathlib import Path

from .plan import Stage


def stage_forecast(st: Stage, recipe, source: Path) -> str:
    from transformers import AutoConfig

    from ..architectures import get_adapter
    from ..checkpoint.devices import resolve_device, weight_bytes
    from ..checkpoint.forecast import forecast_distill, forecast_prune, forward_forecast

    config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    adapter = get_adapter(config)
    dims = adapter.dims(config)
    s = st.settings
    bound = " (at most; the model of an earlier round is smaller)" if (st.round or 1) > 1 else ""
    if st.kind == "calibrate":
        f = forward_forecast(config, "calibrate", batch=s.batch_size, seq=s.seq_len, dtype=s.dtype,
                             device=s.device, depth=s.depth_samples > 0)
    elif st.kind == "search":
        from ..stages.search import forecast

        f = forecast(config, s, recipe.dtype, recipe.device, depth=False)
    elif st.kind == "prune" and st.settings.in_memory:
        f = forecast_prune(adapter, dims, weight_bytes=weight_bytes(config, s.dtype, s.device), device=str(s.device))
    elif st.kind == "prune":
        f = forecast_prune(adapter, dims, weight_bytes=weight_bytes(config, s.dtype),
                           largest_tensor_bytes=_largest(source))
    elif st.kind == "distill":
        from ..distillation.chunked_loss import auto_chunk_size

        student, note = dims, " (student at most the teacher's size: the search picks it)"
        plan = st.inputs["prune"].plan  # a fixed plan, parsed when the stages were planned
        if plan is not None:
            kept = [i for i in range(len(dims.block_kinds)) if i not in (plan.drop_layers or [])]
            student, note = plan.target_dims(dims, kept[: plan.num_layers or len(kept)]), ""
        from ..distillation.config import DistillConfig
        from ..distillation.placement import use_bf16

        target = resolve_device(recipe.device)
        device = str(target)
        bf16 = use_bf16(DistillConfig(precision=s.precision), target)  # the teacher is held in bf16 under bf16
        f = forecast_distill(adapter, dims, student, micro_batch=s.micro_batch, seq=s.seq_len, weight_bytes=4,
                             teacher_weight_bytes=2 if bf16 else 4, device=device,
                             chunk_positions=s.chunk_size or auto_chunk_size(dims.vocab_size, device),
                             chunk=adapter.scan_chunk(config))
        return f.describe().split(": ", 1)[1] + note
    elif st.kind == "eval":
        f = forward_forecast(config, "evaluate", batch=s.batch_size, seq=s.seq_len, dtype=s.dtype, device=s.device)
    else:
        return "-"
    return f.describe().split(": ", 1)[1] + bound


def _largest(source: Path) -> int:
    from ..checkpoint.files import CheckpointFiles

    return max((t.nbytes for t in CheckpointFiles(source).tensors.values()), default=0)
