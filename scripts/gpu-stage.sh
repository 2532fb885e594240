#!/usr/bin/env bash
# Builds everything the GPU machine runs (it has no Rust toolchain) into .gpu/: release test
# binaries, benchmark binaries, libvram.so and the C examples, stripped. Then run, there,
#   scripts/gpu-run.sh        (writes results to $OUT)
# .gpu/ and .gpu.tar.xz are ignored by git; pass the archive to the device runner as a carried path.
set -euo pipefail
source "$(dirname "$0")/tools.sh"
cd "$VRAM_ROOT"
export VRAM_CUDA=on
rm -rf .gpu
mkdir -p .gpu/tests .gpu/bench .gpu/lib

executables() { # cargo's JSON messages on stdin -> executable paths of targets of kind $1
  python3 -c 'import json,sys
kind = sys.argv[1]
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and (kind == "any" or kind in m["target"]["kind"]):
        print(m["executable"])' "$1"
}
# The library's tests (the vram command's tests run the binary at its build path: CI runs them).
cargo test --release --no-run -p vram --message-format=json 2>/dev/null | executables any | while read -r exe; do
  cp "$exe" .gpu/tests/
done
cargo bench --no-run --message-format=json 2>/dev/null | executables bench | while read -r exe; do
  base=$(basename "$exe"); cp "$exe" ".gpu/bench/${base%-*}"
done
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
cp -P build/lib/libvram.so* .gpu/lib/
cp build/seal_verify build/model_demo build/ibp_certify build/header_two_tu build/stress build/load_model \
  build/seal_verify_cpp build/hpp_test build/hpp_noexcept build/certify_vnnlib .gpu/
# The vram command (certify: the VNN-COMP scripts and the ACAS Xu benchmark run it).
cargo build --release -p vram-cli >/dev/null 2>&1
cp target/release/vram .gpu/vram
# Kernel design studies (bench/*.cu: each includes the kernels it studies), for Hopper; with
# VRAM_STAGE_STUDIES=1 only (their kernels are unchanged since their recorded runs, and the
# archive must stay under the device runner's 64 MiB).
mkdir -p .gpu/studies
cuda_lib="$(dirname "$(dirname "$NVCC")")/lib"
if [ "${VRAM_STAGE_STUDIES:-0}" = 1 ]; then
  for src in bench/*.cu; do
    "$NVCC" -O3 -std=c++17 -arch=sm_90 -Icuda -ftz=false -prec-div=true -prec-sqrt=true \
      -L"$cuda_lib" "$src" -o ".gpu/studies/$(basename "${src%.cu}")"
  done
fi
# The scrubber's serving-overhead benchmark (bench/serving/): links libvram.
"$NVCC" -O3 -std=c++17 -arch=sm_90 -Iinclude bench/serving/scrub_serving.cu -Lbuild/lib -lvram \
  -L"$cuda_lib" -o .gpu/scrub_serving
# A few ACAS Xu networks for the GPU tests and benchmark (the data stays outside the repository;
# .gpu/ is ignored and only travels to the GPU machine).
acas="${VRAM_ACASXU_DIR:-$VRAM_ROOT/../shared/data/acasxu}"
if [ -d "$acas/nnet" ]; then
  # All of it: the certify benchmark runs the 186 instances (a few MiB compressed).
  mkdir -p .gpu/acasxu
  cp -r "$acas"/nnet "$acas"/onnx "$acas"/vnnlib "$acas"/acasxu_instances.csv .gpu/acasxu/
else
  echo "ACAS Xu data not found at $acas: the GPU run will skip it"
fi
cp build/scrub .gpu/
# auto_LiRPA 0.7.1 and its pure-Python wheels: the unsound float32/float64 CROWN baseline of
# bench/linear_vs_autolirpa.py (third-party; only ever in the ignored staging folder).
baselines="${VRAM_BASELINES_DIR:-$VRAM_ROOT/../shared/baselines}"
if [ -d "$baselines/auto_LiRPA" ]; then
  mkdir -p .gpu/baselines
  cp -r "$baselines/auto_LiRPA" "$baselines/wheels" .gpu/baselines/
fi
strip .gpu/tests/* .gpu/bench/* .gpu/vram .gpu/certify_vnnlib .gpu/scrub .gpu/scrub_serving .gpu/seal_verify .gpu/model_demo .gpu/ibp_certify .gpu/header_two_tu .gpu/stress .gpu/load_model
du -sh .gpu
# The device runner carries at most 64 MiB: ship one compressed archive (unpack there with
#   tar -xJf .gpu.tar.xz).
tar -cf - .gpu | xz -T0 -9 > .gpu.tar.xz  # -9: its window spans the binaries, which share most bytes
du -sh .gpu.tar.xz
ls .gpu/tests .gpu/bench
