#!/usr/bin/env bash
# VNN-COMP tool convention: run_instance.sh v1 BENCHMARK ONNX VNNLIB RESULTS_FILE TIMEOUT
# Writes RESULTS_FILE: "unsat" (the property holds), "sat" and the counterexample, "timeout",
# "unknown", or "error". Counterexamples are confirmed by sound bounds before they are written.
set -uo pipefail
if [ "$#" -ne 6 ] || [ "$1" != "v1" ]; then
    echo "usage: $0 v1 BENCHMARK ONNX VNNLIB RESULTS_FILE TIMEOUT" >&2
    exit 1
fi
here="$(cd "$(dirname "$0")" && pwd)"
vram="${VRAM_BIN:-$here/../../target/release/vram}"
onnx="$3"
vnnlib="$4"
result="$5"
timeout="$6"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
case "$onnx" in *.gz) gunzip -c "$onnx" > "$tmp/net.onnx"; onnx="$tmp/net.onnx" ;; esac
case "$vnnlib" in *.gz) gunzip -c "$vnnlib" > "$tmp/prop.vnnlib"; vnnlib="$tmp/prop.vnnlib" ;; esac
# Leave a second for start-up and writing the result.
limit="$(awk -v t="$timeout" 'BEGIN { t -= 1; if (t < 0.5) t = 0.5; print t }')"
if ! "$vram" certify "$onnx" "$vnnlib" --timeout "$limit" --output "$result" ${VRAM_CERTIFY_ARGS:-}; then
    echo "error" > "$result"
    exit 1
fi
