"""The one load path: every command, and both models of a distillation, load checkpoints here.

- A checkpoint reference is resolved to a local directory by the first resolver that accepts it
  (`RESOLVERS`): a local directory, else the name of a shipped teacher, else a Hub id `org/name[@revision]` (`hybridprune.checkpoint.hub`).
- Weights are read from safetensors only, unless the caller opts in to pickle files
  (`allow_pickle`); a checkpoint that ships only `pytorch_model.bin` is refused with the command
  that converts it.
- `trust_remote_code` is passed explicitly to every `from_pretrained` (config, model, tokenizer), so
  transformers never prompts; the checkpoint's own code runs only when the user asked for it.
- The loaded tensors are checked against the model: a missing tensor would otherwise be silently
  randomly initialised, an unexpected one silently dropped. Non-finite weights are refused too.
  Every error names the checkpoint's role (teacher, student, model), the first few tensors and how
  many there are.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: resolving a checkpoint reference needs no torch
    import torch

PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.bin")
SAFETENSORS_GLOB = "*.safetensors"
SHOW = 5


class CheckpointLoadError(ValueError):
    """A checkpoint cannot be loaded as a whole, trustworthy model; the message says why and what to do."""


def _local_directory(ref: str) -> Path | None:
    from .hub import note_shadowed

    path = Path(ref).expanduser()
    if not path.exists():
        return None
    note_shadowed(ref, path)
    return path


SHIPPED_PREFIX = "shipped:"


def _bundled_teacher(ref: str) -> Path | None:
    """The name of a teacher shipped with hybridprune (`tiny-nemotron-h`, `tiny-qwen3-5`), bare or as a
    recipe names it (`shipped:tiny-nemotron-h`), so every command takes what a recipe takes; a directory
    of the bare name comes first."""
    from ..data.assets import BUNDLED_TEACHERS, teacher_path

    name = ref.removeprefix(SHIPPED_PREFIX)
    return teacher_path(name) if name in BUNDLED_TEACHERS else None


def _hub_id(ref: str) -> Path | None:
    """A Hub id `org/name[@revision]`, fetched (safetensors only) or taken from the local cache."""
    from .hub import CheckpointNotFound, parse_hub_id, resolve_checkpoint

    if parse_hub_id(ref) is None or ref.startswith((".", "/", "~")):
        return None
    try:
        return resolve_checkpoint(ref, what="checkpoint")
    except CheckpointNotFound as exc:
        raise CheckpointLoadError(str(exc)) from None


#: Resolvers from a checkpoint reference to a local directory, tried in order; None means "not mine".
RESOLVERS: list[Callable[[str], Path | None]] = [_local_directory, _bundled_teacher, _hub_id]


def resolve(ref: str | os.PathLike, role: str = "checkpoint") -> Path:
    """The local directory of checkpoint `ref`, checked to look like a Hugging Face checkpoint."""
    for resolver in RESOLVERS:
        path = resolver(str(ref))
        if path is not None:
            break
    else:
        from ..data.assets import BUNDLED_TEACHERS

        raise CheckpointLoadError(f"checkpoint {_what(ref, role)} does not exist (neither a directory, a Hub id "
                                  f"org/name[@revision] nor a shipped teacher: "
                                  f"{', '.join(SHIPPED_PREFIX + n for n in BUNDLED_TEACHERS)})")
    if not path.is_dir():
        raise CheckpointLoadError(f"checkpoint {_what(path, role)} is not a directory (expected a Hugging Face "
                                  "model directory)")
    if not (path / "config.json").is_file():
        raise CheckpointLoadError(f"{_what(path, role)} has no config.json: not a Hugging Face checkpoint")
    return path


def check_weight_files(path: Path, role: str, allow_pickle: bool) -> None:
    if any(path.glob(SAFETENSORS_GLOB)):
        return
    pickles = [n for n in PICKLE_WEIGHTS if (path / n).is_file()] + sorted(
        p.name for p in path.glob("pytorch_model-*.bin"))
    if pickles and not allow_pickle:
        raise CheckpointLoadError(
            f"{_what(path, role)} has only pickle weights ({', '.join(pickles[:3])}), which can run code when loaded; "
            "hybridprune reads safetensors only. If you trust the file, convert it once: python -c \"from "
            "transformers import AutoModelForCausalLM as M; M.from_pretrained('"
            f"{path}', use_safetensors=False).save_pretrained('{path}-safetensors')\" and use {path}-safetensors")
    if not pickles:
        raise CheckpointLoadError(f"{_what(path, role)} has no weights (no *.safetensors file): the checkpoint is "
                                  "incomplete")


def load_config(ref: str | os.PathLike, *, trust_remote_code: bool = False, role: str = "checkpoint",
                view: bool = False):
    """The checked config of checkpoint `ref`. `view`: where the family's adapter reads config.json exactly
    as transformers does (`architectures.config_read`), a `ConfigView` of it, so that a streaming prune
    imports neither transformers nor torch; transformers' config otherwise (and always with remote code)."""
    path = resolve(ref, role)
    if view and not trust_remote_code:
        from ..architectures.config_read import read_view

        config = read_view(path)
        if config is not None:
            check_config(config, path, role)
            return config
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad config
        raise CheckpointLoadError(f"cannot read the config in {_what(path, role)}: {_remote_code_hint(exc)}") from None
    check_config(config, path, role)
    return config


def check_config(config, path, role: str = "checkpoint") -> None:
    """Refuse (UnroutableConfig) a source config its model cannot run, naming the checkpoint and the fields;
    every command meets it here, before a model is built. Unsupported architectures are left to the caller."""
    from ..architectures import UnsupportedArchitecture, get_adapter
    from ..architectures.moe import UnroutableConfig

    try:
        adapter = get_adapter(config)
    except UnsupportedArchitecture:
        return
    try:
        adapter.check_config(config)
    except UnroutableConfig as exc:
        raise UnroutableConfig(f"the config of {_what(path, role)} cannot route tokens to its experts: {exc}; "
                               "fix config.json or use the checkpoint's original config") from None


def load_tokenizer(ref: str | os.PathLike, *, trust_remote_code: bool = False, role: str = "checkpoint"):
    from transformers import AutoTokenizer

    path = resolve(ref, role)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointLoadError(f"cannot load a tokenizer from {_what(path, role)}: {_remote_code_hint(exc)}") from None


def _remote_code_hint(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
    if "trust_remote_code" in str(exc):
        return (f"{text}. The checkpoint ships its own Python code; it runs only with --trust-remote-code, "
                "so pass that if you trust it")
    return text


def load_model(ref: str | os.PathLike, *, dtype=None, device: str | torch.device | None = None,
               trust_remote_code: bool = False, allow_pickle: bool = False, role: str = "checkpoint",
               device_map: str | dict | None = None, whole: bool = False):
    """Load a causal LM for evaluation, refusing a checkpoint that does not fill the model exactly.

    `device_map`: accelerate's big-model dispatch ("auto", "balanced", a dict): layers over the GPUs,
    spilling to CPU and disk (offloaded weights go to a temporary folder removed at exit).
    `whole`: load a vision-language wrapper with its own class, vision tower included (to prune it in
    memory); by default it loads as its language model, as `AutoModelForCausalLM` does.
    `dtype` and `device` may be named as the command line names them (`"auto"`, `"bf16"`, `"cuda:1"`):
    `dtype="auto"` keeps the stored dtype, except on a GPU, where it is bfloat16 (`devices.load_dtype`).
    With a `device_map` the device is checked, and the map places the model."""
    from transformers import AutoModelForCausalLM

    from .devices import load_dtype, resolve_device

    if isinstance(device, str):
        device = resolve_device(device)  # "auto": a GPU when there is one; a device not here is refused
    if device_map is not None:
        device = None
    if isinstance(dtype, str):
        dtype = load_dtype(dtype, device, device_map)  # "auto" stays: transformers keeps the stored dtype
    path = resolve(ref, role)
    check_weight_files(path, role, allow_pickle)
    config = load_config(path, trust_remote_code=trust_remote_code, role=role)  # a config the model cannot run
    if whole and _is_wrapper(config):
        from transformers import AutoModelForImageTextToText as AutoModelForCausalLM  # noqa: N814
    files = _checked_files(path, role)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if device_map is not None:
        import atexit
        import shutil
        import tempfile

        offload = tempfile.mkdtemp(prefix="hybridprune-offload-")
        atexit.register(shutil.rmtree, offload, ignore_errors=True)
        kwargs.update(device_map=device_map, offload_folder=offload)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            path, trust_remote_code=trust_remote_code, use_safetensors=not allow_pickle or None,
            output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)  # listed, then refused below
    except Exception as exc:  # noqa: BLE001
        raise CheckpointLoadError(f"cannot load the model in {_what(path, role)}: {_remote_code_hint(exc)}. Is the "
                                  "checkpoint complete (config.json and *.safetensors)?") from None
    if info.get("mismatched_keys"):
        _name_missing_slices(path, model, role)
    info["unexpected_keys"] = _without_dropped_parts(info.get("unexpected_keys") or [], model.config)
    check_loading_info(info, path, role)
    bad = non_finite_tensors(model)
    if bad and files is not None:  # a cast to the loaded dtype (asked for, or the config's) may be at fault
        loaded = dict(model.named_parameters()).get(bad[0][0])
        _refuse_overflow(files, model, bad, loaded.dtype if loaded is not None else dtype)
    refuse_non_finite(bad, _what(path, role))
    if device is not None:
        model = model.to(device)
    return model.eval()


def _without_dropped_parts(keys, config) -> list:
    """`keys` less those of the parts the adapter leaves out of a pruned output (`dropped_parts`): transformers
    skips some of them by name only at the real checkpoints' layer counts (GLM-4.5's `model.layers.92.*`),
    so at other depths it lists them as unexpected, though the model never uses them."""
    from ..architectures import UnsupportedArchitecture, get_adapter

    try:
        dropped = get_adapter(config).dropped_parts(config)
    except UnsupportedArchitecture:
        return list(keys)
    return [k for k in keys if not any(part.holds(str(k[0] if isinstance(k, tuple) else k)) for part in dropped)]


def _is_wrapper(config) -> bool:
    from ..architectures import UnsupportedArchitecture, get_adapter

    try:
        return bool(get_adapter(config).carried_prefixes)
    except UnsupportedArchitecture:
        return False


def _checked_files(path: Path, role: str):
    """The checkpoint's safetensors files, checked (headers, index, shards against the index) before
    transformers reads them: it would follow the index or the shards without checking one against the
    other. None for a checkpoint of pickle weights only (allowed by the caller)."""
    from .files import INDEX_FILE, CheckpointFiles

    if not any(path.glob(SAFETENSORS_GLOB)) and not (path / INDEX_FILE).exists():
        return None
    return CheckpointFiles(path, what=_what(path, role))


def _refuse_overflow(files, model, bad: list[tuple[str, int]], dtype: torch.dtype) -> None:
    """Non-finite weights that the source holds as finite values too large for `dtype`: blame the cast,
    not the checkpoint."""
    import torch

    from .files import KeyMap

    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        return
    keymap = KeyMap(model.config.model_type)
    for name, _ in bad:
        keys = [k for k in files.tensors if keymap.model_key(k) == name
                or (part := keymap.stacked(k)) is not None and part.target == name]
        largest, culprit = 0.0, name
        for key in keys:
            info = files.tensors[key]
            if not info.dtype.is_floating_point:
                continue
            with files.mapped(info.shard) as f:
                source = torch.from_numpy(f.tensor(info)).view(info.dtype.torch)
                if count_non_finite(source):
                    break  # the checkpoint's own fault: refused as corrupt
                value = max_abs(source)
                if value > largest:
                    largest, culprit = value, key  # named as the checkpoint names it
                del source
        else:
            if largest > torch.finfo(dtype).max:
                raise CheckpointLoadError(overflow_message(culprit, largest, dtype))


def _name_missing_slices(path: Path, model, role: str) -> None:
    """A tensor that transformers stacks from per-expert checkpoint tensors comes out misshapen when one
    of them is missing; name the missing checkpoint key rather than the stacked tensor."""
    from .files import CheckpointFiles, CheckpointFormatError, KeyMap

    try:
        files = CheckpointFiles(path)
    except CheckpointFormatError:
        return
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        KeyMap(model.config.model_type).model_shapes({k: t.shape for k, t in files.tensors.items()}, expected)
    except CheckpointFormatError as exc:
        raise CheckpointLoadError(f"{_what(path, role)} does not match its config: {exc}") from None


def _what(path, role: str) -> str:
    return str(path) if role == "checkpoint" else f"{path} (the {role})"


def _names(keys) -> str:
    keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in keys)
    return ", ".join(keys[:SHOW]) + (f" ({len(keys)} in all)" if len(keys) > SHOW else "")


def check_loading_info(info: dict, path: Path, role: str = "checkpoint") -> None:
    """Refuse missing, unexpected or misshapen tensors. Tied weights and non-persistent buffers are
    not in transformers' lists, so whatever is listed is a real mismatch."""
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing tensors (would be random): {_names(info['missing_keys'])}")
    if info.get("unexpected_keys"):
        problems.append(f"unexpected tensors (would be ignored): {_names(info['unexpected_keys'])}")
    if info.get("mismatched_keys"):
        problems.append(f"tensors of the wrong shape: {_names(info['mismatched_keys'])}")
    if info.get("error_msgs"):
        problems.append("; ".join(str(m) for m in info["error_msgs"][:SHOW]))
    if problems:
        raise CheckpointLoadError(f"{_what(path, role)} does not match its config: " + "; ".join(problems)
                                  + ". The checkpoint is damaged or was written for another architecture; "
                                  "export it again.")


#: Elements converted at a time where a dtype has no min/max kernel (float8): bounds the temporary copy.
_CHUNK = 1 << 22


def _chunks(t: torch.Tensor):
    """`t` as float32 pieces when torch has no reduction for its dtype (float8), else `t` itself."""
    import torch

    if t.is_complex():
        t = torch.view_as_real(t)
    if t.dtype.itemsize > 1:
        yield t
        return
    flat = t.reshape(-1)
    for a in range(0, flat.numel(), _CHUNK):
        yield flat[a:a + _CHUNK].float()


def count_non_finite(t: torch.Tensor) -> int:
    """NaN/Inf values in `t` (0 for integer tensors). One min/max reduction first (NaN and ±inf show in
    it, and it allocates nothing): counting element by element is ~100x slower and only runs on a tensor
    that has some. Float8 tensors are checked through float32 copies of a few MiB at a time."""
    import torch

    if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
        return 0
    bad = 0
    with torch.no_grad():
        for piece in _chunks(t.detach()):
            lo, hi = torch.aminmax(piece)
            if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
                bad += int((~torch.isfinite(piece)).sum())
    return bad


def max_abs(t: torch.Tensor) -> float:
    """The largest |value| of a finite floating-point tensor."""
    import torch

    if t.numel() == 0:
        return 0.0
    with torch.no_grad():
        ends = [torch.aminmax(piece) for piece in _chunks(t.detach())]
    return max(max(abs(float(lo)), abs(float(hi))) for lo, hi in ends)


def overflow_message(name: str, largest: float, dtype: torch.dtype) -> str:
    """Tensor `name` (largest |value| `largest`) does not fit `dtype`: say so, and what to use."""
    import torch

    short = str(dtype).replace("torch.", "")
    return (f"{name} does not fit in {short}: its largest |value| is {largest:.6g}, above {short}'s maximum "
            f"{torch.finfo(dtype).max:.6g}, so it would become infinite. Use --dtype bfloat16 (the range of "
            "float32) or float32")


def non_finite_tensors(model: torch.nn.Module) -> list[tuple[str, int]]:
    """(name, count of NaN/Inf values) of every floating-point tensor that has any."""
    bad = []
    seen = set()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if not t.is_floating_point() or t.is_meta or id(t) in seen:  # meta: offloaded by a device_map
            continue
        seen.add(id(t))
        n = count_non_finite(t)
        if n:
            bad.append((name, n))
    return bad


def check_finite(model: torch.nn.Module, what: str) -> None:
    refuse_non_finite(non_finite_tensors(model), what)


def refuse_non_finite(bad: list[tuple[str, int]], what: str) -> None:
    """Raise CheckpointLoadError naming the first few (tensor name, count of NaN/Inf values)."""
    if bad:
        shown = ", ".join(f"{name} ({n} values)" for name, n in bad[:SHOW])
        more = f"; {len(bad)} tensors in all" if len(bad) > SHOW else ""
        raise CheckpointLoadError(f"{what} has NaN or infinite weights: {shown}{more}. The checkpoint is "
                                  "corrupt; use an earlier or re-exported copy.")
