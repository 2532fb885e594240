#!/usr/bin/env bash
# The README's test command (and what CI runs): formatting, lints, the Rust unit and C-ABI
# integration tests, then the C examples, header hygiene, exported-symbol check and the
# find_package/pkg-config consumer under ctest.
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$VRAM_ROOT"
jobs=$(nproc)

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy (warnings are errors)"
cargo clippy --release --all-targets -- -D warnings
say "cargo test (unit tests, C-ABI integration tests, header check, Python record verifier)"
cargo test --release
say "GPU-only tests, shown (each says SKIPPED when this machine has no GPU)"
cargo test --release --test gpu -- --nocapture
say "cmake build + ctest (C examples, header C11/C++17, symbols, find_package consumer)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure
say "README 'Installing', verbatim: scripts/install.sh into a scratch prefix, pip install ./python into a fresh virtualenv"
prefix=$(mktemp -d)
./scripts/install.sh "$prefix"
for f in 'lib*/libvram.so' include/vram.h include/vram.hpp bin/vram 'lib*/cmake/vram/vramConfig.cmake' 'lib*/pkgconfig/vram.pc'; do
  # shellcheck disable=SC2086
  ls $prefix/$f >/dev/null 2>&1 || { say "install: $f is missing under the prefix"; exit 1; }
done
rm -rf "$prefix"
python3 -m venv --clear .tools/pytest-env
.tools/pytest-env/bin/pip install --quiet --disable-pip-version-check ./python
# The tests' own needs: pytest, NumPy, and torch (PyPI's build; on a machine without a GPU it
# runs on the CPU). VRAM_TEST_TORCH=0 leaves torch out (its cases then skip, saying why).
extra="pytest numpy"
[ "${VRAM_TEST_TORCH:-1}" = 0 ] || extra="$extra torch"
# shellcheck disable=SC2086
.tools/pytest-env/bin/pip install --quiet --disable-pip-version-check $extra
.tools/pytest-env/bin/python - <<'PY'
import numpy as np, vram
ctx = vram.Context(key=b"k" * 32)
shards = [ctx.seal("numpy", np.arange(1 << 16, dtype=np.float32))]
try:
    import torch
    shards.append(ctx.seal("torch", torch.arange(1 << 16, dtype=torch.bfloat16)))
except ImportError:
    print("python: torch not installed (VRAM_TEST_TORCH=0)")
assert all(ctx.verify(s).intact for s in shards)
print(f"python: import vram; sealed and verified {[s.name for s in shards]} on the {ctx.backend} backend: OK")
PY
say "Python package tests (pytest)"
.tools/pytest-env/bin/python -m pytest -q -rs python/tests
