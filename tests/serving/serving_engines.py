"""The engines, installed once into a cache outside the repo, and run on batches of jobs in their own venvs.

Each engine runs in its own process and venv (vLLM pins its own transformers and torch; llama.cpp's converter
wants transformers 4.57). A batch runs in one process to pay the import once; when the engine kills the
process (llama.cpp's GGML_ASSERT aborts), the job it was on is recorded as a crash and the rest go on in a
new process.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
INSTALL = REPO / "scripts" / "serving" / "install_engines.sh"
STEP = {"vllm": "vllm", "llama.cpp": "llama"}
RUNNER = {"vllm": "run_vllm.py", "llama.cpp": "run_llama.py"}


def cache_dir() -> Path:
    return Path(os.environ.get("HYBRIDPRUNE_SERVING_CACHE", "~/.cache/hybridprune-serving")).expanduser()


def llama_cpp_dir() -> Path:
    return next((cache_dir() / "src").glob("llama_cpp_python-*/vendor/llama.cpp"))


def python(engine: str) -> Path:
    return cache_dir() / f"{STEP[engine]}-venv" / "bin" / "python"


def ensure_installed(engine: str) -> dict:
    """Install `engine` unless its stamp is there (niced: the install compiles for ~15 min); its stamp."""
    stamp = cache_dir() / f"{STEP[engine]}.ok"
    if not stamp.is_file():
        subprocess.run(["nice", "-n", "19", "bash", str(INSTALL), STEP[engine]], check=True)
    return dict(line.split("=", 1) for line in stamp.read_text().split())


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def run_jobs(engine: str, jobs: list[dict], workdir: Path, per_job_s: float = 300) -> dict[str, dict]:
    """{job id: {"tokens": [...]} or {"error": ..., "stage": ...}} for every job, crashes included."""
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    pending = list(jobs)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", PYTHONPATH="")
    attempt = 0
    while pending:
        attempt += 1
        jobs_path, out_path = workdir / f"{STEP[engine]}-jobs-{attempt}.json", workdir / f"{STEP[engine]}-out-{attempt}.jsonl"
        log_path = workdir / f"{STEP[engine]}-log-{attempt}.txt"
        jobs_path.write_text(json.dumps(pending))
        out_path.unlink(missing_ok=True)
        cmd = ["nice", "-n", "10", str(python(engine)), str(HERE / RUNNER[engine]), str(jobs_path), str(out_path)]
        if engine == "llama.cpp":
            cmd.append(str(llama_cpp_dir()))
        t0 = time.monotonic()
        with open(log_path, "w") as log:
            try:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    timeout=120 + per_job_s * len(pending)).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        events = _read(out_path)
        started = None
        for ev in events:
            if "version" in ev:
                results.setdefault("_version", ev)
            elif "start" in ev:
                started = ev["start"]
            elif "id" in ev:
                results[ev["id"]] = ev
                started = None
        if started is not None:  # the process died on this job
            tail = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
            why = next((ln for ln in reversed(tail) if "GGML_ASSERT" in ln or "error" in ln.lower()), None)
            stage = "load" if any(ev.get("converted") == started for ev in events) else "engine"
            results[started] = {"id": started, "stage": stage, "crash": True,
                                "error": f"process died ({'timeout' if rc == 'timeout' else f'exit {rc}'}): "
                                         f"{(why or (tail[-1] if tail else ''))[:500]}"}
        left = [j for j in pending if j["id"] not in results]
        if len(left) == len(pending):
            raise RuntimeError(f"{engine} runner made no progress (exit {rc}, {time.monotonic() - t0:.0f} s); "
                               f"see {log_path}")
        pending = left
    return results
