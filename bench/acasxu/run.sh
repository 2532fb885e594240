#!/usr/bin/env bash
# All 186 ACAS Xu instances of VNN-COMP 2021 through the VNN-COMP tool scripts
# (scripts/vnncomp/run_instance.sh), with a per-instance limit (the competition's 116 s by
# default). Writes OUT/results.csv (network, property, verdict, seconds, witness check, sub-boxes
# bounded, % of the region proven, seconds spent bounding and searching for counterexamples) and
# OUT/summary.txt; every `sat` is re-checked by check_witness.py (float64 from the NNet twin,
# and onnxruntime where installed).
#
# usage: bench/acasxu/run.sh OUT_DIR [TIMEOUT_S] [FIRST_N]
#   VRAM_BENCH_JOBS=N runs N instances at once (each then gets its share of the cores through
#   VRAM_CERTIFY_ARGS="--threads T"); VRAM_BIN names the vram binary; VRAM_ACASXU_ONLY="2_8/prop_1
#   1_1/prop_2 ..." runs only those instances (a re-run of some; the summary counts those).
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:?usage: run.sh OUT_DIR [TIMEOUT_S] [FIRST_N]}"
timeout="${2:-116}"
first="${3:-186}"
jobs="${VRAM_BENCH_JOBS:-1}"
data="${VRAM_ACASXU_DIR:-$root/../shared/data/acasxu}"
if [ ! -f "$data/acasxu_instances.csv" ]; then
    echo "SKIPPED acasxu benchmark: $data not found (set VRAM_ACASXU_DIR)"
    exit 0
fi
mkdir -p "$out/results"
export root out timeout data

one() { # one instance: "INDEX,NETWORK,PROPERTY,LIMIT" -> OUT/results/INDEX.row
    IFS=, read -r idx net prop _limit <<< "$1"
    # ACASXU_run2a_<a>_<b>_batch_2000.onnx is ACASXU_experimental_v2a_<a>_<b> here.
    ab="$(echo "$net" | sed -E 's/ACASXU_run2a_([0-9]+_[0-9]+)_batch_2000.onnx/\1/')"
    name="ACASXU_experimental_v2a_$ab"
    if [ -n "${VRAM_ACASXU_ONLY:-}" ] && ! [[ " $VRAM_ACASXU_ONLY " == *" $ab/${prop%.vnnlib} "* ]]; then
        return 0
    fi
    res="$out/results/${ab}_${prop%.vnnlib}.txt"
    t0=$(date +%s.%N)
    "$root/scripts/vnncomp/run_instance.sh" v1 acasxu "$data/onnx/$name.onnx" "$data/vnnlib/$prop" "$res" "$timeout" > "$res.log" 2>&1
    t1=$(date +%s.%N)
    verdict="$(head -n 1 "$res" 2>/dev/null || echo error)"
    witness="-"
    if [ "$verdict" = "sat" ]; then
        if python3 "$root/bench/acasxu/check_witness.py" "$data/nnet/$name.nnet" "$data/onnx/$name.onnx" "$data/vnnlib/$prop" "$res" >> "$res.log" 2>&1; then
            witness="confirmed"
        else
            witness="REFUTED"
        fi
    fi
    secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
    # "N boxes, P% of the region proven, T s (B s bounding, S s searching)" from `vram certify`.
    work="$(grep -E '^[0-9]+ boxes, ' "$res.log" | tail -n 1 |
        sed -E 's/^([0-9]+) boxes, ([0-9.]+)% .*\(([0-9.]+) s bounding, ([0-9.]+) s searching\)$/\1,\2,\3,\4/')"
    [[ "$work" =~ ^[0-9]+,[0-9.]+,[0-9.]+,[0-9.]+$ ]] || work="-,-,-,-"
    echo "$ab,${prop%.vnnlib},$verdict,$secs,$witness,$work" | tee "$out/results/$idx.row"
}
export -f one

start=$(date +%s.%N)
head -n "$first" "$data/acasxu_instances.csv" | awk '{ printf "%03d,%s\n", NR, $0 }' |
    xargs -d '\n' -P "$jobs" -I{} bash -c 'one "$1"' _ {}
end=$(date +%s.%N)
echo "network,property,verdict,seconds,witness,boxes,proven_percent,bounding_seconds,searching_seconds" > "$out/results.csv"
cat "$out"/results/*.row >> "$out/results.csv"
{
    echo "ACAS Xu, $(($(wc -l < "$out/results.csv") - 1)) instances, limit ${timeout} s each, $jobs at a time, $(date -u +%F) on $(hostname), $(nproc) CPUs"
    awk -F, 'NR > 1 { n[$3]++; t += $4; if ($3 == "sat" || $3 == "unsat") { d++; td += $4 } if ($5 == "REFUTED") bad++
              if ($6 != "-") { bx += $6; tb += $8; ts += $9 } }
        END { for (v in n) printf "%s: %d\n", v, n[v];
              printf "decided: %d, total %.1f s (decided ones %.1f s), refuted witnesses: %d\n", d, t, td, bad + 0;
              if (t > 0) printf "sub-boxes bounded: %d, %.0f per second overall, %.0f per second of bounding (%.1f s; searching %.1f s)\n", bx, bx / t, (tb > 0 ? bx / tb : 0), tb, ts }' "$out/results.csv"
    awk -v a="$start" -v b="$end" 'BEGIN { printf "wall: %.1f s\n", b - a }'
} | tee "$out/summary.txt"
