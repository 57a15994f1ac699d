"""The distillation stage: its settings (`hybridprune distill`'s options, a recipe's `distill:` section)
and `run`, everything between those settings and a distilled student.

`run` checks cached teacher logits against the teacher and the run before any model loads, forecasts
the memory, tokenizes text data once into `OUT/tokens`, loads the teacher (in bf16 when the run
trains under bf16: `distillation.placement.use_bf16`) and the student, and trains with exact resume.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..distillation.config import DistillConfig
from .common import SILENT, Loader, LoadSettings, Voice, say_forecast

TOKENS_DIR = "tokens"


def _as_in(config, name: str):
    """The default of `config`'s setting `name` (`dataclasses.fields`): a setting the trainer's config
    (`DistillConfig`) also has takes its default from there, so the two cannot drift apart."""
    f = next(f for f in dataclasses.fields(config) if f.name == name)
    if f.default_factory is not dataclasses.MISSING:
        return field(default_factory=f.default_factory)
    return f.default


@dataclass
class DistillSettings:
    """Every option of the distillation; the command's flag of `global_batch` is `--global-batch`.

    Defaults the trainer also has are its (`DistillConfig`). `teacher_logits`: top-k logits written
    by `hybridprune teacher-logits` for this data, sequence length, seed and sample count (`kd_topk`
    then defaults to their k). `save_every` None: a checkpoint at the end only (and at
    `stop_at_step`).
    """

    seq_len: int = 4096
    global_batch: int = _as_in(DistillConfig, "global_batch")
    micro_batch: int = _as_in(DistillConfig, "micro_batch")
    lr: float = _as_in(DistillConfig, "lr")
    min_lr: float = _as_in(DistillConfig, "min_lr")
    warmup: int = _as_in(DistillConfig, "warmup")
    tokens: float | None = _as_in(DistillConfig, "tokens")
    steps: int | None = _as_in(DistillConfig, "steps")
    save_every: int | None = _as_in(DistillConfig, "save_every")
    keep_last: int = _as_in(DistillConfig, "keep_last")
    stop_at_step: int | None = _as_in(DistillConfig, "stop_at_step")
    eval_every: int | None = _as_in(DistillConfig, "eval_every")
    val_samples: int = 64
    num_samples: int | None = None
    temperature: float = _as_in(DistillConfig, "temperature")
    kd_loss: str = _as_in(DistillConfig, "kd_loss")
    kd_weight: float = _as_in(DistillConfig, "kd_weight")
    ce_weight: float = _as_in(DistillConfig, "ce_weight")
    kd_topk: int | None = _as_in(DistillConfig, "kd_topk")
    teacher_logits: str | None = None
    teacher_device: str | None = _as_in(DistillConfig, "teacher_device")
    teacher_device_map: str | None = None
    chunk_size: int | None = _as_in(DistillConfig, "chunk_size")
    weight_decay: float = _as_in(DistillConfig, "weight_decay")
    grad_clip: float | None = _as_in(DistillConfig, "grad_clip")
    precision: str = _as_in(DistillConfig, "precision")
    parallel: str = _as_in(DistillConfig, "parallel")
    num_proc: int = 1
    chat: bool = False
    progress: bool = _as_in(DistillConfig, "progress")
    report_to: list[str] = _as_in(DistillConfig, "report_to")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def values(self) -> dict:
        return asdict(self)

    def trainer_config(self, out: Path, *, student: Path, seed: int, device: str | None,
                       resume: Path | None = None) -> DistillConfig:
        """The trainer's config of this run (checked: a bad setting is refused before anything loads)."""
        same = {f.name for f in fields(DistillConfig)} & set(self.names())
        values = {k: v for k, v in self.values().items() if k in same}
        values.update(grad_clip=self.grad_clip or None,  # 0 disables clipping
                      teacher_device=None if self.teacher_device in (None, "auto") else self.teacher_device,
                      report_to=tuple(n.strip() for r in self.report_to for n in str(r).split(",") if n.strip()))
        cfg = DistillConfig(**values, device=None if device == "auto" else device, seed=seed, out_dir=str(out),
                            resume=str(resume) if resume is not None else None, tokenizer_dir=str(student))
        cfg.validate()
        return cfg


def with_cached_topk(settings: DistillSettings, teacher, *, trust_remote_code: bool = False) -> DistillSettings:
    """The settings with `kd_topk` of the cached teacher logits; a cache of another teacher or another k
    is refused before anything else."""
    if settings.teacher_logits is None:
        return settings
    from ..distillation.teacher_logits import TeacherLogits

    cache = TeacherLogits.open(Path(settings.teacher_logits))
    cache.check_teacher(checkpoint_identity(teacher, trust_remote_code=trust_remote_code), teacher)
    if settings.kd_topk not in (None, cache.k):
        raise ValueError(f"--kd-topk {settings.kd_topk}, but the teacher logits in {settings.teacher_logits} keep the "
                         f"top {cache.k}; leave --kd-topk out, or compute them again with `hybridprune teacher-logits "
                         f"--top-k {settings.kd_topk}`")
    return dataclasses.replace(settings, kd_topk=cache.k)


def check_placement(settings: DistillSettings) -> None:
    """The teacher's device (or device map) is one this machine has, and not both are given."""
    from ..checkpoint.devices import check_device, check_device_map

    check_device(settings.teacher_device, "--teacher-device")
    check_device_map(settings.teacher_device_map, "--teacher-device-map")
    if settings.teacher_device and settings.teacher_device_map:
        raise ValueError("give --teacher-device or --teacher-device-map, not both")


def checkpoint_identity(path: Path | str, *, trust_remote_code: bool = False) -> str | None:
    """The fingerprint of the safetensors checkpoint `path` (a directory, shipped teacher or Hub id), from its files (a few sampled windows per
    tensor, no model built); None when it has no safetensors weights to read."""
    from ..checkpoint.files import CheckpointFiles, CheckpointFormatError
    from ..checkpoint.fingerprint import checkpoint_fingerprint
    from ..checkpoint.load import load_config, resolve

    path = resolve(path, role="teacher")  # a shipped teacher's name or a Hub id is a directory from here on
    try:
        files = CheckpointFiles(path)
    except CheckpointFormatError:
        return None  # the model loader names what is wrong with it
    return checkpoint_fingerprint(files, load_config(path, trust_remote_code=trust_remote_code, role="teacher"))


def _forecast(teacher, student, cfg, seq_len, bf16, device, trust_remote_code):
    """Distillation's memory forecast, from the two configs (`hybridprune.checkpoint.forecast`)."""
    from ..architectures import get_adapter
    from ..distillation.chunked_loss import auto_chunk_size
    from ..checkpoint.forecast import forecast_distill
    from ..checkpoint.load import load_config

    t_cfg = load_config(teacher, trust_remote_code=trust_remote_code, role="teacher")
    s_cfg = load_config(student, trust_remote_code=trust_remote_code, role="student")
    t_adapter, s_adapter = get_adapter(t_cfg), get_adapter(s_cfg)
    student_dims = s_adapter.dims(s_cfg)
    chunk = cfg.chunk_size or auto_chunk_size(student_dims.vocab_size, device)
    return forecast_distill(s_adapter, t_adapter.dims(t_cfg), student_dims, micro_batch=cfg.micro_batch,
                            seq=seq_len, weight_bytes=4, teacher_weight_bytes=2 if bf16 else 4, chunk_positions=chunk,
                            chunk=t_adapter.scan_chunk(t_cfg), device=str(device),
                            teacher_adapter=t_adapter)


def _run_names() -> tuple[str, ...]:
    """What a distillation run writes in --out before its first checkpoint."""
    from ..distillation.checkpoint import CHECKPOINT_DIR
    from ..distillation.export import LOG_FILE, PLOT_FILE
    from ..distillation.trackers import TENSORBOARD_DIR, WANDB_DIR

    return TOKENS_DIR, CHECKPOINT_DIR, LOG_FILE, PLOT_FILE, TENSORBOARD_DIR, WANDB_DIR


def _has_checkpoint(out: Path) -> bool:
    from ..distillation.checkpoint import CHECKPOINT_DIR, list_checkpoints

    return bool(list_checkpoints(out / CHECKPOINT_DIR))


def _token_dir(env, r: _Run, tokenizer, settings: DistillSettings) -> Path:
    """The data itself when it is a token directory; else the run's own `tokens/`, written once by the main
    process (reused on --resume without reading the text again)."""
    from ..data.shards import is_token_dir
    from ..distillation.dist import barrier
    from ..output.atomic import claim

    if is_token_dir(r.data):
        if settings.chat:
            raise ValueError(f"--chat applies to text; {r.data} is already tokenized (as conversations or not, as its "
                             "manifest says): drop --chat")
        return Path(r.data).expanduser()
    tokens = Path(r.out) / TOKENS_DIR
    if env.is_main:
        from ..data.tokenize import tokenize_to

        claim(r.out, [TOKENS_DIR])
        tokenize_to(tokens, r.data, tokenizer, text_field=r.text_field, chat=settings.chat, overwrite=r.overwrite,
                    num_proc=settings.num_proc, say=lambda m: r.voice.say(m, soft_wrap=True, highlight=False))
    barrier(env)
    return tokens


def _teacher_logits(directory: Path, train, token_dir: Path, tokenizer):
    """The cached teacher logits, checked against this run's tokenizer, token directory and training
    samples before any model is loaded."""
    from ..data.shards import read_manifest
    from ..data.tokenize import tokenizer_identity
    from ..distillation.data import as_token_data
    from ..distillation.teacher_logits import TeacherLogits

    cache = TeacherLogits.open(directory)
    identity = tokenizer_identity(tokenizer) if hasattr(tokenizer, "backend_tokenizer") else None
    cache.check_run(k=None, token_manifest=read_manifest(token_dir), tokenizer_identity=identity)
    data = as_token_data(train)
    cache.check(data.fingerprint(), len(data), data.seq_len)
    return cache


def _train_data(token_dir: Path, seq_len: int, seed: int, num_samples: int | None):
    """The train split's windows, read lazily from the shards (`num_samples`: a seeded subset)."""
    import torch

    from ..data.shards import ShardWindows

    windows = ShardWindows(token_dir, "train", seq_len, seed=seed)
    if num_samples is None or num_samples >= len(windows):
        return windows
    pick = torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed))[:num_samples]
    return torch.utils.data.Subset(windows, pick.tolist())


@dataclass
class Models:
    """The two checkpoints of a distillation and how they load (`trust_remote_code`: their own code)."""

    teacher: Path
    student: Path
    trust_remote_code: bool = False


def run(settings: DistillSettings, models: Models, data: str, out: Path, *, seed: int = 0, text_field: str = "text",
        device: str | None = None, resume: Path | None = None, overwrite: bool = False, force: bool = False,
        check_memory: bool = True, voice: Voice = SILENT, loader: Loader | None = None):
    """Distil `models.student` from `models.teacher` on `data` (text, tokenized once into `out/tokens`, or a
    token directory) into `out`; `resume`: the run directory to continue from its newest checkpoint.
    `voice.console` shows the trainer's progress; `loader` gives the models and tokenizer (private
    copies: they are trained in their own precision). Returns the trainer (its `history`, `step`,
    `total_steps`)."""
    from ..distillation.dist import setup as dist_setup
    from ..distillation.dist import teardown

    settings = with_cached_topk(settings, models.teacher, trust_remote_code=models.trust_remote_code)
    cfg = settings.trainer_config(out, student=models.student, seed=seed, device=device, resume=resume)
    from ..distillation.schedule import warmup_note

    check_placement(settings)
    r = _Run(data=data, out=out, seed=seed, text_field=text_field, overwrite=overwrite, force=force,
             check_memory=check_memory, voice=voice, loader=loader or Loader())
    note = warmup_note(cfg.warmup, cfg.total_steps(settings.seq_len), cfg.lr)
    if note:
        voice.warn(note)
    env = dist_setup(cfg.device)  # joins the torchrun group (or the recipe's); the trainer reuses it
    try:
        return _train(env, settings, cfg, models, r)
    finally:
        teardown(env)


@dataclass
class _Run:
    data: str
    out: Path
    seed: int
    text_field: str
    overwrite: bool
    force: bool
    check_memory: bool
    voice: Voice
    loader: Loader


def _train(env, s: DistillSettings, cfg, models: Models, r: _Run):
    import torch

    from ..data.samples import check_token_dir
    from ..distillation import Distiller
    from ..distillation.placement import use_bf16
    from ..output.atomic import remove_owned

    bf16 = use_bf16(cfg, env.device)  # the teacher only runs forward: under bf16 it is held in bf16
    trust = models.trust_remote_code
    if env.is_main and r.check_memory:
        say_forecast(r.voice, _forecast(models.teacher, models.student, cfg, s.seq_len, bf16, env.device, trust),
                     force=r.force, lower="--micro-batch or --seq-len (or --chunk-size)")
    loading = LoadSettings(trust_remote_code=trust)
    try:
        tokenizer = r.loader.tokenizer(models.student, loading, role="student", keep=False)
    except ValueError:
        tokenizer = r.loader.tokenizer(models.teacher, loading, role="teacher", keep=False)
    token_dir = _token_dir(env, r, tokenizer, s)
    train = _train_data(token_dir, s.seq_len, r.seed, s.num_samples)
    cache = _teacher_logits(Path(s.teacher_logits), train, token_dir, tokenizer) if s.teacher_logits else None
    t_model, s_model = _load_models(r.loader, models, bf16, s.teacher_device_map)
    vocab = s_model.get_output_embeddings().weight.shape[0]
    if cache is not None:  # its ids were checked in range of the head that computed them: of this one too?
        cache.check_vocab(vocab)
    check_token_dir((train.dataset if isinstance(train, torch.utils.data.Subset) else train).manifest, token_dir,
                    vocab, tokenizer)
    val = _validation(env, s, r, token_dir, tokenizer, vocab)
    if env.is_main:
        r.voice.say(f"distilling {models.student} from {models.teacher}: {len(train)} training samples × {s.seq_len} "
                    "tokens" + (f", {len(val)} validation samples" if val is not None else "")
                    + f", {env.world_size} process(es) on {env.device}")
    trainer = Distiller(t_model, s_model, train, cfg, val_data=val, console=r.voice.console, teacher_logits=cache)
    if r.overwrite and env.is_main:
        remove_owned(r.out, keep=(TOKENS_DIR,))  # only now that both models loaded: a failed start keeps the earlier run
    trainer.run()
    return trainer


def _load_models(loader: Loader, models: Models, bf16: bool, teacher_device_map: str | None):
    """The teacher (bf16 under a bf16 run, placed by the trainer or spread by a device map) and the student
    (fp32 master weights), on the CPU until the trainer places them: private copies (`keep=False`)."""
    trust = models.trust_remote_code
    teacher = loader.model(models.teacher, LoadSettings(dtype="bfloat16" if bf16 else "float32", device="cpu",
                                                   trust_remote_code=trust, device_map=teacher_device_map),
                           role="teacher", keep=False)
    student = loader.model(models.student, LoadSettings(dtype="float32", device="cpu", trust_remote_code=trust),
                           role="student", keep=False)
    return teacher, student


def _validation(env, s: DistillSettings, r: _Run, token_dir: Path, tokenizer, vocab: int):
    from ..data import DataError, load_token_samples

    if not s.val_samples:
        return None
    try:
        return load_token_samples(token_dir, tokenizer, seq_len=s.seq_len, num_samples=s.val_samples,
                                  split="validation", seed=r.seed, model_vocab_size=vocab)
    except DataError as exc:
        if env.is_main:
            r.voice.warn(f"no validation: {exc}")
        return None
