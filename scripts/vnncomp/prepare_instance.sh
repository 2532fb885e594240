#!/usr/bin/env bash
# VNN-COMP tool convention: prepare_instance.sh v1 BENCHMARK ONNX VNNLIB
# Checks that libvram can read the network and the property (nothing is cached between
# instances: each run loads, seals and verifies the network itself). Exit 0 when both load.
set -euo pipefail
if [ "$#" -ne 4 ] || [ "$1" != "v1" ]; then
    echo "usage: $0 v1 BENCHMARK ONNX VNNLIB" >&2
    exit 1
fi
onnx="$3"
vnnlib="$4"
source "$(dirname "$0")/common.sh"
if [ ! -x "$vram" ]; then
    echo "prepare_instance.sh: $vram not built (run: cargo build --release)" >&2
    exit 1
fi
# A zero-second run: loads both files and stops at once (prints unknown).
"$vram" certify "$onnx" "$vnnlib" --timeout 0.000001 > /dev/null
