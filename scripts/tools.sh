# Sourced by scripts/demo.sh and scripts/test.sh: makes sure the build tools are on PATH,
# installing what is missing into the project-local .tools/ (nothing outside the checkout).
#   cmake >= 3.20   from PyPI (cmake==3.31.10) into .tools/py when the system has none
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

need_cargo
ensure_cmake
