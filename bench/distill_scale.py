"""Distillation at scale (issue 19): token shards, peak RSS and time to the first step as the corpus
grows, tokenization throughput, and the top-k vs full-vocabulary KD gap. One thread throughout
(`OMP_NUM_THREADS=1`, `RAYON_NUM_THREADS=1`); timings come from a shared machine.

Parts (each writes its JSON to --json-dir):

- `tokenize`: a generated JSONL slice (`--tok-docs` documents, written to a temp dir) through
  `hybridprune tokenize` end to end (read with `datasets`, tokenize, write shards) against the
  tokenizer's own batch call on the same texts already in memory; and `--num-proc` 1 vs 2 (`--num-proc`)
  side by side, with the load average meanwhile and a check that both wrote the same bytes.
- `rss`: token shards of 10M, 100M and 1B random tokens written directly (uint16, the bundled
  tokenizer's 4096-token vocabulary) into a temp dir (never shipped); for each, `hybridprune distill
  --data DIR` in a fresh process: peak RSS (`VmHWM`) and the time from process start to the first
  step's log line, fresh and with `--resume`.
- `topk`: the shipped tiny teacher and a student pruned from it; the same short distillation with full
  KD and with top-k KD (k = 32, 128, 1024; online and from cached logits), then the full-vocabulary
  KL of each student against the teacher on validation text; step time and peak RSS per mode.

Usage: python bench/distill_scale.py [rss|tokenize|topk ...] [--json-dir bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", RAYON_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
           PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
WORDS = ("the king queen lord lady sword crown night day love death honour grace fool heart blood speak come go "
         "stay fly hear see know think swear weep laugh sleep wake fight yield sweet fair foul gentle noble").split()

# A CLI run that reports its peak RSS when it exits, and its own CPU time (user + system, which the
# other users of a shared machine do not inflate) when the first step's line is printed.
WRAP = ("import atexit, os, runpy, sys, time\n"
        "def _peak():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'): sys.stderr.write('PEAK_RSS_KB ' + line.split()[1] + '\\n')\n"
        "atexit.register(_peak)\n"
        "import torch; torch.set_num_threads(1)\n"
        "from hybridprune.distillation import run_log as _r\n"
        "_pl = _r.plain_line\n"
        "def _line(*a, **k):\n"
        "    t = os.times(); sys.stderr.write(f'FIRST_STEP_CPU {t.user + t.system}\\n'); _r.plain_line = _pl\n"
        "    return _pl(*a, **k)\n"
        "_r.plain_line = _line\n"
        "sys.argv = ['hybridprune', *sys.argv[1:]]\n"
        "runpy.run_module('hybridprune', run_name='__main__')\n")


class LoadSampler:
    """The 1-minute load average, sampled every second while a run goes on (the machine is shared:
    the wall-clock times mean little without it)."""

    def __init__(self):
        import threading

        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(1.0)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        s = self.samples or [os.getloadavg()[0]]
        return {"load_min": min(s), "load_mean": sum(s) / len(s), "load_max": max(s)}


def _cli(args) -> dict:
    """Run the CLI; peak RSS, and seconds from start to the first 'step N/' log line (and to exit),
    with the machine's load average meanwhile."""
    with LoadSampler() as load:
        rec = _cli_run(args)
    return {**rec, **load.summary()}


def _cli_run(args) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", WRAP, *map(str, args)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    first, peak, cpu, tail = None, None, None, []
    for line in proc.stdout:
        if line.startswith("FIRST_STEP_CPU"):
            cpu = float(line.split()[1])
        if first is None and line.startswith("step ") and "tok/s" in line:
            first = time.perf_counter() - t0
        if line.startswith("PEAK_RSS_KB"):
            peak = int(line.split()[1]) * 1024
        tail = (tail + [line])[-30:]
    proc.wait()
    if proc.returncode != 0:
        raise RuntimeError("".join(tail))
    return {"first_step_s": first, "first_step_cpu_s": cpu, "total_s": time.perf_counter() - t0,
            "peak_rss_bytes": peak}


# ---------------------------------------------------------------------------------------------- rss

def write_shards(directory: Path, tokens: int, vocab: int = 4096, shard_tokens: int = 1 << 28) -> None:
    """A token directory of `tokens` random ids (train) plus a small validation split, written directly."""
    import numpy as np

    from hybridprune.data import tokenizer_path
    from hybridprune.data.shards import FORMAT
    from hybridprune.data.tokenize import tokenizer_identity
    from transformers import AutoTokenizer

    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", tokens), ("validation", 1 << 16)):
        (directory / split).mkdir(parents=True)
        shards, left, i = [], n, 0
        while left:
            m = min(left, shard_tokens)
            name = f"{split}/s0-{i:05d}.tok"
            with open(directory / name, "wb") as f:
                for s in range(0, m, 1 << 24):
                    f.write(rng.integers(0, vocab, min(1 << 24, m - s), dtype=np.uint16).tobytes())
            shards.append({"file": name, "tokens": m})
            left, i = left - m, i + 1
        splits[split] = {"0": {"shards": shards, "documents": 0, "tokens": n}}
    tok = AutoTokenizer.from_pretrained(tokenizer_path())
    manifest = {"format": FORMAT, "data": "generated", "sources": [{"source": "generated", "weight": None,
                "fingerprint": str(tokens)}], "tokenizer": tokenizer_identity(tok), "text_field": "text",
                "chat": False, "id": f"bench-{tokens}", "dtype": "uint16", "splits": splits,
                "max_token_id": vocab - 1, "weights": None, "num_tokens": tokens + (1 << 16),
                "fingerprint": f"bench-{tokens}"}
    (directory / "manifest.json").write_text(json.dumps(manifest))


def bench_rss(sizes, seq_len: int) -> dict:
    from hybridprune.data import teacher_path

    out = {"seq_len": seq_len, "runs": []}
    with tempfile.TemporaryDirectory(prefix="hp-distill-scale-") as tmp:
        for n in sizes:
            d = Path(tmp) / f"tokens-{n}"
            t0 = time.perf_counter()
            write_shards(d, n)
            write_s = time.perf_counter() - t0
            run = Path(tmp) / f"run-{n}"
            args = ["distill", "--teacher", teacher_path(), "--student", teacher_path(), "--data", d,
                    "--seq-len", seq_len, "--global-batch", 4, "--micro-batch", 4, "--val-samples", 4,
                    "--steps", 4, "--out", run]
            fresh = _cli([*args, "--stop-at-step", 2])
            resumed = _cli([*args, "--resume", run])
            rec = {"tokens": n, "windows": n // seq_len, "write_s": write_s, "fresh": fresh, "resumed": resumed}
            print(json.dumps(rec), flush=True)
            out["runs"].append(rec)
            import shutil

            shutil.rmtree(d)
            shutil.rmtree(run)
    base = out["runs"][0]["fresh"]["peak_rss_bytes"]
    out["max_rss_growth"] = max(r[k]["peak_rss_bytes"] for r in out["runs"] for k in ("fresh", "resumed")) / base - 1
    return out


# ----------------------------------------------------------------------------------------- tokenize

def bench_tokenize(docs: int, num_procs=(1, 2)) -> dict:
    import random

    import torch
    from transformers import AutoTokenizer

    from hybridprune.data import tokenizer_path
    from hybridprune.data.tokenize import tokenize_to

    torch.set_num_threads(1)
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(100, 400))) + "." for _ in range(docs)]
    tok = AutoTokenizer.from_pretrained(tokenizer_path())
    with tempfile.TemporaryDirectory(prefix="hp-tok-") as tmp:
        src = Path(tmp) / "corpus.jsonl"
        with open(src, "w") as f:
            for t in texts:
                f.write(json.dumps({"text": t}) + "\n")
        t0 = time.perf_counter()
        n_raw = 0
        for s in range(0, len(texts), 1024):
            n_raw += sum(len(x) + 1 for x in tok(texts[s:s + 1024], add_special_tokens=False)["input_ids"])
        raw_s = time.perf_counter() - t0
        runs, digests = [], set()
        for n in num_procs:  # serial and parallel side by side, under the same load
            with LoadSampler() as load:
                t0 = time.perf_counter()
                m = tokenize_to(Path(tmp) / f"tokens-{n}", str(src), tok, num_proc=n)
                wall = time.perf_counter() - t0
            digests.add(_tree_digest(Path(tmp) / f"tokens-{n}"))
            runs.append({"num_proc": n, "s": wall, "tokens_per_s": m["num_tokens"] / wall, **load.summary()})
            print(json.dumps(runs[-1]), flush=True)
        size = src.stat().st_size
    serial = runs[0]["tokens_per_s"]
    for r in runs:
        r["speedup_vs_serial"] = r["tokens_per_s"] / serial
    return {"documents": docs, "bytes": size, "tokens": m["num_tokens"], "raw_tokens": n_raw,
            "tokenizer_batch_tokens_per_s": n_raw / raw_s, "hybridprune_tokenize_tokens_per_s": serial,
            "tokenizer_batch_s": raw_s, "hybridprune_tokenize_s": runs[0]["s"], "num_proc_runs": runs,
            "same_bytes": len(digests) == 1, "cpu_count": os.cpu_count()}


def _tree_digest(d: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted(x for x in d.rglob("*") if x.is_file() and x.name != ".hybridprune-outputs"):
        h.update(str(p.relative_to(d)).encode() + p.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------- topk

TOPK_CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(1)
from hybridprune.checkpoint.load import load_model, load_tokenizer
from hybridprune.data import load_token_samples, teacher_path
from hybridprune.distillation import Distiller, DistillConfig
from hybridprune.distillation import teacher_logits as tl
from hybridprune.distillation.data import as_token_data
from hybridprune.distillation.loss import kd_loss_from_logits
from hybridprune.distillation.models import final_hidden, head_of
from hybridprune.importance.calibrate import calibrate
from hybridprune.pruning.apply import prune
mode, k, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
teacher = load_model(teacher_path(), dtype=torch.float32, role="teacher")
tok = load_tokenizer(teacher_path())
kw = dict(seq_len=256, seed=0, model_vocab_size=teacher.config.vocab_size)
calib = load_token_samples("shakespeare", tok, num_samples=16, split="calibration", **kw)
train = load_token_samples("shakespeare", tok, num_samples=steps * 8, split="train", **kw)
val = load_token_samples("shakespeare", tok, num_samples=32, split="validation", **kw)
scores = calibrate(teacher, calib, batch_size=8, depth_samples=0)
student = prune(teacher, scores, "hidden_size=192,ffn_hidden_size=512,mamba_num_heads=12")
cache = None
if mode == "cached":
    t0 = time.perf_counter()
    with torch.no_grad():
        cache = tl.compute(lambda i, m: final_hidden(teacher, i, m), head_of(teacher), as_token_data(train), k, batch_size=8)
    cache_s = time.perf_counter() - t0
cfg = DistillConfig(steps=steps, global_batch=8, micro_batch=8, lr=1e-3, min_lr=1e-4, warmup=steps // 10, seed=0,
                    progress=False, export=False, plot=False, kd_topk=None if mode == "full" else k)
d = Distiller(teacher, student, train, cfg, teacher_logits=cache)
times = []
base = int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]) * 1024
open('/proc/self/clear_refs', 'w').write('5')
for _ in range(steps):
    t0 = time.perf_counter(); d.train_step(); times.append(time.perf_counter() - t0)
peak = int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) * 1024
student.eval()
with torch.no_grad():
    kl = sum(float(kd_loss_from_logits(student(input_ids=b["input_ids"]).logits, teacher(input_ids=b["input_ids"]).logits))
             for b in val.batches(8)) / val.num_batches(8)
print("RESULT " + json.dumps({"mode": mode, "k": k if mode != "full" else None, "val_full_kl": kl,
      "step_s_median": sorted(times[1:])[len(times[1:]) // 2], "peak_rss_over_start_bytes": peak - base,
      "cache_s": cache_s if mode == "cached" else None,
      "teacher_bytes_per_token": 4 * teacher.config.vocab_size if mode == "full" else 8 * k + 4}))
"""


def bench_topk(ks, steps: int, jobs: int = 1, cached=(128,)) -> dict:
    """Full KD, online top-k at each k, and cached top-k at the k in `cached` (its loss is the online
    run's; the cache saves the teacher's forward), `jobs` at a time."""
    from concurrent.futures import ThreadPoolExecutor

    def one(mode_k):
        mode, k = mode_k
        proc = subprocess.run([sys.executable, "-c", TOPK_CHILD, mode, str(k), str(steps)], env=ENV,
                              capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(proc.stderr[-3000:])
        rec = json.loads(line[7:])
        print(json.dumps(rec), flush=True)
        return rec

    todo = [("full", 0)] + [("online", k) for k in ks] + [("cached", k) for k in cached]
    with ThreadPoolExecutor(jobs) as pool:
        runs = list(pool.map(one, todo))
    full = runs[0]["val_full_kl"]
    for r in runs:
        r["gap_vs_full"] = r["val_full_kl"] - full
    return {"steps": steps, "global_batch": 8, "seq_len": 256, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("parts", nargs="*", default=["tokenize", "rss", "topk"])
    ap.add_argument("--sizes", default="10000000,100000000,1000000000")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--tok-docs", type=int, default=20000)
    ap.add_argument("--num-proc", default="1,2", help="tokenize: process counts to compare (the first is the baseline)")
    ap.add_argument("--topk", default="32,128,1024")
    ap.add_argument("--topk-steps", type=int, default=40)
    ap.add_argument("--jobs", type=int, default=1, help="topk runs at a time (each one thread)")
    ap.add_argument("--json-dir", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    os.environ.update({k: v for k, v in ENV.items() if k != "PYTHONPATH"})
    out = Path(a.json_dir)
    out.mkdir(parents=True, exist_ok=True)
    for part in a.parts:
        if part == "tokenize":
            res = bench_tokenize(a.tok_docs, [int(x) for x in a.num_proc.split(",")])
        elif part == "rss":
            res = bench_rss([int(float(x)) for x in a.sizes.split(",")], a.seq_len)
        else:
            res = bench_topk([int(x) for x in a.topk.split(",")], a.topk_steps, a.jobs)
        print(json.dumps(res, indent=1))
        (out / f"distill_scale_{part}.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
