#!/usr/bin/env bash
# The README's install command: builds libvram (release, CUDA backend compiled in; cmake and
# nvcc come from .tools/ when missing, as for the other commands) and installs it under PREFIX:
# lib/libvram.so*, include/vram.h and vram.hpp, bin/vram, lib/cmake/vram, lib/pkgconfig/vram.pc.
# usage: scripts/install.sh PREFIX
set -euo pipefail
prefix=${1:?usage: scripts/install.sh PREFIX}
source "$(dirname "$0")/tools.sh"
cd "$VRAM_ROOT"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
cmake --install build --prefix "$prefix" >/dev/null
say "installed libvram $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1) under $prefix"
