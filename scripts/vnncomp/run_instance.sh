#!/usr/bin/env bash
# VNN-COMP tool convention: run_instance.sh v1 BENCHMARK ONNX VNNLIB RESULTS_FILE TIMEOUT
# Writes RESULTS_FILE: "unsat" (the property holds), "sat" and the counterexample, "timeout",
# "unknown", or "error". Counterexamples are confirmed by sound bounds before they are written.
set -uo pipefail
if [ "$#" -ne 6 ] || [ "$1" != "v1" ]; then
    echo "usage: $0 v1 BENCHMARK ONNX VNNLIB RESULTS_FILE TIMEOUT" >&2
    exit 1
fi
onnx="$3"
vnnlib="$4"
result="$5"
timeout="$6"
source "$(dirname "$0")/common.sh"
# Leave a second for start-up and writing the result.
limit="$(awk -v t="$timeout" 'BEGIN { t -= 1; if (t < 0.5) t = 0.5; print t }')"
if ! "$vram" certify "$onnx" "$vnnlib" --timeout "$limit" --output "$result" ${VRAM_CERTIFY_ARGS:-}; then
    echo "error" > "$result"
    exit 1
fi
