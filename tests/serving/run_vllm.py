"""Runs inside the vLLM venv: greedy token ids for each job, one JSON line per event.

    python run_vllm.py JOBS.json OUT.jsonl

A job is {"id", "model", "prompts", "new_tokens"}. Before a job a {"start": id} line is written, after it
{"id", "tokens"} or {"id", "error"}: when the engine kills the process, the caller knows which job did it.
"""

import gc
import json
import os
import sys
import traceback

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process: no spawn per model
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(jobs_path, out_path):
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    jobs = json.load(open(jobs_path))
    with open(out_path, "a") as out:
        def emit(rec):
            out.write(json.dumps(rec) + "\n")
            out.flush()

        emit({"version": vllm.__version__})
        for job in jobs:
            emit({"start": job["id"]})
            llm = None
            try:
                llm = LLM(model=job["model"], dtype="float32", enforce_eager=True, skip_tokenizer_init=True,
                          max_model_len=128, max_num_seqs=4, seed=0, trust_remote_code=False,
                          enable_prefix_caching=False)
                params = SamplingParams(temperature=0.0, max_tokens=job["new_tokens"], ignore_eos=True,
                                        detokenize=False)
                outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in job["prompts"]], params,
                                    use_tqdm=False)
                emit({"id": job["id"], "tokens": [list(o.outputs[0].token_ids) for o in outs]})
            except Exception as e:  # the engine refused or crashed on this model: that is the result
                tail = traceback.format_exc().strip().splitlines()[-3:]
                emit({"id": job["id"], "error": f"{type(e).__name__}: {e}"[:2000], "trace": tail})
            finally:
                del llm
                gc.collect()


if __name__ == "__main__":
    main(*sys.argv[1:3])
