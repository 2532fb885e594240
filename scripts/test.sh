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
say "Python package: pip install ./python into a fresh virtualenv, then pytest (torch cases skip, saying why, where torch is missing)"
python3 -m venv --clear .tools/pytest-env
.tools/pytest-env/bin/pip install --quiet --disable-pip-version-check ./python pytest numpy
.tools/pytest-env/bin/python -m pytest -q -rs python/tests
