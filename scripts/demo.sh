#!/usr/bin/env bash
# The README's demo: builds libvram (release) and the model_demo C program, then runs it.
# Extra arguments go to model_demo (e.g. --layers 2).
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$VRAM_ROOT"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target model_demo -j "$(nproc)" >/dev/null
exec build/model_demo "$@"
