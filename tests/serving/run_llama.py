"""Runs inside the llama.cpp venv: convert each checkpoint to an f32 GGUF and give greedy token ids.

    python run_llama.py JOBS.json OUT.jsonl LLAMA_CPP_DIR

Same job and output format as run_vllm.py. A converter that refuses is a result ({"stage": "convert"}); a
runtime GGML_ASSERT aborts this process, which the caller sees after the job's {"start"} line.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def convert(job, llama_cpp_dir):
    gguf = Path(job["workdir"]) / "model-f32.gguf"
    if gguf.exists():
        gguf.unlink()
    proc = subprocess.run([sys.executable, str(HERE / "convert_gguf.py"), llama_cpp_dir, job["model"], str(gguf),
                           *job.get("convert_args", [])],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return None, (lines[-1] if lines else f"converter exited {proc.returncode}"), lines[-4:]
    return gguf, None, None


def greedy(llm, prompt, n):
    import numpy as np

    llm.reset()
    llm.eval(prompt)
    out = []
    for _ in range(n):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(tok)
        llm.eval([tok])
    return out


LOG: list[str] = []  # llama.cpp's own log: a failed load says why only there


def capture_log(llama_cpp):
    import ctypes

    @llama_cpp.llama_log_callback
    def _keep(level, text, user_data):
        LOG.append(text.decode("utf-8", "replace").strip())  # levels differ between ggml versions: keep all

    capture_log.callback = _keep  # a ctypes callback must outlive the registration
    llama_cpp.llama_log_set(_keep, ctypes.c_void_p(0))


def main(jobs_path, out_path, llama_cpp_dir):
    import llama_cpp

    capture_log(llama_cpp)

    jobs = json.load(open(jobs_path))
    with open(out_path, "a") as out:
        def emit(rec):
            out.write(json.dumps(rec) + "\n")
            out.flush()

        emit({"version": llama_cpp.__version__})
        for job in jobs:
            emit({"start": job["id"]})
            gguf, error, trace = convert(job, llama_cpp_dir)
            if error:
                emit({"id": job["id"], "stage": "convert", "error": error[:2000], "trace": trace})
                continue
            emit({"converted": job["id"]})
            LOG.clear()
            try:
                llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=128, n_batch=128, n_threads=int(
                    os.environ.get("LLAMA_THREADS", "2")), logits_all=True, verbose=True, seed=0)  # verbose: stderr not redirected, so a GGML_ASSERT reaches the log
                tokens = [greedy(llm, p, job["new_tokens"]) for p in job["prompts"]]
                emit({"id": job["id"], "tokens": tokens})
                del llm
            except Exception as e:
                why = " | ".join(ln for ln in LOG if any(w in ln.lower() for w in ("error", "fail", "wrong", "missing")))[-1500:]
                emit({"id": job["id"], "stage": "load", "error": f"{type(e).__name__}: {e}"[:500] + (f" ({why})" if why else "")})


if __name__ == "__main__":
    main(*sys.argv[1:4])
