"""What the six paper experiments (`bench/exp_*.py`, written up in docs/results.md) share: one thread by
default, a shipped teacher (`--teacher`: the tiny Nemotron-H, or the tiny Qwen3.5 for the Gated
DeltaNet experiments, whose outputs are named `gdn_<experiment>`) and its data splits (or, with
`--smoke`, a tiny random model of the same family and random tokens, so the test suite can run every
script in seconds), the one short distillation every arm gets, and writing each experiment's JSON,
Markdown table and plot side by side.

Fixed settings, identical for every arm of every experiment (so arms differ only in what is tested):

- calibration: `calibration` split, windows of 128 tokens, 128 samples, seed = the run's seed;
- validation: `validation` split, 64 windows of 256 tokens, seed 0 (the teacher's own eval set);
- short KD: `train` split (windows of 128 tokens), forward KL on logits, AdamW, peak LR 1e-3 with 5 warmup
  steps and cosine to 1e-4, global batch 8, fp32, `KD_STEPS` steps; the run's seed orders the data.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics  # noqa: F401  (re-exported for the scripts)
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs" / "results"

KD_STEPS = 40
KD = dict(global_batch=8, micro_batch=8, lr=1e-3, min_lr=1e-4, warmup=5, precision="fp32")
CALIB = dict(split="calibration", seq_len=128, num_samples=128)
VAL = dict(split="validation", seq_len=256, num_samples=64, seed=0)
TRAIN_SEQ = 128
#: result-file prefix per shipped teacher (the Mamba2 experiments keep their names)
PREFIX = {"tiny-nemotron-h": "", "tiny-qwen3-5": "gdn_"}


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny random model and random tokens: seconds, no meaning")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per arm (calibration sample and KD data order)")
    ap.add_argument("--kd-steps", type=int, default=None, help=f"short-KD steps per arm (default {KD_STEPS})")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--out", type=Path, default=None, help=f"where results go (default {DEFAULT_OUT})")
    ap.add_argument("--val-samples", type=int, default=VAL["num_samples"],
                    help=f"validation windows of 256 tokens (default {VAL['num_samples']}, the teacher's eval set)")
    ap.add_argument("--calib-samples", type=int, default=CALIB["num_samples"],
                    help=f"calibration windows of 128 tokens (default {CALIB['num_samples']})")
    ap.add_argument("--seed-list", default=None, help="run exactly these seeds (comma-separated), e.g. one per process")
    ap.add_argument("--teacher", choices=tuple(PREFIX), default="tiny-nemotron-h",
                    help="the shipped teacher (default tiny-nemotron-h; tiny-qwen3-5 for Gated DeltaNet)")
    return ap


@dataclass
class Setup:
    """The teacher, its data, and the run's fixed settings."""

    teacher: torch.nn.Module
    tokenizer: object | None
    val: object
    smoke: bool
    kd_steps: int
    seeds: list[int]
    out: Path
    name: str
    started: float
    teacher_name: str = "tiny-nemotron-h"
    calib_samples: int = CALIB["num_samples"]
    val_samples: int = VAL["num_samples"]

    def calib(self, seed: int, num_samples: int | None = None, split: str | None = None, seq_len: int | None = None):
        n = num_samples or self.calib_samples
        if self.smoke:
            return _random_tokens(min(n, 16), 16, seed + 100, self.teacher.config.vocab_size)
        from hybridprune.data import load_token_samples
        return load_token_samples("shakespeare", self.tokenizer, split=split or CALIB["split"],
                                  seq_len=seq_len or CALIB["seq_len"], num_samples=n, seed=seed)

    def train(self, seed: int, num_samples: int | None = None):
        n = num_samples or 8 * self.kd_steps
        if self.smoke:
            return _random_tokens(min(n, 16), 16, seed + 200, self.teacher.config.vocab_size)
        from hybridprune.data import load_token_samples
        return load_token_samples("shakespeare", self.tokenizer, split="train", seq_len=TRAIN_SEQ,
                                  num_samples=n, seed=1000 + seed)

    def loss(self, model) -> float:
        from hybridprune.evaluate import evaluate_loss
        return float(evaluate_loss(model, self.val, batch_size=8)["loss"])

    def kd(self, student, seed: int, steps: int | None = None) -> torch.nn.Module:
        """The one short distillation every arm gets: same tokens, steps and LR (only `seed` varies)."""
        import hybridprune as hp
        steps = steps or self.kd_steps
        return hp.distill(self.teacher, student, self.train(seed, 8 * steps), steps=steps, seed=seed,
                          progress=False, export=False, plot=False, **KD)

    def params(self, model) -> dict[str, int]:
        import hybridprune as hp
        adapter = hp.get_adapter(model)
        dims = adapter.dims(model.config)
        total = adapter.num_parameters(dims)
        emb = sum(p.numel() for p in (model.get_input_embeddings().weight, model.get_output_embeddings().weight))
        return {"total": int(total), "non_embedding": int(total - emb)}

    def write(self, rows: list[dict], table: str, settings: dict, fig=None) -> None:
        """`<out>/<name>.json` (rows + settings + runtime), `<name>.md` (the table) and `<name>.png`."""
        self.out.mkdir(parents=True, exist_ok=True)
        runtime = time.time() - self.started
        settings = {**settings, "teacher": self.teacher_name, "smoke": self.smoke, "seeds": self.seeds, "kd_steps": self.kd_steps,
                    "kd": KD, "calibration": {**CALIB, "num_samples": self.calib_samples},
                    "validation": {**VAL, "num_samples": self.val_samples}, "threads": torch.get_num_threads(),
                    "runtime_s": round(runtime, 1), "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}
        (self.out / f"{self.name}.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
        (self.out / f"{self.name}.md").write_text(table.rstrip() + f"\n\nRuntime: {runtime / 60:.1f} min "
                                                  f"({torch.get_num_threads()} thread).\n")
        if fig is not None:
            fig.savefig(self.out / f"{self.name}.png", dpi=110, bbox_inches="tight")
        print(table)
        print(f"runtime {runtime:.0f} s -> {self.out / self.name}.*")


def merge_runs(paths) -> tuple[list[dict], list[dict]]:
    """The rows of several runs of one script (e.g. one seed per process, `--seed-list N --out DIR`),
    the seedless rows (the unpruned teacher) from the first run only, and each run's settings."""
    rows, settings = [], []
    for k, path in enumerate(paths):
        data = json.loads(Path(path).read_text())
        rows += [r for r in data["rows"] if k == 0 or r.get("seed") is not None]
        settings.append(data["settings"])
    return rows, settings

def _random_tokens(n: int, t: int, seed: int, vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (n, t), generator=g)


def tiny_teacher(seed: int = 0):
    """A random Nemotron-H small enough for a smoke run: 4 Mamba heads per group in 2 groups, every block kind."""
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.for_model(
        "nemotron_h", vocab_size=96, hidden_size=48,
        layers_block_type=["linear_attention", "mlp", "full_attention", "linear_attention", "mlp"],
        mamba_num_heads=8, mamba_head_dim=8, n_groups=2, ssm_state_size=8, conv_kernel=4, chunk_size=8,
        num_attention_heads=4, num_key_value_heads=2, head_dim=12, intermediate_size=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def tiny_gdn_teacher(seed: int = 0):
    """A random Qwen3.5 text model small enough for a smoke run: 4 GDN value heads per key head in 2
    groups, 3 GDN layers to 1 gated attention layer."""
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.for_model(
        "qwen3_5_text", vocab_size=96, hidden_size=48, num_hidden_layers=4,
        layer_types=["linear_attention"] * 3 + ["full_attention"], linear_num_key_heads=2,
        linear_num_value_heads=8, linear_key_head_dim=8, linear_value_head_dim=8, linear_conv_kernel_dim=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=12, intermediate_size=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def setup(args, name: str) -> Setup:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.time()
    teacher_name = getattr(args, "teacher", "tiny-nemotron-h")
    name = PREFIX[teacher_name] + name
    if args.smoke:
        teacher, tok = (tiny_gdn_teacher() if teacher_name == "tiny-qwen3-5" else tiny_teacher()), None
        val = _random_tokens(8, 16, 0, teacher.config.vocab_size)
        kd_steps, seeds = args.kd_steps or 2, list(range(min(args.seeds, 2)))
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from hybridprune.data import load_token_samples, teacher_path
        teacher = AutoModelForCausalLM.from_pretrained(teacher_path(teacher_name), dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(teacher_path(teacher_name))
        val = load_token_samples("shakespeare", tok, **{**VAL, "num_samples": args.val_samples})
        kd_steps, seeds = args.kd_steps or KD_STEPS, list(range(args.seeds))
    if getattr(args, "seed_list", None):
        seeds = [int(x) for x in args.seed_list.split(",")]
    out = args.out or DEFAULT_OUT
    return Setup(teacher, tok, val, args.smoke, kd_steps, seeds, Path(out), name, started, teacher_name,
                 args.calib_samples, args.val_samples)


def spread(values: list[float]) -> str:
    """`mean ± sd (min–max)` of one arm over seeds."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def mean(values: list[float]) -> float:
    return statistics.mean(values)


def figure(ncols: int = 1, width: float = 5.5):
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, 3.8), squeeze=False)
    return fig, list(axes[0])


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two score vectors (average ranks for ties)."""
    from scipy.stats import spearmanr
    rho = spearmanr(a.double().flatten().numpy(), b.double().flatten().numpy()).statistic
    return float(rho) if rho == rho else 0.0
