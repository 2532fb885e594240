# Sourced by scripts/demo.sh and scripts/test.sh: makes sure the build tools are on PATH,
# installing what is missing into the project-local .tools/ (nothing outside the checkout).
#   cmake >= 3.20   from PyPI (cmake==3.31.10) into .tools/py when the system has none
#   nvcc 13.0       from PyPI (pins below, see docs/gpu.md) into .tools/cuda when there is no
#                   nvcc; the CUDA code is then always compiled (VRAM_CUDA=on), GPU or not
# shellcheck shell=bash

VRAM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VRAM_TOOLS="$VRAM_ROOT/.tools"
CMAKE_PIN="cmake==3.31.10"

say() { printf '[libvram] %s\n' "$*" >&2; }

need_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || { say "cargo not found: install Rust (https://rustup.rs) first"; exit 1; }
}

cmake_is_recent() {
  command -v cmake >/dev/null 2>&1 || return 1
  local v
  v=$(cmake --version | awk 'NR==1 {print $3}')
  [ "$(printf '%s\n3.20\n' "$v" | sort -V | head -n1)" = "3.20" ]
}

ensure_cmake() {
  if [ -x "$VRAM_TOOLS/py/bin/cmake" ]; then
    export PATH="$VRAM_TOOLS/py/bin:$PATH"
  fi
  if cmake_is_recent; then return; fi
  say "installing $CMAKE_PIN from PyPI into .tools/py"
  python3 -m venv "$VRAM_TOOLS/py"
  "$VRAM_TOOLS/py/bin/pip" install --quiet --disable-pip-version-check "$CMAKE_PIN"
  export PATH="$VRAM_TOOLS/py/bin:$PATH"
  cmake_is_recent || { say "cmake install failed"; exit 1; }
}

# nvcc and nvvm versions must match, or ptxas fails with "Unsupported .version".
CUDA_PINS="nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96"

tools_nvcc() {
  ls "$VRAM_TOOLS"/cuda/lib/python3*/site-packages/nvidia/cu13/bin/nvcc 2>/dev/null | head -n 1
}

ensure_nvcc() {
  if [ "${VRAM_CUDA:-}" = "off" ]; then return; fi
  if [ -n "${NVCC:-}" ] && [ -x "$NVCC" ]; then export VRAM_CUDA=${VRAM_CUDA:-on}; return; fi
  if [ -z "$(tools_nvcc)" ] && ! command -v nvcc >/dev/null 2>&1; then
    say "installing nvcc 13.0 from PyPI into .tools/cuda"
    python3 -m venv "$VRAM_TOOLS/cuda"
    # shellcheck disable=SC2086
    "$VRAM_TOOLS/cuda/bin/pip" install --quiet --disable-pip-version-check $CUDA_PINS
  fi
  local found
  found=$(tools_nvcc)
  [ -n "$found" ] || found=$(command -v nvcc || true)
  [ -n "$found" ] || { say "nvcc install failed"; exit 1; }
  export NVCC="$found"
  export VRAM_CUDA=${VRAM_CUDA:-on}
}

need_cargo
ensure_cmake
ensure_nvcc
