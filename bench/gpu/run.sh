#!/usr/bin/env bash
# One command for a lent GPU machine: install what is missing, then measure Nemotron-H 8B against its
# 4B prune side by side (bench/gpu/nemotron_8b_speed.py), then both in vLLM at the paper's setting
# (64K in, 1K out; VLLM_SETTINGS=paper,8k adds 8K). Output under $OUT; about 7 minutes, plus up to
# VLLM_BUDGET_S (300 s) for vLLM.
# Every install is best effort: without the Mamba kernels the measurement runs (and says) the PyTorch
# fallback; without vLLM its comparison is skipped.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench-gpu-out}
mkdir -p "$OUT"
PY=${PY:-python3}
step() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/log.txt"; }

if ! "$PY" -c "import hybridprune" 2>/dev/null; then
    step "installing hybridprune"
    "$PY" -m pip install -q -e . >>"$OUT/install.txt" 2>&1 || step "pip install -e . failed (see install.txt)"
fi
for pkg in causal_conv1d mamba_ssm; do
    if ! "$PY" -c "import $pkg" 2>/dev/null; then
        step "installing ${pkg//_/-} (120 s at most)"
        timeout 120 "$PY" -m pip install -q --no-build-isolation "${pkg//_/-}" >>"$OUT/install.txt" 2>&1 \
            || step "${pkg//_/-} not installed: the PyTorch fallback will run"
    fi
done
if ! "$PY" -c "import vllm" 2>/dev/null; then
    step "installing vllm (90 s at most)"
    timeout 90 "$PY" -m pip install -q vllm >>"$OUT/install.txt" 2>&1 || step "vllm not installed: skipped"
fi
step "measuring"
OUT="$OUT" "$PY" bench/gpu/nemotron_8b_speed.py --out "$OUT" --budget-s "${BUDGET_S:-330}" \
    --vllm-settings "${VLLM_SETTINGS:-paper}" --vllm-budget-s "${VLLM_BUDGET_S:-300}"
