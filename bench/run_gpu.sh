#!/usr/bin/env bash
# CUDA build + full-size bench on a GPU machine with no registry access (the device tool's H100).
#
# Carried into the repository root beforehand (see bench/README.md, "GPU"), since the machine cannot download:
#   .carry/llama.cpp-*.tar.xz (or a .carry/llama.cpp tree, or LLAMA_CPP_DIR): the pinned llama.cpp source
#   .carry/wheels/*.whl, .carry/*.whl or .whl/*.whl: wheels the machine lacks (at least gguf)
# Writes into $OUT (the device tool's result folder; bench/out when unset): build.log, bench.log,
# bench-cuda.json, gpu.txt.
#
# Settings (environment): LLAMA_CPP_DIR, MODEL_DIR (/tmp/omni-full-size), QUANT (Q4_K_M | Q8_0),
# N_LAYER (36), CUDA_ARCH (90), PROMPT_TOKENS (512), GEN_TOKENS (128), RUNS (3), N_CTX (4096), SKIP_BUILD (0).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-$PWD/bench/out}
LLAMA_CPP_DIR=${LLAMA_CPP_DIR:-}
MODEL_DIR=${MODEL_DIR:-/tmp/omni-full-size}
QUANT=${QUANT:-Q4_K_M}
N_LAYER=${N_LAYER:-36}
CUDA_ARCH=${CUDA_ARCH:-90}
PROMPT_TOKENS=${PROMPT_TOKENS:-512}
GEN_TOKENS=${GEN_TOKENS:-128}
RUNS=${RUNS:-3}
N_CTX=${N_CTX:-4096}
SKIP_BUILD=${SKIP_BUILD:-0}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
START=$SECONDS

stamp() { echo "[$((SECONDS - START)) s] $*"; }

describe_machine() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nvcc --version | tail -2
  python3 --version
  nproc
  free -g | head -2
}

install_carried_wheels() {
  local wheels=()
  mapfile -t wheels < <(compgen -G ".whl/*.whl" || true; compgen -G ".carry/*.whl" || true; compgen -G ".carry/wheels/*.whl" || true)
  if [ "${#wheels[@]}" -gt 0 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "${wheels[@]}"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  python3 -c "import gguf, numpy; print('gguf', gguf.__file__)"
}

find_llama_cpp() {
  if [ -n "$LLAMA_CPP_DIR" ]; then
    return 0
  fi
  if [ -f .carry/llama.cpp/CMakeLists.txt ]; then
    LLAMA_CPP_DIR=$PWD/.carry/llama.cpp
    return 0
  fi
  local archive
  archive=$(compgen -G ".carry/llama.cpp*.tar.xz" | head -1 || true)
  if [ -z "$archive" ]; then
    echo "no llama.cpp source: carry .carry/llama.cpp-0c1e570.tar.xz or set LLAMA_CPP_DIR (bench/README.md)" >&2
    return 1
  fi
  rm -rf /tmp/llama-src && mkdir -p /tmp/llama-src
  tar -C /tmp/llama-src -xJf "$archive"
  LLAMA_CPP_DIR=$(dirname "$(compgen -G "/tmp/llama-src/*/CMakeLists.txt" | head -1)")
}

build_engine() {
  find_llama_cpp
  if [ ! -f "$LLAMA_CPP_DIR/CMakeLists.txt" ]; then
    echo "LLAMA_CPP_DIR=$LLAMA_CPP_DIR is not a llama.cpp tree (see bench/README.md)" >&2
    return 1
  fi
  echo "llama.cpp source: $LLAMA_CPP_DIR"
  # Dependencies are not resolved here (no registry): the bench needs numpy and gguf only.
  OMNI_CUDA=1 LLAMA_CPP_DIR="$LLAMA_CPP_DIR" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH" \
    python3 -m pip install -v --no-deps --no-build-isolation --no-index . >"$OUT/build.log" 2>&1 ||
    { tail -60 "$OUT/build.log"; return 1; }
  tail -3 "$OUT/build.log"
}

check_cuda() {
  # Run outside the source tree so the installed package is the one imported.
  (cd /tmp && python3 -c "
import omni_engine as oe
info = oe.system_info()
print('omni_engine', oe.__version__, 'llama.cpp', oe.LLAMA_CPP_COMMIT, info)
raise SystemExit(0 if info['cuda'] else 'omni_engine was built without CUDA')
")
}

stamp "machine"
describe_machine | tee "$OUT/gpu.txt"
stamp "wheels"
install_carried_wheels
if [ "$SKIP_BUILD" != 1 ]; then
  stamp "build (CUDA arch $CUDA_ARCH, log in build.log)"
  build_engine
fi
check_cuda
stamp "bench (writes the full-size $QUANT LLM into $MODEL_DIR first)"
(cd /tmp && python3 -m omni_app.bench --make-full-size-models "$MODEL_DIR" --quant "$QUANT" --n-layer "$N_LAYER" \
  --n-ctx "$N_CTX" --n-gpu-layers -1 --prompt-tokens "$PROMPT_TOKENS" --gen-tokens "$GEN_TOKENS" \
  --runs "$RUNS" --json-out "$OUT/bench-cuda.json") 2>&1 | tee "$OUT/bench.log"
stamp "done"
